//! The PostgreSQL store's URL: libpq-style (`postgresql://user@host/db?sslmode=require`, or
//! `host=/run/postgresql dbname=probe`), checked by the config and opened by the store. It may
//! hold a password: it is shown only as `shown_url` makes it, and errors never repeat it.

/// `url` as it may be shown: scheme, user, hosts, ports and database, never the password or
/// the other parameters.
pub fn shown_url(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let user = config.get_user().unwrap_or("");
    let at = if user.is_empty() { "" } else { "@" };
    let port = if ports.is_empty() {
        String::new()
    } else {
        format!(":{}", ports.join(","))
    };
    format!(
        "postgresql://{user}{at}{}{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Parses a libpq-style URL or key=value string. `sslrootcert=FILE` (which tokio-postgres does
/// not read) is taken out and its certificates trusted instead of the public roots: managed
/// databases sign with their own CA. The error never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Option<String>), String> {
    let (rest, root_file) = take_param(url, "sslrootcert");
    let config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL: {e}"))?;
    Ok((config, root_file))
}

/// `url` without parameter `name`, and that parameter's value: in a URL's query
/// (`?a=1&name=v`) or a key=value string (`name=v`).
fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let key = format!("{name}=");
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None);
        };
        let mut value = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix(&key) {
                Some(v) => {
                    value = Some(percent_decoded(v));
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, value)
    } else {
        let mut value = None;
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| match pair.strip_prefix(&key) {
                Some(v) => {
                    value = Some(v.trim_matches('\'').to_string());
                    false
                }
                None => true,
            })
            .collect();
        (kept.join(" "), value)
    }
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether the URL carries a password.
pub fn has_password(config: &tokio_postgres::Config) -> bool {
    config.get_password().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password_or_parameters() {
        let (config, roots) =
            parse_url("postgresql://probe:hunter2@db.internal:6543/probe?sslmode=require&sslrootcert=/etc/ca%20x.pem")
                .unwrap();
        assert_eq!(roots.as_deref(), Some("/etc/ca x.pem"));
        let shown = shown_url(&config);
        assert_eq!(shown, "postgresql://probe@db.internal:6543/probe");
        let (config, roots) = parse_url(
            "host=/run/pg port=5433 user=probe password=hunter2 dbname=p sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(roots.as_deref(), Some("/ca.pem"));
        assert_eq!(shown_url(&config), "postgresql://probe@/run/pg:5433/p");
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let e = parse_url("postgresql://probe:hunter2@db:notaport/probe").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.starts_with("not a PostgreSQL URL"), "{e}");
    }
}
