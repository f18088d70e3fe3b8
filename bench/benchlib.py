"""Pieces shared by the benchmarks: a test CA and certificate made with openssl, and Debian's
nginx serving a static file over TLS 1.3 with keep-alive off (a fresh connection per probe, as a
prober must make), all on 127.0.0.1."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SITE = "probe.test"
STATIC = "/static.css"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "target", "release", "probe")


BARE_HANDSHAKE = os.path.join(ROOT, "target", "release", "examples", "bare_handshake")


def build_bare_handshake():
    """A release build of examples/bare_handshake.rs, the crypto floor the benches compare with."""
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "bare_handshake"],
                   cwd=ROOT, check=True)
    return BARE_HANDSHAKE


@contextlib.contextmanager
def nginx_lab(prefix):
    """A temporary directory with a test CA and certificate and nginx serving from it; yields
    (directory, TLS port). nginx is stopped and the directory removed afterwards."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    make_certs(d)
    nginx, port = start_nginx(d)
    try:
        yield d, port
    finally:
        nginx.kill()
        nginx.wait()
        shutil.rmtree(d, ignore_errors=True)


def build_probe():
    """A release build of probe (skipped when BENCH_NO_BUILD is set and one exists)."""
    if not os.path.exists(PROBE) or os.environ.get("BENCH_NO_BUILD") is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


def wait_for_port(port, proc, what):
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"{what} did not start")


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
    """nginx on a TLS port; `d/plain_port` holds the port of a plain-HTTP listener beside it."""
    port = free_port()
    plain = free_port()
    with open(f"{d}/plain_port", "w") as f:
        f.write(str(plain))
    os.makedirs(f"{d}/www", exist_ok=True)
    with open(f"{d}/www{STATIC}", "w") as f:
        f.write(".bench{color:red}\n" * 64)
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off; keepalive_timeout 0;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  server {{
    listen 127.0.0.1:{port} ssl http2; listen 127.0.0.1:{plain}; server_name {SITE};
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
    wait_for_port(port, proc, "nginx")
    return proc, port




def start_relay(target_port, first_reply_delay):
    """A TCP relay on a loopback port in front of `target_port` that holds back the server's
    first bytes for `first_reply_delay` seconds (the ServerHello over TLS, the response head over
    plain HTTP), then relays both ways untouched: a known delay injected without netem. Returns
    the relay's port; it runs in a daemon thread."""
    import asyncio
    import threading

    port = free_port()
    ready = threading.Event()

    async def pipe(reader, writer, delay):
        first = True
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if first and delay:
                    await asyncio.sleep(delay)
                first = False
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer, 0),
                             pipe(server_reader, client_writer, first_reply_delay))

    def run():
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port))
        ready.set()
        loop.run_until_complete(server.serve_forever())

    threading.Thread(target=run, daemon=True).start()
    ready.wait(5)
    return port


def sites_config(d, port, sites, interval, name):
    """Writes `d/NAME.yaml`: `sites` sites, each the local nginx under its own URL (pinned edge,
    no DNS), no in-run retries, the store at `d/NAME.sqlite`. Returns the file's path."""
    lines = ["defaults:", f"  interval: {interval}", "  timeout: 5s", f"  ca_file: {d}/ca.pem", "sites:"]
    for i in range(sites):
        lines.append(f'  - {{ name: s{i}, url: "https://{SITE}{STATIC}?site={i}", edge: "127.0.0.1:{port}" }}')
    lines += ["alerts:", "  confirm_retries: 0", "store:", f"  path: {d}/{name}.sqlite", ""]
    path = f"{d}/{name}.yaml"
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
