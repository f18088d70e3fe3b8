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
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_children: 4,
            request_terminate_timeout: None,
            listen_backlog: None,
        }
    }
}

pub struct PhpFpm {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PhpFpm {
    /// Starts PHP-FPM with its socket and logs in `dir`.
    pub fn start(dir: &Path, settings: &PoolSettings) -> PhpFpm {
        let binary = require_program("php-fpm8.2", "/usr/sbin/php-fpm8.2");
        let socket = dir.join("php-fpm.sock");
        let log = dir.join("php-fpm.log");
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
                 [www]\nuser = www-data\ngroup = www-data\nlisten = {socket}\nlisten.mode = 0666\n\
                 pm = static\npm.max_children = {children}\ncatch_workers_output = yes\n{terminate}{backlog}",
                pid = dir.join("php-fpm.pid").display(),
                log = log.display(),
                socket = socket.display(),
                children = settings.max_children,
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php-fpm starts");
        let fpm = PhpFpm {
            child: Some(child),
            socket,
            log,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&fpm.socket).is_err() {
            assert!(
                Instant::now() < until,
                "php-fpm did not start: {}",
                fs::read_to_string(&fpm.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        fpm
    }

    /// Stops PHP-FPM as `systemctl stop` would (SIGTERM: the master ends its workers, then
    /// itself), waiting at most 5 s before killing it outright.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::stop_gracefully(child, Duration::from_secs(5));
        }
    }
}
