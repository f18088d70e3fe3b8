//! A webhook receiver for the tests: Python's own HTTP server (tests/support/webhook_receiver.py)
//! on a loopback port, saving every POST it accepts. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Child;

use serde_json::Value;

pub struct Receiver {
    child: Child,
    pub port: u16,
    pub inbox: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    pub fn start(dir: &Path) -> Receiver {
        let inbox = dir.join("hooks");
        std::fs::create_dir_all(&inbox).unwrap();
        let port = super::free_tcp_port();
        let child = super::start_python_server(
            "webhook_receiver.py",
            &[inbox.as_os_str(), port.to_string().as_ref()],
        );
        Receiver { child, port, inbox }
    }

    pub fn answer(&self, status: Option<u16>) {
        let flag = self.inbox.join("answer");
        match status {
            Some(s) => std::fs::write(flag, s.to_string()).unwrap(),
            None => std::fs::remove_file(flag).unwrap(),
        }
    }

    pub fn received(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}
