//! A real PHP-FPM 8.2 (Debian's package) with its own pool config in a temp dir, listening on a
//! unix socket. Workers run as www-data, as on a real server. Stopped when dropped (or by `stop`,
//! to reproduce "PHP-FPM stopped").

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_program;

/// How the pool is set up.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// `pm.max_children` (static pool).
    pub max_children: u32,
    /// `request_terminate_timeout`, if any.
    pub request_terminate_timeout: Option<Duration>,
    /// `listen.backlog`, if not PHP-FPM's default.
    pub listen_backlog: Option<u32>,
    /// `pm`: `static` (the default here), `dynamic` or `ondemand`.
    pub pm: &'static str,
    /// Listen on a loopback TCP port instead of a unix socket (PHP-FPM measures its listen
    /// queue only on TCP, on Linux).
    pub listen_tcp: bool,
    /// `pm.status_path = /fpm-status`.
    pub status_path: bool,
    /// `pm.status_listen`: the status page served by a hidden pool of its own, so it answers
    /// while every worker is busy.
    pub status_listen: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_children: 4,
            request_terminate_timeout: None,
            listen_backlog: None,
            pm: "static",
            listen_tcp: false,
            status_path: false,
            status_listen: false,
        }
    }
}

/// PHP-FPM's status path in the lab.
pub const FPM_STATUS_PATH: &str = "/fpm-status";

pub struct PhpFpm {
    child: Option<Child>,
    /// The unix socket it listens on (when not on TCP).
    pub socket: PathBuf,
    /// What nginx's fastcgi_pass names: `unix:PATH` or `127.0.0.1:PORT`.
    pub pass: String,
    /// What nginx passes the status page to (the status socket with `status_listen`).
    pub status_pass: String,
    pub log: PathBuf,
    conf: PathBuf,
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PhpFpm {
    /// Starts PHP-FPM with its socket and logs in `dir`.
    pub fn start(dir: &Path, settings: &PoolSettings) -> PhpFpm {
        let socket = dir.join("php-fpm.sock");
        let status_socket = dir.join("php-fpm-status.sock");
        let log = dir.join("php-fpm.log");
        let (listen, pass) = if settings.listen_tcp {
            let port = super::free_tcp_port();
            (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}"))
        } else {
            (
                socket.display().to_string(),
                format!("unix:{}", socket.display()),
            )
        };
        let mut status = String::new();
        let mut status_pass = pass.clone();
        if settings.status_path {
            status.push_str(&format!("pm.status_path = {FPM_STATUS_PATH}\n"));
        }
        if settings.status_listen {
            status.push_str(&format!("pm.status_listen = {}\n", status_socket.display()));
            status_pass = format!("unix:{}", status_socket.display());
        }
        let pm = match settings.pm {
            "dynamic" => format!(
                "pm = dynamic\npm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = {}\n",
                settings.max_children
            ),
            "ondemand" => "pm = ondemand\n".to_string(),
            _ => "pm = static\n".to_string(),
        };
        let terminate = settings
            .request_terminate_timeout
            .map(|t| format!("request_terminate_timeout = {}s\n", t.as_secs().max(1)))
            .unwrap_or_default();
        let backlog = settings
            .listen_backlog
            .map(|n| format!("listen.backlog = {n}\n"))
            .unwrap_or_default();
        let conf = dir.join("php-fpm.conf");
        fs::write(
            &conf,
            format!(
                "[global]\npid = {pid}\nerror_log = {log}\ndaemonize = no\n\n\
                 [www]\nuser = www-data\ngroup = www-data\nlisten = {listen}\nlisten.mode = 0666\n\
                 {pm}pm.max_children = {children}\ncatch_workers_output = yes\n{terminate}{backlog}{status}",
                pid = dir.join("php-fpm.pid").display(),
                log = log.display(),
                children = settings.max_children,
            ),
        )
        .unwrap();
        let mut fpm = PhpFpm {
            child: None,
            socket,
            pass,
            status_pass,
            log,
            conf,
        };
        fpm.run();
        fpm
    }

    /// Starts the master with the config written, and waits until it listens.
    fn run(&mut self) {
        let binary = require_program("php-fpm8.2", "/usr/sbin/php-fpm8.2");
        let child = Command::new(binary)
            .arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php-fpm starts");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while !self.listening() {
            assert!(
                Instant::now() < until,
                "php-fpm did not start: {}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listening(&self) -> bool {
        match self.pass.strip_prefix("unix:") {
            Some(path) => UnixStream::connect(path).is_ok(),
            None => std::net::TcpStream::connect(&self.pass).is_ok(),
        }
    }

    /// Stops PHP-FPM and starts it again with the same config (`systemctl restart`).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Stops PHP-FPM as `systemctl stop` would (SIGTERM: the master ends its workers, then
    /// itself), waiting at most 5 s before killing it outright.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::stop_gracefully(child, Duration::from_secs(5));
        }
    }
}
