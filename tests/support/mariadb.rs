//! A real MariaDB (Debian's package) with its data in a temp dir, reachable only over a unix
//! socket. Stopped when dropped, or by `stop` to reproduce "the database went away".

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_program;

pub struct MariaDb {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

impl MariaDb {
    /// Initialises a data directory in `dir`, starts the server, and creates database
    /// `wordpress` with user `wp` / password `wp`.
    pub fn start(dir: &Path) -> MariaDb {
        let server = require_program("mariadbd", "/usr/sbin/mariadbd");
        let install = require_program("mariadb-install-db", "/usr/bin/mariadb-install-db");
        // The server runs as `mysql`: it must reach its folders (FACTS.md: it exits silently
        // when its socket, pid or log folder is not its own).
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        let data = dir.join("mysql-data");
        let run = dir.join("mysql-run");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&run).unwrap();
        let owned = Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(&data)
            .arg(&run)
            .status()
            .unwrap();
        assert!(owned.success(), "chown mysql failed");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        let log = run.join("mysqld.err");
        let installed = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--user=mysql")
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(installed.success(), "mariadb-install-db failed");
        let socket = run.join("mysqld.sock");
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", run.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg("--skip-networking")
            .arg("--user=mysql")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        let db = MariaDb {
            child: Some(child),
            socket,
            log,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&db.socket).is_err() {
            assert!(
                Instant::now() < until,
                "mariadbd did not start: {}",
                fs::read_to_string(&db.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        db.sql(
            "CREATE DATABASE wordpress; CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp'; \
             GRANT ALL ON wordpress.* TO 'wp'@'localhost';",
        );
        db
    }

    /// Runs SQL as root over the socket.
    pub fn sql(&self, statements: &str) {
        let client = require_program("mariadb", "/usr/bin/mariadb");
        let output = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-e", statements])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "SQL failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the server (SIGTERM, a clean shutdown), at most 20 s, then kills it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::stop_gracefully(child, Duration::from_secs(20));
        }
    }
}
