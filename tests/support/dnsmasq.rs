//! A real DNS server (dnsmasq) on a loopback port, authoritative for `.test`: names it was told
//! about resolve, every other `.test` name is NXDOMAIN. Stopped when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{free_tcp_port, require_program, wait_for_tcp};

pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dnsmasq {
    /// Starts dnsmasq with `records` as (name, address) host records and `txt` as (name, text)
    /// TXT records (a name with only a TXT record has no A or AAAA).
    pub fn start(records: &[(&str, &str)], txt: &[(&str, &str)]) -> Dnsmasq {
        let dnsmasq = require_program("dnsmasq", "/usr/sbin/dnsmasq");
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_tcp_port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let mut command = Command::new(&dnsmasq);
            command
                .arg("--keep-in-foreground")
                .arg("--conf-file=/dev/null")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg("--pid-file")
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg(format!("--port={port}"))
                // Authoritative for .test: unknown names get NXDOMAIN, never a forwarded query.
                .arg("--local=/test/")
                .arg("--log-facility=-");
            for (name, address) in records {
                command.arg(format!("--host-record={name},{address}"));
            }
            for (name, text) in txt {
                command.arg(format!("--txt-record={name},{text}"));
            }
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dnsmasq starts");
            if wait_for_tcp(port, &mut child) {
                return Dnsmasq {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                };
            }
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        panic!("dnsmasq did not start: {last_error}");
    }
}
