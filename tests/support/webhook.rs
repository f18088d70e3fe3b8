//! A webhook receiver for the tests: Python's own HTTP server (tests/support/webhook_receiver.py)
//! on a loopback port, saving every POST it accepts. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
        let python = super::require_program("python3", "/usr/bin/python3");
        let inbox = dir.join("hooks");
        std::fs::create_dir_all(&inbox).unwrap();
        let port = super::free_tcp_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/webhook_receiver.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .arg(&inbox)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
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
