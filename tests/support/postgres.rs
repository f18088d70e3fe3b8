//! A real PostgreSQL 15 (Debian's `postgresql-15`) with its data in a temp dir: `initdb`, then the
//! server listening on a unix socket in that dir and on a loopback port. Local (socket)
//! connections are trusted; TCP ones need the password (SCRAM), so a URL with a password is
//! really used. Stopped when dropped, or by `stop` / `kill` to reproduce an outage.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_tcp_port, require_program};

/// The superuser's name and password in every test cluster.
pub const USER: &str = "probe";
pub const PASSWORD: &str = "s3cret-pg-password";

pub struct Postgres {
    child: Option<Child>,
    bin: PathBuf,
    data: PathBuf,
    /// The folder holding the unix socket (`.s.PGSQL.PORT`).
    pub socket_dir: PathBuf,
    pub port: u16,
    log: PathBuf,
    /// The uid and gid the server runs as (root may not run it).
    owner: Option<(u32, u32)>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `postgres`'s uid and gid when we are root (PostgreSQL refuses to run as root).
fn server_owner() -> Option<(u32, u32)> {
    let euid = effective_uid();
    if euid != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "no postgres user: install postgresql-15 (./scripts/install-test-deps.sh)"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    Some((id("-u"), id("-g")))
}

/// The effective uid, read from `id -u` (no libc call in the tests).
fn effective_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl Postgres {
    /// Initialises a cluster in `dir` and starts it, with database `probe` owned by `probe`.
    pub fn start(dir: &Path) -> Postgres {
        let initdb = require_program("initdb", "/usr/lib/postgresql/15/bin/initdb");
        let bin = initdb.parent().unwrap().to_path_buf();
        let owner = server_owner();
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        let data = dir.join("pg-data");
        // initdb runs as the server's owner, who cannot write into our folder: make the data
        // folder for it.
        fs::create_dir_all(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        }
        let socket_dir = dir.join("pg-run");
        fs::create_dir_all(&socket_dir).unwrap();
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let password_file = dir.join("pg-password");
        fs::write(&password_file, PASSWORD).unwrap();
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o644)).unwrap();
        let mut init = Command::new(&initdb);
        init.arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = owner {
            init.uid(uid).gid(gid);
        }
        let output = init.output().expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut db = Postgres {
            child: None,
            bin,
            data,
            socket_dir,
            port: free_tcp_port(),
            log: dir.join("postgres.log"),
            owner,
        };
        db.resume();
        db.sql("postgres", "CREATE DATABASE probe OWNER probe");
        db
    }

    /// Starts the server again on the same data, socket and port (after `stop` or `kill`).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(&self.log, Some(uid), Some(gid));
        }
        let mut server = Command::new(self.bin.join("postgres"));
        server
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            // A test cluster: no fsync (a killed *server* is what the tests reproduce, not a
            // power cut), few connections and little memory.
            .args([
                "-F",
                "-c",
                "max_connections=60",
                "-c",
                "shared_buffers=16MB",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((uid, gid)) = self.owner {
            server.uid(uid).gid(gid);
        }
        self.child = Some(server.spawn().expect("postgres starts"));
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if socket.exists() && self.psql("postgres", "SELECT 1").is_ok() {
                break;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "postgres exited ({status}): {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < until,
                "postgres did not start: {}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL over the unix socket (trusted: no password).
    pub fn socket_url(&self) -> String {
        format!(
            "postgresql://{USER}@/probe?host={}&port={}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// A URL over TCP on 127.0.0.1, with the password.
    pub fn tcp_url(&self) -> String {
        format!(
            "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/probe",
            self.port
        )
    }

    fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            require_program("psql", "/usr/bin/psql")
        };
        let output = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).to_string())
        }
    }

    /// Runs SQL in `database` as the superuser over the socket; returns what it printed.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.psql(database, sql)
            .unwrap_or_else(|e| panic!("SQL failed: {sql}: {e}"))
    }

    /// A number from a query in database `probe`.
    pub fn count(&self, sql: &str) -> i64 {
        self.sql("probe", sql).parse().unwrap()
    }

    /// Stops the server (SIGINT: a fast shutdown), at most 20 s, then kills it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::stop_with_signal(child, "-INT", Duration::from_secs(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}
