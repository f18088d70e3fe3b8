#!/usr/bin/env python3
"""Side-by-side benchmark: probe's phase timings and wall time against curl, on the same local
HTTPS target (Debian's nginx, TLS, HTTP/2, a static file), in one run.

It prints two tables:
  1. per phase (connect, tls, ttfb, transfer, total): the median of probe and of curl -w over the
     same number of interleaved requests, and the difference of the medians;
  2. the wall time of one `probe` run that looks at the edge and the origin (two routes) against
     two curl runs one after the other.

Everything listens on 127.0.0.1. Needs: nginx, openssl, curl, a release build of probe
(`cargo build --release`; this script builds it). Usage: python3 bench/compare-curl.py [RUNS]
"""

import json
import os
import ssl
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
SITE = "probe.test"
STATIC = "/static.css"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "target", "release", "probe")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_certs(d):
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "30", "-subj", "/CN=bench CA"])
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/leaf.key", "-out", f"{d}/leaf.csr", "-subj", f"/CN={SITE}"])
    with open(f"{d}/ext.cnf", "w") as f:
        f.write(f"subjectAltName=DNS:{SITE}\n")
    run(["openssl", "x509", "-req", "-in", f"{d}/leaf.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
         "-CAcreateserial", "-out", f"{d}/leaf.pem", "-days", "30", "-extfile", f"{d}/ext.cnf"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(d):
    port = free_port()
    os.makedirs(f"{d}/www", exist_ok=True)
    with open(f"{d}/www{STATIC}", "w") as f:
        f.write(".bench{color:red}\n" * 64)
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off; keepalive_timeout 0;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  server {{
    listen 127.0.0.1:{port} ssl http2; server_name {SITE};
    ssl_certificate {d}/leaf.pem; ssl_certificate_key {d}/leaf.key; ssl_protocols TLSv1.3;
    root {d}/www;
  }}
}}
""")
    for dirpath, _, files in os.walk(d):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("nginx did not start")


def probe_phases(d, port):
    out = subprocess.run([PROBE, f"https://{SITE}{STATIC}", "--edge", f"127.0.0.1:{port}",
                          "--ca-file", f"{d}/ca.pem", "--json"], capture_output=True, text=True)
    obs = json.loads(out.stdout)["observations"][0]
    assert obs["error"] is None, obs["error"]
    t = obs["timings_ms"]
    return {k: t[k] for k in ("connect", "tls", "ttfb", "transfer", "total")}


CURL_FORMAT = "%{time_namelookup} %{time_connect} %{time_appconnect} %{time_pretransfer} %{time_starttransfer} %{time_total}"


def curl_phases(d, port):
    out = run(["curl", "-s", "-o", "/dev/null", "--http2", "--cacert", f"{d}/ca.pem",
               "--connect-to", f"{SITE}:443:127.0.0.1:{port}", "-w", CURL_FORMAT, f"https://{SITE}{STATIC}"])
    lookup, connect, appconnect, pretransfer, start, total = (float(x) * 1000 for x in out.stdout.split())
    # curl's times are cumulative; take them apart into the same spans probe reports.
    return {"connect": connect - lookup, "tls": appconnect - connect, "ttfb": start - pretransfer,
            "transfer": total - start, "total": total - lookup}


def python_tls_handshake(d, port):
    """The bare TLS handshake with OpenSSL (the library curl uses), its context built beforehand:
    a reference that shows how much of curl's appconnect is per-transfer OpenSSL setup."""
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    times = []
    for _ in range(RUNS):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            t0 = time.perf_counter()
            with ctx.wrap_socket(raw, server_hostname=SITE):
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    if not os.path.exists(PROBE) or os.environ.get("BENCH_NO_BUILD") is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    d = tempfile.mkdtemp(prefix="probe-bench-")
    os.chmod(d, 0o755)
    make_certs(d)
    nginx, port = start_nginx(d)
    try:
        probe_phases(d, port), curl_phases(d, port)  # warm up caches and the page cache
        samples = {"probe": [], "curl": []}
        for _ in range(RUNS):  # interleaved, so drift hits both alike
            samples["probe"].append(probe_phases(d, port))
            samples["curl"].append(curl_phases(d, port))
        print(f"Phase timings on loopback, median of {RUNS} interleaved requests each (ms)")
        print(f"{'phase':<10}{'probe':>10}{'curl':>10}{'diff':>10}")
        for phase in ("connect", "tls", "ttfb", "transfer", "total"):
            p = statistics.median(s[phase] for s in samples["probe"])
            c = statistics.median(s[phase] for s in samples["curl"])
            print(f"{phase:<10}{p:>10.3f}{c:>10.3f}{p - c:>+10.3f}")
        print(f"reference: bare OpenSSL handshake, context prebuilt (python ssl): "
              f"{python_tls_handshake(d, port):.3f} ms")

        both = [PROBE, f"https://{SITE}{STATIC}", "--edge", f"127.0.0.1:{port}", "--origin",
                f"127.0.0.1:{port}", "--ca-file", f"{d}/ca.pem", "--json"]
        one_curl = ["curl", "-s", "-o", "/dev/null", "--cacert", f"{d}/ca.pem", "--connect-to",
                    f"{SITE}:443:127.0.0.1:{port}", f"https://{SITE}{STATIC}"]
        walls = {"probe": [], "curl": []}
        for _ in range(RUNS):
            t0 = time.perf_counter()
            subprocess.run(both, capture_output=True, check=False)
            walls["probe"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run(one_curl, check=True)
            subprocess.run(one_curl, check=True)
            walls["curl"].append((time.perf_counter() - t0) * 1000)
        p = statistics.median(walls["probe"])
        c = statistics.median(walls["curl"])
        print()
        print(f"Wall time of an edge+origin look, median of {RUNS} (ms, process start included)")
        print(f"{'probe (edge+origin, one run)':<34}{p:>10.2f}")
        print(f"{'curl (two runs in sequence)':<34}{c:>10.2f}")
        print(f"{'ratio probe/curl':<34}{p / c:>10.2f}")
    finally:
        nginx.kill()
        nginx.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
