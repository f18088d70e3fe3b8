//! The origin lab: real nginx in front of real PHP-FPM 8.2 (Debian's packages), over TLS with
//! certificates made by the test, serving PHP pages and a static file the way a WordPress server
//! does. Each piece can be broken the way it breaks in the field (FACTS.md).

use std::path::Path;
use std::time::Duration;

use super::nginx::Nginx;
use super::php_fpm::{PhpFpm, PoolSettings, FPM_STATUS_PATH};
use super::pki::{Leaf, Pki};

/// A file nginx serves without PHP.
pub const STATIC_PATH: &str = "/wp-includes/css/dashicons.min.css";

/// PHP scripts of the lab: a page, one that works for `ms` milliseconds, one whose worker dies
/// (SIGKILL, as the OOM killer does) after `ms` milliseconds, and a page that fails with the
/// status written in `marks/fail` while that file exists (`OriginLab::fail_with`).
const SCRIPTS: &[(&str, &str)] = &[
    (
        "/index.php",
        "<?php echo \"<html><body>hello from PHP-FPM</body></html>\";\n",
    ),
    (
        "/sleep.php",
        "<?php if (isset($_GET['mark'])) { touch(__DIR__ . '/../marks/' . basename($_GET['mark'])); }\n\
         usleep(intval($_GET['ms'] ?? 0) * 1000); echo \"slept\";\n",
    ),
    (
        "/die.php",
        "<?php usleep(intval($_GET['ms'] ?? 0) * 1000); posix_kill(getmypid(), 9);\n",
    ),
    (
        "/switch.php",
        "<?php $f = __DIR__ . '/../marks/fail';\n\
         if (is_file($f)) { http_response_code(intval(file_get_contents($f))); echo 'failing on purpose'; exit; }\n\
         echo \"<html><body>hello from PHP-FPM</body></html>\";\n",
    ),
    (
        "/flaky.php",
        "<?php $f = __DIR__ . '/../marks/die';\n\
         if (is_file($f) && @unlink($f)) { usleep(intval(file_get_contents(__DIR__ . '/../marks/die-ms')) * 1000); posix_kill(getmypid(), 9); }\n\
         echo \"<html><body>hello from PHP-FPM</body></html>\";\n",
    ),
    (STATIC_PATH, ".dashicons{display:inline-block}\n"),
];

/// How to build (or break) the origin.
#[derive(Clone, Debug)]
pub struct OriginSettings {
    pub pool: PoolSettings,
    /// Socket nginx passes PHP requests to; `None` means PHP-FPM's real socket. A stale path
    /// reproduces "fastcgi_pass still names the old PHP version's socket".
    pub fastcgi_pass: Option<String>,
    pub fastcgi_read_timeout: Duration,
    /// nginx's `stub_status` at `NGINX_STATUS_PATH`.
    pub nginx_status: bool,
    /// Who may read the status pages (nginx access rules), e.g. `allow 127.0.0.1; deny all;`.
    pub status_access: &'static str,
    /// The status pages answer 403 unless the request carries `X-Status-Token: TOKEN`.
    pub status_token: Option<&'static str>,
}

/// nginx's stub_status path in the lab.
pub const NGINX_STATUS_PATH: &str = "/nginx_status";

impl Default for OriginSettings {
    fn default() -> Self {
        Self {
            pool: PoolSettings::default(),
            fastcgi_pass: None,
            fastcgi_read_timeout: Duration::from_secs(60),
            nginx_status: false,
            status_access: "allow 127.0.0.1; deny all;",
            status_token: None,
        }
    }
}

/// A running origin: nginx → PHP-FPM.
pub struct OriginLab {
    pub nginx: Nginx,
    pub fpm: PhpFpm,
    marks: std::path::PathBuf,
}

/// A request holding a PHP-FPM worker busy; ended when dropped.
pub struct BusyWorker(std::process::Child);

impl Drop for BusyWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl OriginLab {
    /// Starts PHP-FPM, then nginx, in `dir`, with `leaf` as nginx's certificate, serving the
    /// lab's scripts.
    pub fn start(dir: &Path, leaf: &Leaf, settings: &OriginSettings) -> OriginLab {
        Self::start_serving(dir, leaf, settings, SCRIPTS)
    }

    /// Like `start`, serving `files` (path, content) instead of the lab's scripts.
    pub fn start_serving(
        dir: &Path,
        leaf: &Leaf,
        settings: &OriginSettings,
        files: &[(&str, &str)],
    ) -> OriginLab {
        let fpm = PhpFpm::start(dir, &settings.pool);
        let pass = settings
            .fastcgi_pass
            .as_ref()
            .map_or_else(|| fpm.pass.clone(), |p| format!("unix:{p}"));
        // The status pages as the README shows them: exact locations, the prober allowed.
        let access = settings.status_access;
        let token = settings
            .status_token
            .map(|t| format!(r#"if ($http_x_status_token != "{t}") {{ return 403; }}"#))
            .unwrap_or_default();
        let mut status = String::new();
        if settings.pool.status_path {
            status.push_str(&format!(
                r#"location = {FPM_STATUS_PATH} {{
            {access} {token}
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass {status_pass};
            fastcgi_read_timeout {read}s;
        }}
        "#,
                status_pass = fpm.status_pass,
                read = settings.fastcgi_read_timeout.as_secs().max(1),
            ));
        }
        if settings.nginx_status {
            status.push_str(&format!(
                "location = {NGINX_STATUS_PATH} {{ {access} {token} stub_status; }}\n        "
            ));
        }
        let locations = format!(
            r#"{status}index index.php;
        location / {{ try_files $uri $uri/ /index.php?$args; }}
        location ~ \.php$ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_param HTTP_HOST $http_host;
            fastcgi_pass {pass};
            fastcgi_read_timeout {read}s;
        }}"#,
            read = settings.fastcgi_read_timeout.as_secs().max(1),
        );
        let nginx = Nginx::start_with(dir, leaf, files, "", &locations);
        // Where scripts leave marks the tests wait for (PHP runs as www-data).
        let marks = dir.join("marks");
        std::fs::create_dir_all(&marks).unwrap();
        std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        OriginLab { nginx, fpm, marks }
    }

    /// Sends a request that keeps one PHP-FPM worker busy for `ms`, and returns once PHP is
    /// running it (its script left a mark), so a test's next request finds the worker taken.
    pub fn hold_a_worker(&self, ms: u64) -> BusyWorker {
        let mark = self.marks.join("held");
        let _ = std::fs::remove_file(&mark);
        let child = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "--max-time", "30", "--connect-to"])
            .arg(format!("::{}", self.address()))
            .arg(format!("https://probe.test/sleep.php?ms={ms}&mark=held"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("curl runs");
        let busy = BusyWorker(child);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !mark.exists() {
            assert!(
                std::time::Instant::now() < until,
                "the holding request never reached PHP"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        busy
    }

    /// Sends a request for `/sleep.php` (working `ms`) without waiting for PHP to take it: with
    /// every worker busy it waits in PHP-FPM's listen queue. Ended when dropped.
    pub fn queue_a_request(&self, ms: u64) -> BusyWorker {
        let child = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "--max-time", "30", "--connect-to"])
            .arg(format!("::{}", self.address()))
            .arg(format!("https://probe.test/sleep.php?ms={ms}&queued=1"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("curl runs");
        BusyWorker(child)
    }

    /// Makes the next request to `/flaky.php` kill its own PHP-FPM worker after `ms` of work
    /// (SIGKILL, as the OOM killer does); the requests after it are answered.
    pub fn kill_next_worker_after(&self, ms: u64) {
        std::fs::write(self.marks.join("die-ms"), ms.to_string()).unwrap();
        std::fs::write(self.marks.join("die"), "1").unwrap();
    }

    /// Whether the planned worker death has happened (the mark is gone).
    pub fn worker_kill_pending(&self) -> bool {
        self.marks.join("die").exists()
    }

    /// Makes `/switch.php` answer `status` from PHP (`None`: answer normally again).
    pub fn fail_with(&self, status: Option<u16>) {
        let flag = self.marks.join("fail");
        match status {
            Some(status) => std::fs::write(flag, status.to_string()).unwrap(),
            None => {
                let _ = std::fs::remove_file(flag);
            }
        }
    }

    /// `127.0.0.1:PORT` of nginx.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.nginx.port)
    }
}

/// Everything one lab test needs: a temp dir, a CA, and the origin.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub origin: OriginLab,
}

impl Lab {
    pub fn start(settings: &OriginSettings) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let origin = OriginLab::start(dir.path(), &pki.good(), settings);
        Lab { dir, pki, origin }
    }

    /// Arguments probing `path` on the lab with the origin as both the edge (no CDN in front)
    /// and the origin route, the static file beside it.
    pub fn probe_args(&self, path: &str) -> Vec<String> {
        let address = self.origin.address();
        vec![
            format!("https://probe.test{path}"),
            "--edge".into(),
            address.clone(),
            "--origin".into(),
            address,
            "--static-path".into(),
            STATIC_PATH.into(),
            "--ca-file".into(),
            self.pki.ca_path.display().to_string(),
        ]
    }
}

/// The lab behind a Cloudflare-faithful edge: visitor → edge → nginx → PHP-FPM.
pub struct EdgeLab {
    pub lab: Lab,
    pub edge: super::servers::TestServer,
}

impl EdgeLab {
    /// Starts the origin lab with the certificate `origin_leaf` makes from the lab's CA (a good
    /// one when `None`), then an edge in `mode` that reaches the origin at `edge_origin` (the
    /// lab's nginx when `None`).
    pub async fn start(
        settings: &OriginSettings,
        origin_leaf: Option<fn(&Pki) -> Leaf>,
        mode: super::edge::SslMode,
        edge_origin: Option<std::net::SocketAddr>,
    ) -> EdgeLab {
        Self::start_custom(settings, origin_leaf, |edge| {
            edge.mode = mode;
            if let Some(address) = edge_origin {
                edge.origin = super::edge::OriginTarget::Address(address);
            }
        })
        .await
    }

    /// Starts the lab and an edge whose settings (strict mode, reaching the lab's nginx) `edit`
    /// may change first.
    pub async fn start_custom(
        settings: &OriginSettings,
        origin_leaf: Option<fn(&Pki) -> Leaf>,
        edit: impl FnOnce(&mut super::edge::EdgeSettings),
    ) -> EdgeLab {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let leaf = origin_leaf.map_or_else(|| pki.good(), |make| make(&pki));
        let origin = OriginLab::start(dir.path(), &leaf, settings);
        let lab = Lab { dir, pki, origin };
        let mut edge_settings = super::edge::EdgeSettings {
            origin: super::edge::OriginTarget::Address(lab.origin.address().parse().unwrap()),
            mode: super::edge::SslMode::Strict,
            trusted: vec![lab.pki.ca_der()],
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            fails_itself: false,
        };
        edit(&mut edge_settings);
        let edge = super::edge::cloudflare_edge(&lab.pki.good(), edge_settings).await;
        EdgeLab { lab, edge }
    }

    /// Arguments probing `path` through the edge, with the lab's nginx as the origin route.
    pub fn probe_args(&self, path: &str) -> Vec<String> {
        let mut args = self.lab.probe_args(path);
        let at = args.iter().position(|a| a == "--edge").unwrap() + 1;
        args[at] = self.edge.addr.to_string();
        // The stand-in listens on loopback, outside Cloudflare's ranges: declared as the
        // Cloudflare edge, as a user would declare a Tunnel.
        args.push("--cloudflare-edge".into());
        args
    }
}

/// WordPress (Debian's package) in the lab: its PHP entry points and wp-admin copied into the
/// document root so that ABSPATH, wp-config.php and .maintenance are the lab's own; wp-includes
/// linked.
pub struct WordPressLab {
    pub lab: Lab,
    pub db: super::mariadb::MariaDb,
    pub root: std::path::PathBuf,
}

/// Where Debian installs WordPress.
const WORDPRESS: &str = "/usr/share/wordpress";

impl WordPressLab {
    /// Starts MariaDB, PHP-FPM and nginx with WordPress, and runs WordPress's installer.
    pub fn start() -> WordPressLab {
        let dir = tempfile::tempdir().unwrap();
        let db = super::mariadb::MariaDb::start(dir.path());
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        for entry in std::fs::read_dir(WORDPRESS)
            .expect("WordPress is installed (apt-get install wordpress)")
        {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let target = root.join(&name);
            if name == "wp-config.php" || name == ".htaccess" {
                continue;
            }
            if name == "wp-includes" {
                // The big library folder only uses ABSPATH: linking it is enough.
                std::os::unix::fs::symlink(entry.path(), &target).unwrap();
            } else if entry.path().is_dir() {
                // wp-admin finds wp-load.php relative to its own real path: it must be a copy.
                let copied = std::process::Command::new("cp")
                    .arg("-r")
                    .arg(entry.path())
                    .arg(&target)
                    .status()
                    .unwrap();
                assert!(copied.success(), "copying {}", entry.path().display());
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
        std::fs::write(
            root.join("wp-config.php"),
            format!(
                "<?php\ndefine('DB_NAME', 'wordpress');\ndefine('DB_USER', 'wp');\ndefine('DB_PASSWORD', 'wp');\n\
                 define('DB_HOST', 'localhost:{socket}');\ndefine('DB_CHARSET', 'utf8mb4');\ndefine('DB_COLLATE', '');\n\
                 $table_prefix = 'wp_';\ndefine('WP_DEBUG', false);\ndefine('WP_HOME', 'https://probe.test');\n\
                 define('WP_SITEURL', 'https://probe.test');\nif (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\n\
                 require_once ABSPATH . 'wp-settings.php';\n",
                socket = db.socket.display()
            ),
        )
        .unwrap();
        let pki = Pki::new(dir.path());
        let static_file = [(STATIC_PATH, ".dashicons{display:inline-block}\n")];
        let origin = OriginLab::start_serving(
            dir.path(),
            &pki.good(),
            &OriginSettings::default(),
            &static_file,
        );
        let lab = Lab { dir, pki, origin };
        let wordpress = WordPressLab { lab, db, root };
        wordpress.install();
        wordpress
    }

    /// Runs WordPress's web installer (step 2) with curl, as a person would in a browser.
    fn install(&self) {
        let output = std::process::Command::new("curl")
            .args([
                "-sk",
                "-w",
                "\\n%{http_code}",
                "--max-time",
                "60",
                "--connect-to",
            ])
            .arg(format!("::{}", self.lab.origin.address()))
            .args([
                "--data-urlencode",
                "weblog_title=probe lab",
                "--data-urlencode",
                "user_name=admin",
                "--data-urlencode",
                "admin_password=correct horse battery staple",
                "--data-urlencode",
                "admin_password2=correct horse battery staple",
                "--data-urlencode",
                "pw_weak=1",
                "--data-urlencode",
                "admin_email=admin@probe.test",
                "--data-urlencode",
                "blog_public=0",
                "https://probe.test/wp-admin/install.php?step=2",
            ])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let body: String = body.chars().take(600).collect();
        let log = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            code,
            "200",
            "WordPress's installer answered {code}: {body}\nnginx: {}\nphp-fpm: {}",
            log(self.lab.origin.nginx.dir.join("error.log")),
            log(self.lab.origin.fpm.log.clone())
        );
    }

    /// Puts WordPress in maintenance mode, as an update in progress does.
    pub fn start_maintenance(&self) {
        std::fs::write(
            self.root.join(".maintenance"),
            "<?php $upgrading = time(); ?>\n",
        )
        .unwrap();
    }

    pub fn end_maintenance(&self) {
        let _ = std::fs::remove_file(self.root.join(".maintenance"));
    }
}
