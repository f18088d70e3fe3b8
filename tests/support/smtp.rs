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

impl SmtpServer {
    /// Starts the server on `port` (a free one when `None`) with a certificate for 127.0.0.1 from
    /// `pki`, saving messages under `dir/inbox`.
    pub fn start(dir: &Path, pki: &Pki, port: Option<u16>) -> SmtpServer {
        let python =
            super::require_program("python3 (Debian's, with aiosmtpd)", "/usr/bin/python3");
        let inbox = dir.join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let leaf = pki.leaf(&["127.0.0.1"], -1, 90, false);
        let port = port.unwrap_or_else(free_tcp_port);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&inbox)
            .arg(port.to_string())
            .arg(&leaf.cert_path)
            .arg(&leaf.key_path)
            .args([USER, PASSWORD])
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
