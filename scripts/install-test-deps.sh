#!/usr/bin/env bash
# Installs the real servers the tests run against (Debian 12): nginx (origin, TLS + HTTP/2),
# PHP-FPM 8.2 behind it, MariaDB and WordPress (Debian's packages) for the application cases,
# PostgreSQL 15 (the shared store), iproute2 (regions as network namespaces),
# dnsmasq (DNS), aiosmtpd (SMTP), openssl, curl, kill(1), and the feeds' consumers (promtool,
# feedparser, Chromium). Does nothing when they are all there.
set -euo pipefail

base=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || base+=(nginx-light)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || base+=(dnsmasq-base)
[ -x /usr/sbin/php-fpm8.2 ] || base+=(php8.2-fpm php8.2-mysql)
[ -x /usr/sbin/mariadbd ] || base+=(mariadb-server)
# PostgreSQL 15 for the shared store: the tests run initdb and the server themselves.
[ -x /usr/lib/postgresql/15/bin/initdb ] || base+=(postgresql-15)
# Regions as network namespaces (ip netns, veth pairs, a bridge): iproute2; the tests run as root.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || base+=(iproute2)
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || base+=(python3-aiosmtpd)
command -v openssl >/dev/null 2>&1 || base+=(openssl)
command -v curl >/dev/null 2>&1 || base+=(curl)
# The tests signal processes (SIGTERM, SIGHUP) with kill(1), from procps.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || base+=(procps)
# The feeds' consumers: promtool (Prometheus), feedparser (Atom), headless Chromium (the page).
command -v promtool >/dev/null 2>&1 || base+=(prometheus)
/usr/bin/python3 -c 'import feedparser' >/dev/null 2>&1 || base+=(python3-feedparser)
[ -x /usr/bin/chromium ] || base+=(chromium)
# What checks the deployment files: systemd-analyze (the units), a Python venv for
# kubernetes-validate from PyPI (the manifests).
[ -x /usr/bin/systemd-analyze ] || base+=(systemd)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || base+=(python3-venv)
# A Statuspage consumer for the v2 endpoints: the `statuspage.io` client library, on Node.js.
command -v node >/dev/null 2>&1 || base+=(nodejs)
command -v npm >/dev/null 2>&1 || base+=(npm)
app=()
[ -f /usr/share/wordpress/wp-settings.php ] || app+=(wordpress php php8.2)
[ -d /usr/share/wordpress/wp-content/themes/twentytwentythree ] || app+=(wordpress-theme-twentytwentythree)
if [ ${#base[@]} -gt 0 ] || [ ${#app[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  install() {
    echo "installing: $*" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  }
  $sudo apt-get update -qq
  [ ${#base[@]} -eq 0 ] || install "${base[@]}"
  # WordPress after PHP-FPM, naming php and php8.2, so that apt takes the installed PHP-FPM for
  # WordPress's PHP dependency instead of pulling in Apache's module (FACTS.md).
  [ ${#app[@]} -eq 0 ] || install "${app[@]}"
fi

# kubernetes-validate (PyPI), in a venv of the checkout's own (tests/examples.rs runs it).
tools="$(cd "$(dirname "$0")/.." && pwd)/target/test-tools"
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "installing: kubernetes-validate (PyPI) into $tools/venv" >&2
  /usr/bin/python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi
# The statuspage.io client library (npm), for tests/statuspage.rs.
if [ ! -f "$tools/node/node_modules/statuspage.io/package.json" ]; then
  echo "installing: statuspage.io (npm) into $tools/node" >&2
  mkdir -p "$tools/node"
  npm install --silent --no-audit --no-fund --prefix "$tools/node" statuspage.io@3.1.1 >/dev/null
fi
