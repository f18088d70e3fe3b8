//! A real SMTP server (aiosmtpd, Debian's python3-aiosmtpd) on a loopback port, with STARTTLS and
//! AUTH required; every message it accepts lands as a file the test can read. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::free_tcp_port;
use super::pki::Pki;

pub const USER: &str = "probe";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub inbox: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the test server misbehaves, besides requiring STARTTLS and AUTH.
#[derive(Debug, Default, Clone)]
pub struct SmtpOptions {
    /// No TLS at all; AUTH accepted in the clear.
    pub plain: bool,
    /// Recipients answered 550 at RCPT TO.
    pub reject: Vec<String>,
    /// Every message answered 554 at the end of DATA.
    pub reject_data: bool,
    /// Our sender answered 553 at MAIL FROM.
    pub reject_sender: bool,
    /// Seconds waited before every reply.
    pub tarpit_secs: Option<f64>,
    /// The address to listen on (and name in the certificate) instead of 127.0.0.1.
    pub host: Option<String>,
    /// On DATA, SQLite's write lock on this store is taken and held this long after the 250.
    pub lock_store: Option<(PathBuf, f64)>,
}

impl SmtpServer {
    /// Starts the server on `port` (a free one when `None`) with a certificate for 127.0.0.1 from
    /// `pki`, saving messages under `dir/inbox`.
    pub fn start(dir: &Path, pki: &Pki, port: Option<u16>) -> SmtpServer {
        Self::start_with(dir, pki, port, &SmtpOptions::default())
    }

    /// `start`, misbehaving as `options` say.
    pub fn start_with(
        dir: &Path,
        pki: &Pki,
        port: Option<u16>,
        options: &SmtpOptions,
    ) -> SmtpServer {
        let python =
            super::require_program("python3 (Debian's, with aiosmtpd)", "/usr/bin/python3");
        let inbox = dir.join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let host = options.host.as_deref().unwrap_or("127.0.0.1");
        let leaf = pki.leaf(&[host], -1, 90, false);
        let port = port.unwrap_or_else(free_tcp_port);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(&inbox)
            .arg(port.to_string())
            .arg(&leaf.cert_path)
            .arg(&leaf.key_path)
            .args([USER, PASSWORD]);
        if options.plain {
            command.arg("--plain");
        }
        for address in &options.reject {
            command.args(["--reject", address]);
        }
        if options.reject_data {
            command.arg("--reject-data");
        }
        if options.reject_sender {
            command.arg("--reject-sender");
        }
        if options.host.is_some() {
            command.args(["--host", host]);
        }
        if let Some(secs) = options.tarpit_secs {
            command.args(["--tarpit", &secs.to_string()]);
        }
        if let Some((path, secs)) = &options.lock_store {
            command.arg("--lock-store").arg(path).arg(secs.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpServer { child, port, inbox }
    }

    /// Every AUTH attempt the server saw: ("encrypted" or "plain", login, password).
    pub fn auth_attempts(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.inbox.join("auth.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// The messages received so far for `recipient`.
    pub fn messages_for(&self, recipient: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.lines().any(|l| l == format!("To: {recipient}")))
            .collect()
    }

    /// The Subject of every message received so far, with folded header lines joined again.
    pub fn subjects(&self) -> Vec<String> {
        self.messages().iter().map(|m| subject(m)).collect()
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

/// The Subject of a message, with folded header lines joined again.
pub fn subject(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("Subject: "))
        .unwrap_or(0);
    let mut subject = lines[at].trim_start_matches("Subject: ").to_string();
    for more in lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with([' ', '\t']))
    {
        subject.push_str(more.trim_start_matches(['\t']));
    }
    subject
}

/// A message with its quoted-printable encoding undone (soft line breaks joined, `=XX` bytes
/// decoded), to look for text in it as written.
pub fn decoded(message: &str) -> String {
    let joined = message.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
