#!/usr/bin/env bash
# A WordPress world on this machine's loopback to try probe on, as a new user would: MariaDB,
# PHP-FPM (a static pool of 3 workers with its status page), nginx over TLS (a CA made here)
# serving two sites, blog.test and shop.test, from one WordPress, and an SMTP server that keeps
# every mail as a file. Writes a probes.yaml for them and says how to break things.
#
#   scripts/try-locally.sh start DIR   # start everything in DIR (created; as root: the servers
#                                      # run as www-data and mysql)
#   scripts/try-locally.sh stop DIR    # stop everything started in DIR
#
# Needs Debian's nginx, php8.2-fpm, php8.2-mysql, mariadb-server, wordpress, python3-aiosmtpd,
# openssl and curl (scripts/install-test-deps.sh installs them).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")
nginx_port=${TRY_LOCALLY_NGINX_PORT:-8443}
smtp_port=${TRY_LOCALLY_SMTP_PORT:-8025}

stop() {
  for pidfile in nginx.pid php-fpm.pid mysql-run/mysqld.pid smtp.pid; do
    if [ -f "$dir/$pidfile" ]; then
      kill "$(cat "$dir/$pidfile")" 2>/dev/null || true
    fi
  done
}

if [ "$action" = stop ]; then stop; echo "stopped what ran in $dir"; exit 0; fi
[ "$action" = start ] || usage
[ "$(id -u)" -eq 0 ] || { echo "run as root: PHP-FPM and MariaDB run as www-data and mysql" >&2; exit 1; }
mkdir -p "$dir" && chmod 755 "$dir"
cd "$dir"

# A CA and a certificate for both names (probe is given the CA with ca_file).
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=try-locally CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=blog.test" -keyout site.key -out site.csr 2>/dev/null
printf 'subjectAltName=DNS:blog.test,DNS:shop.test\n' > site.ext
openssl x509 -req -in site.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
  -extfile site.ext -out site.pem 2>/dev/null
chmod 644 site.key

# MariaDB with WordPress's database.
mkdir -p mysql-data mysql-run && chown -R mysql:mysql mysql-data mysql-run
mariadb-install-db --no-defaults --datadir="$dir/mysql-data" --user=mysql --skip-test-db >/dev/null
mariadbd --no-defaults --datadir="$dir/mysql-data" --socket="$dir/mysql-run/mysqld.sock" \
  --pid-file="$dir/mysql-run/mysqld.pid" --log-error="$dir/mysql-run/mysqld.err" \
  --skip-networking --user=mysql >/dev/null 2>&1 &
for _ in $(seq 100); do [ -S mysql-run/mysqld.sock ] && break; sleep 0.2; done
mariadb --no-defaults --socket="$dir/mysql-run/mysqld.sock" -u root -e \
  "CREATE DATABASE wordpress; CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp'; GRANT ALL ON wordpress.* TO 'wp'@'localhost';"

# WordPress, copied (wp-includes linked), configured for the socket.
mkdir -p www
for entry in /usr/share/wordpress/*; do
  name=$(basename "$entry")
  case "$name" in
    wp-config.php) ;;
    wp-includes) ln -sfn "$entry" "www/$name" ;;
    *) cp -r "$entry" "www/$name" ;;
  esac
done
cat > www/wp-config.php <<PHP
<?php
define('DB_NAME', 'wordpress'); define('DB_USER', 'wp'); define('DB_PASSWORD', 'wp');
define('DB_HOST', 'localhost:$dir/mysql-run/mysqld.sock');
define('DB_CHARSET', 'utf8mb4'); define('DB_COLLATE', ''); \$table_prefix = 'wp_';
define('WP_HOME', 'https://' . (\$_SERVER['HTTP_HOST'] ?? 'blog.test'));
define('WP_SITEURL', 'https://' . (\$_SERVER['HTTP_HOST'] ?? 'blog.test'));
if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');
require_once ABSPATH . 'wp-settings.php';
PHP
# A page that takes its time, for trying slow PHP: /slow.php?ms=2500.
echo '<?php usleep(min((int)($_GET["ms"] ?? 2500), 30000) * 1000); echo "slow page\n";' > www/slow.php

# PHP-FPM: a static pool of 3 workers, its status page at /fpm-status.
cat > php-fpm.conf <<CONF
[global]
pid = $dir/php-fpm.pid
error_log = $dir/php-fpm.log
[www]
user = www-data
group = www-data
listen = $dir/php-fpm.sock
listen.mode = 0666
pm = static
pm.max_children = 3
pm.status_path = /fpm-status
CONF
php-fpm8.2 --fpm-config "$dir/php-fpm.conf"

# nginx: both names, PHP to the pool, the status page for loopback only.
mkdir -p tmp
cat > nginx.conf <<CONF
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log $dir/nginx-access.log;
    client_body_temp_path $dir/tmp/body; fastcgi_temp_path $dir/tmp/fastcgi;
    proxy_temp_path $dir/tmp/proxy; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$nginx_port ssl http2;
        server_name blog.test shop.test;
        ssl_certificate $dir/site.pem;
        ssl_certificate_key $dir/site.key;
        root $dir/www;
        index index.php;
        location = /fpm-status {
            allow 127.0.0.1; deny all;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass unix:$dir/php-fpm.sock;
        }
        location / { try_files \$uri \$uri/ /index.php?\$args; }
        location ~ \.php\$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass unix:$dir/php-fpm.sock;
        }
    }
}
CONF
chmod -R a+rX "$dir/www" "$dir/tmp"
nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log"

# WordPress's installer, as a person would run it in a browser.
for _ in $(seq 50); do [ -S php-fpm.sock ] && break; sleep 0.2; done
curl -sk --connect-to "::127.0.0.1:$nginx_port" -o /dev/null --max-time 60 \
  --data-urlencode "weblog_title=try locally" --data-urlencode "user_name=admin" \
  --data-urlencode "admin_password=correct horse battery staple" \
  --data-urlencode "admin_password2=correct horse battery staple" --data-urlencode "pw_weak=1" \
  --data-urlencode "admin_email=admin@blog.test" --data-urlencode "blog_public=0" \
  "https://blog.test/wp-admin/install.php?step=2"

# An SMTP server that keeps every mail in mail/ (a Maildir).
mkdir -p mail/tmp mail/new mail/cur
/usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$dir/mail" \
  >/dev/null 2>&1 &
echo $! > smtp.pid

cat > probes.yaml <<YAML
defaults:
  interval: 30s
  timeout: 10s
  ca_file: $dir/ca.pem
  fpm_status: /fpm-status
sites:
  - url: https://blog.test/
    edge: 127.0.0.1:$nginx_port
    origins: [127.0.0.1:$nginx_port]
    static_path: /wp-includes/css/dashicons.min.css
  - url: https://shop.test/
    edge: 127.0.0.1:$nginx_port
    origins: [127.0.0.1:$nginx_port]
    static_path: /wp-includes/css/dashicons.min.css
alerts:
  to: ops@example.com
smtp:
  host: 127.0.0.1
  port: $smtp_port
  security: plain
  from: probe@example.com
store:
  path: $dir/probe.sqlite
YAML

cat <<TEXT
A WordPress world runs in $dir:
  nginx on 127.0.0.1:$nginx_port (blog.test and shop.test), PHP-FPM (3 workers), MariaDB,
  an SMTP server on 127.0.0.1:$smtp_port keeping mails in $dir/mail/new/.
Try:
  probe blog.test --edge 127.0.0.1:$nginx_port --origin 127.0.0.1:$nginx_port --ca-file $dir/ca.pem --fpm-status /fpm-status
  probe check-config -c $dir/probes.yaml
  probe watch -c $dir/probes.yaml --listen 127.0.0.1:8080     # the page: http://127.0.0.1:8080/
Break it:
  kill \$(cat $dir/php-fpm.pid)                                  # PHP-FPM stopped
  php-fpm8.2 --fpm-config $dir/php-fpm.conf                      # … and back
  mariadb --no-defaults --socket=$dir/mysql-run/mysqld.sock -u root -e "ALTER USER 'wp'@'localhost' IDENTIFIED BY 'x'"   # the database refuses WordPress
  mariadb --no-defaults --socket=$dir/mysql-run/mysqld.sock -u root -e "ALTER USER 'wp'@'localhost' IDENTIFIED BY 'wp'"  # … and back
Read the mails: ls $dir/mail/new/ ; stop everything: $0 stop $dir
TEXT
