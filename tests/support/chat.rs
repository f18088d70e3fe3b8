//! The chat and paging stand-ins (tests/support/chat_providers.py): Python's HTTP server over
//! TLS on a loopback port, answering as Slack, Teams, Discord, Telegram, ntfy, PagerDuty and
//! Opsgenie document. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Child;

use serde_json::Value;

use super::pki::Pki;

/// The secrets the stand-ins expect.
pub const TELEGRAM_TOKEN: &str = "123456:telegram-test-token";
pub const ROUTING_KEY: &str = "R0123456789abcdef0123456789abcde";
pub const OPSGENIE_KEY: &str = "og-test-key-4f2e";
pub const NTFY_TOKEN: &str = "tk_ntfytesttoken";

pub struct Providers {
    child: Child,
    pub port: u16,
    pub inbox: PathBuf,
}

impl Drop for Providers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Providers {
    /// Starts the stand-ins with a certificate for `localhost` from `pki`.
    pub fn start(dir: &Path, pki: &Pki) -> Providers {
        let inbox = dir.join("providers");
        std::fs::create_dir_all(&inbox).unwrap();
        let leaf = pki.leaf(&["localhost"], -1, 90, false);
        let port = super::free_tcp_port().to_string();
        let child = super::start_python_server(
            "chat_providers.py",
            &[
                inbox.as_os_str(),
                port.as_ref(),
                leaf.cert_path.as_os_str(),
                leaf.key_path.as_os_str(),
                TELEGRAM_TOKEN.as_ref(),
                ROUTING_KEY.as_ref(),
                OPSGENIE_KEY.as_ref(),
                NTFY_TOKEN.as_ref(),
            ],
        );
        let port = port.parse().unwrap();
        Providers { child, port, inbox }
    }

    /// `https://localhost:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// The next `count` requests get the provider's 429, asking to wait `seconds`.
    pub fn throttle(&self, count: u32, seconds: u64) {
        std::fs::write(self.inbox.join("throttle"), format!("{count} {seconds}")).unwrap();
    }

    /// The next request to `provider` gets its validation error (a request it can never take).
    pub fn refuse_next(&self, provider: &str) {
        std::fs::write(self.inbox.join("invalid"), provider).unwrap();
    }

    /// Every request accepted, in order: `{provider, path, headers, body}`.
    pub fn received(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// The accepted requests of one provider.
    pub fn of(&self, provider: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r["provider"] == provider)
            .collect()
    }

    /// A paging stand-in's incidents (`pagerduty.json`, `opsgenie.json`).
    pub fn incidents(&self, file: &str) -> Value {
        std::fs::read_to_string(self.inbox.join(file))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null)
    }
}
