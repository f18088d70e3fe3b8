//! `probe watch` as a process, its JSON log lines arriving on a channel a test waits on.
//! Killed and reaped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `probe watch`.
pub struct WatchProcess {
    pub child: Child,
    logs: Receiver<Value>,
    /// Every line read so far (shown when a wait fails).
    pub seen: Vec<Value>,
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WatchProcess {
    /// `probe watch -c CONFIG --log-format json` with `args` after it and `env` set.
    pub fn start(config: &Path, args: &[String], env: &[(&str, &str)]) -> WatchProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_probe"));
        command
            .args([
                "watch",
                "-c",
                config.to_str().unwrap(),
                "--log-format",
                "json",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, logs) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        WatchProcess {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `within`) for a log line matching `wanted`, and returns it.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no log line {what} within {within:?}; seen: {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Sends the process a signal (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A field of a JSON log line, as text (empty when absent).
pub fn field<'a>(line: &'a Value, name: &str) -> &'a str {
    line["fields"][name].as_str().unwrap_or_default()
}
