//! What to do next for each cause: the commands that confirm it on the server, and the causes
//! that outside evidence cannot rule out. Text only; the rules choose which applies.

use super::recognise::Proxy;
use super::Cause;

/// What the commands are filled with: the site's name, the page URL, an origin `IP:PORT`, the
/// edge `IP:PORT` probe dialled, and the proxy that answered when it is not the usual nginx.
pub struct AdviceContext<'a> {
    pub host: &'a str,
    pub url: &'a str,
    pub origin: Option<String>,
    pub edge: Option<String>,
    pub proxy: Option<Proxy>,
}

/// Exact commands (and what each shows) that confirm `cause` or tell its alternatives apart.
/// The server-side commands assume a Debian-style layout with systemd (paths say so where they
/// differ elsewhere).
pub fn next_steps(cause: Cause, ctx: &AdviceContext<'_>) -> Vec<String> {
    let host = ctx.host;
    let url = ctx.url;
    let origin = ctx.origin.clone().unwrap_or_else(|| "ORIGIN_IP:443".into());
    // The edge address probe dialled; else the URL's host:port (not always 443).
    let edge = ctx.edge.clone().unwrap_or_else(|| {
        url::Url::parse(url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| format!("{host}:443"))
    });
    if let Some(proxy) = ctx.proxy.as_ref().filter(|p| **p != Proxy::Nginx) {
        if let Some(lines) = proxy_steps(proxy, cause, url, &origin) {
            return lines;
        }
    }
    let lines: Vec<String> = match cause {
        Cause::Ok | Cause::CertExpiring | Cause::Unknown => vec![],
        Cause::Slow => vec![
            format!("curl -so /dev/null -w 'dns %{{time_namelookup}} connect %{{time_connect}} tls %{{time_appconnect}} ttfb %{{time_starttransfer}} total %{{time_total}}\\n' '{url}'    # which phase is slow, from here and from another network"),
            format!("mtr -rwc 20 {host}    # loss or a long path on the way"),
        ],
        Cause::DnsFailure => vec![
            format!("dig +trace {host}    # which server gives the failing answer"),
            format!("dig NS {host} && dig SOA {host}    # delegation and zone still in place?"),
            "check the domain's registration and the DNS provider's status page".into(),
        ],
        Cause::EdgeUnreachable => vec![
            format!("curl -sv '{url}' -o /dev/null    # from another network too"),
            format!("mtr -rwc 20 {host}    # where packets stop"),
            "check the CDN / load balancer status page and your DNS records pointing at it".into(),
        ],
        Cause::EdgeCertInvalid => vec![
            format!("echo | openssl s_client -connect {edge} -servername {host} 2>/dev/null | openssl x509 -noout -subject -issuer -dates -ext subjectAltName"),
            "renew or re-issue the edge certificate (Cloudflare: SSL/TLS → Edge Certificates)".into(),
        ],
        Cause::EdgeInternal => vec![
            "check https://www.cloudflarestatus.com/ for the colo in the cf-ray suffix".into(),
            format!("curl -sv '{url}' -o /dev/null 2>&1 | grep -i cf-ray    # again: a new colo or ray?"),
        ],
        Cause::OriginDnsFailure => vec![
            "in the Cloudflare dashboard, check the DNS record the site points to (CNAME target must resolve)".into(),
            "dig +short <the CNAME target>    # does the origin hostname resolve publicly?".into(),
        ],
        Cause::OriginRefused => vec![
            "systemctl status nginx    # is the web server running?".into(),
            "ss -ltnp | grep -E ':(80|443) '    # is anything listening on the web ports?".into(),
            format!("curl -skv --connect-to ::{origin} '{url}' -o /dev/null"),
        ],
        Cause::OriginTimeout => vec![
            "iptables -S; nft list ruleset    # a firewall dropping packets?".into(),
            "check the cloud provider's security group / firewall for ports 80 and 443".into(),
            format!("curl -skv --connect-timeout 5 --connect-to ::{origin} '{url}' -o /dev/null"),
        ],
        Cause::OriginBlocksEdge => vec![
            "iptables -S | grep -iE 'drop|reject'; nft list ruleset    # are Cloudflare's ranges allowed?".into(),
            "compare the allow-list with https://www.cloudflare.com/ips-v4 and /ips-v6".into(),
            "grep -rn 'deny\\|allow' /etc/nginx/    # nginx access rules or fail2ban banning edge IPs".into(),
        ],
        Cause::OriginTlsHandshake => vec![
            format!("echo | openssl s_client -connect {origin} -servername {host}    # does the origin complete a handshake for this name?"),
            "grep -rn 'ssl_certificate\\|ssl_protocols\\|listen' /etc/nginx/sites-enabled/".into(),
        ],
        Cause::OriginCertExpired => vec![
            format!("echo | openssl s_client -connect {origin} -servername {host} 2>/dev/null | openssl x509 -noout -dates"),
            "certbot renew && systemctl reload nginx    # or install a Cloudflare Origin CA certificate (valid up to 15 years)".into(),
        ],
        Cause::OriginCertUntrusted => vec![
            format!("echo | openssl s_client -connect {origin} -servername {host} 2>/dev/null | openssl x509 -noout -issuer -subject"),
            "use a public CA or a Cloudflare Origin CA certificate, or set SSL mode to Full (not strict) knowingly".into(),
        ],
        Cause::OriginCertNameMismatch => vec![
            format!("echo | openssl s_client -connect {origin} -servername {host} 2>/dev/null | openssl x509 -noout -ext subjectAltName"),
            "grep -rn 'server_name\\|ssl_certificate' /etc/nginx/sites-enabled/    # the right server block and certificate for this name?".into(),
        ],
        Cause::OriginBadResponse => vec![
            "tail -n 50 /var/log/nginx/error.log".into(),
            format!("curl -skv --connect-to ::{origin} '{url}' -o /dev/null    # empty reply or oversized headers?"),
            "journalctl -u php*-fpm -n 50 | grep -iE 'signal|segfault'".into(),
        ],
        Cause::FpmUnreachable => vec![
            "grep -rn fastcgi_pass /etc/nginx/sites-enabled/    # which socket does nginx use?".into(),
            "ls -la /var/run/php/    # does that socket exist? PHP upgrades rename php7.4-fpm.sock".into(),
            "systemctl status 'php*-fpm'".into(),
            "tail -n 20 /var/log/nginx/error.log | grep -E 'connect\\(\\) to unix|Connection refused|Permission denied|Resource temporarily unavailable'".into(),
        ],
        Cause::FpmSaturated => vec![
            "journalctl -u 'php*-fpm' | grep max_children    # 'server reached pm.max_children'".into(),
            "grep -rn 'request_slowlog_timeout\\|slowlog' /etc/php/*/fpm/pool.d/    # enable the slow log to find the request holding workers".into(),
            "tail -n 20 /var/log/nginx/error.log | grep -E 'upstream timed out|Resource temporarily unavailable'".into(),
        ],
        Cause::FpmWorkerDied => vec![
            "journalctl -u 'php*-fpm' | grep -iE 'exited on signal|segfault|execution timed out'".into(),
            "dmesg -T | grep -iE 'out of memory|killed process|segfault'    # OOM kill or crash?".into(),
            "tail -n 20 /var/log/nginx/error.log | grep 'Connection reset by peer'".into(),
        ],
        Cause::OriginSlow => vec![
            "grep -rn 'request_slowlog_timeout\\|slowlog' /etc/php/*/fpm/pool.d/    # set request_slowlog_timeout = 3s and reload PHP-FPM: the slow log shows the PHP stack of every request over it".into(),
            format!("curl -sk -o /dev/null -w 'ttfb %{{time_starttransfer}}s\\n' --connect-to ::{origin} '{url}'    # again, and against the static file: only PHP pages slow?"),
            format!("wp plugin list --status=active; wp profile stage --all --url='{url}'    # which plugin or hook takes the time (wp-cli's profile command; or the Query Monitor plugin)"),
            "mysqladmin processlist; mysql -e \"SHOW GLOBAL STATUS LIKE 'Slow_queries'\"    # a slow query holding the page? (slow_query_log names it)".into(),
            "grep -rnE '^pm|^request_terminate' /etc/php/*/fpm/pool.d/; grep -rn 'opcache.enable' /etc/php/*/fpm/    # pm = ondemand starts a worker for a request after idling; opcache off compiles every script on every request".into(),
        ],
        Cause::DatabaseUnreachable => vec![
            "systemctl status mariadb mysql".into(),
            "grep -E \"DB_(HOST|NAME|USER)\" /var/www/*/wp-config.php    # right host and credentials?".into(),
            "mysqladmin -h <DB_HOST> -u <DB_USER> -p status".into(),
        ],
        Cause::AppError => vec![
            "tail -n 50 /var/log/php*-fpm.log; grep -i 'PHP Fatal' /var/log/nginx/error.log | tail".into(),
            "wp plugin list --status=active    # a recently updated plugin or theme?".into(),
        ],
        Cause::Maintenance => vec![
            "ls -la /var/www/*/.maintenance    # a leftover file keeps the site in maintenance after a failed update".into(),
            "wp core verify-checksums; wp plugin list --update=available".into(),
        ],
    };
    let mut lines = lines;
    if on_the_server(cause) {
        lines.push(LAYOUT_ASSUMED.to_string());
    }
    lines
}

/// What the server-side commands take for granted, and where things are otherwise.
const LAYOUT_ASSUMED: &str = "# these assume Debian/Ubuntu with systemd: elsewhere nginx's sites may be in /etc/nginx/conf.d/, PHP-FPM logs in /var/log/php*-fpm.log (RHEL: /var/log/php-fpm/), the socket in /run/php-fpm/; in a container, docker logs CONTAINER stands for journalctl and the log files";

/// The cause's commands are run on the origin server (so they assume its layout).
fn on_the_server(cause: Cause) -> bool {
    matches!(
        cause,
        Cause::OriginRefused
            | Cause::OriginBlocksEdge
            | Cause::OriginTlsHandshake
            | Cause::OriginCertExpired
            | Cause::OriginCertNameMismatch
            | Cause::OriginBadResponse
            | Cause::FpmUnreachable
            | Cause::FpmSaturated
            | Cause::FpmWorkerDied
            | Cause::OriginSlow
            | Cause::DatabaseUnreachable
            | Cause::AppError
            | Cause::Maintenance
    )
}

/// The commands for a proxy other than nginx whose upstream failed (`None`: the cause is not about
/// the proxy's upstream, the usual steps apply).
fn proxy_steps(proxy: &Proxy, cause: Cause, url: &str, origin: &str) -> Option<Vec<String>> {
    if !matches!(
        cause,
        Cause::FpmUnreachable | Cause::FpmSaturated | Cause::FpmWorkerDied
    ) {
        return None;
    }
    let lines: Vec<String> = match proxy {
        Proxy::Nginx => return None,
        Proxy::Apache => vec![
            "tail -n 50 /var/log/apache2/error.log | grep -E 'AH01114|AH01079|AH00957|AH01102|proxy_fcgi|proxy:error'    # which upstream, and why (Debian path; /var/log/httpd/error_log on RHEL)".into(),
            "grep -rn 'ProxyPass\\|SetHandler.*proxy:' /etc/apache2/    # where Apache sends PHP (a socket or host:port)".into(),
            "systemctl status 'php*-fpm'; ls -la /run/php/    # is that upstream running, its socket there?".into(),
        ],
        Proxy::Envoy => vec![
            "curl -s localhost:9901/clusters | grep -E 'health_flags|cx_connect_fail|::cx_active'    # Envoy's admin port: is the cluster's endpoint healthy, are connects failing?".into(),
            "journalctl -u envoy -n 200 | grep -E 'upstream connect error| UF | UH '    # (docker logs ENVOY_CONTAINER in a container) access-log flags: UF connect failure, UH no healthy host".into(),
            "check the cluster's address and port in the Envoy config against what the application listens on".into(),
        ],
        Proxy::Traefik => vec![
            "docker logs TRAEFIK_CONTAINER 2>&1 | grep -iE 'bad gateway|dial tcp|connection refused' | tail    # which backend, and why".into(),
            "check the service's port (label traefik.http.services.NAME.loadbalancer.server.port) and that the container is on Traefik's network".into(),
            "curl -s localhost:8080/api/http/services    # Traefik's API (if enabled): the service's servers and their status".into(),
        ],
        Proxy::Caddy => vec![
            "journalctl -u caddy -n 50 | grep -iE 'dial tcp|dial unix|reverse_proxy|no upstreams'    # (docker logs CADDY_CONTAINER in a container)".into(),
            "grep -nE 'reverse_proxy|php_fastcgi' /etc/caddy/Caddyfile    # the upstream Caddy dials; is it listening?".into(),
            "systemctl status 'php*-fpm'; ls -la /run/php/    # for php_fastcgi: the socket Caddy names".into(),
        ],
        Proxy::LiteSpeed => vec![
            "tail -n 50 /usr/local/lsws/logs/error.log | grep -iE 'lsphp|external app|503|502'".into(),
            "check the External App (lsphp) settings: max connections, the socket, and that lsphp runs".into(),
        ],
        Proxy::Other(_) => vec![
            format!("curl -skv --connect-to ::{origin} '{url}' -o /dev/null 2>&1 | grep -i '^< server'    # which server answers on the origin"),
            "find that server's error log: it names the upstream it cannot reach (nginx: /var/log/nginx/error.log; Apache: /var/log/apache2/error.log; containers: docker logs)".into(),
        ],
    };
    Some(lines)
}

/// Causes the outside evidence cannot rule out, with why.
/// The forms of one cause that look the same from outside, said once after its summary (they
/// are not other causes: "also possible" names only those).
pub fn variants(cause: Cause) -> Option<&'static str> {
    match cause {
        Cause::FpmUnreachable => Some(
            "It looks the same from outside whether PHP-FPM is stopped, its socket was renamed by a PHP upgrade, or its permissions are wrong.",
        ),
        Cause::FpmWorkerDied => Some(
            "A segfault, an OOM kill and request_terminate_timeout look the same from outside.",
        ),
        _ => None,
    }
}

pub fn alternatives(cause: Cause) -> Vec<(Cause, &'static str)> {
    match cause {
        Cause::FpmUnreachable => vec![(
            Cause::FpmSaturated,
            "a full listen backlog under load turns the overflow away with the same instant 502, but it comes and goes",
        )],
        Cause::FpmWorkerDied => vec![(
            Cause::FpmSaturated,
            "a worker recycled under load can also cut a request",
        )],
        Cause::FpmSaturated => vec![(
            Cause::OriginSlow,
            "one very slow request holding every worker looks the same as many ordinary ones",
        )],
        Cause::OriginSlow => vec![(
            Cause::FpmSaturated,
            "requests queueing for a busy pool wait as long as one slow script",
        )],
        Cause::OriginRefused => vec![(
            Cause::OriginBlocksEdge,
            "a firewall rejecting only the edge's addresses refuses the edge, not us",
        )],
        Cause::OriginTimeout => vec![(
            Cause::OriginBlocksEdge,
            "a firewall silently dropping the edge's addresses times out the edge, not us",
        )],
        Cause::OriginBadResponse => vec![(
            Cause::FpmWorkerDied,
            "a PHP worker dying before any byte was sent leaves nginx, and then the edge, with an empty reply",
        )],
        _ => vec![],
    }
}
