//! A real nginx (Debian's package) started with its own config in a temp dir, serving static
//! files over TLS with HTTP/2. Stopped when dropped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::pki::Leaf;
use super::{free_tcp_port, require_program, wait_for_tcp};

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx on 127.0.0.1 with `leaf` as its certificate, serving `files` (path, content)
    /// from a document root in `dir`; `http_extra` is added to the `http` block.
    pub fn start(dir: &Path, leaf: &Leaf, files: &[(&str, &str)], http_extra: &str) -> Nginx {
        Self::start_with(dir, leaf, files, http_extra, "location / { }")
    }

    /// Like `start`, with `locations` as the server block's locations (and any other directives
    /// of the server block).
    pub fn start_with(
        dir: &Path,
        leaf: &Leaf,
        files: &[(&str, &str)],
        http_extra: &str,
        locations: &str,
    ) -> Nginx {
        let nginx = require_program("nginx", "/usr/sbin/nginx");
        let root = dir.join("www");
        for (path, content) in files {
            let file = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, content).unwrap();
        }
        // nginx workers run unprivileged: the lab folders must be world-readable (FACTS.md).
        make_readable(dir);
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_tcp_port();
            let conf = dir.join("nginx.conf");
            fs::write(&conf, config(dir, &root, port, leaf, http_extra, locations)).unwrap();
            let mut child = Command::new(&nginx)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nginx starts");
            if wait_for_tcp(port, &mut child) {
                return Nginx {
                    child,
                    port,
                    dir: dir.to_path_buf(),
                };
            }
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            last_error = String::from_utf8_lossy(&output.stderr).into_owned()
                + &fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start: {last_error}");
    }
}

fn config(
    dir: &Path,
    root: &Path,
    port: u16,
    leaf: &Leaf,
    http_extra: &str,
    locations: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    types {{ text/css css; text/html html; }}
    {http_extra}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name {site};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root};
        {locations}
    }}
}}
"#,
        site = super::pki::SITE,
        cert = leaf.cert_path.display(),
        key = leaf.key_path.display(),
        root = root.display(),
    )
}

pub fn make_readable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            // Never through a link: the WordPress lab links system folders into its root.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                make_readable(&entry.path());
            } else if kind.is_file() {
                let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o644));
            }
        }
    }
}
