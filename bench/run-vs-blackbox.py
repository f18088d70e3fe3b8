#!/usr/bin/env python3
"""Side-by-side benchmark: one `probe run` pass over N sites (default 1,000) against
prometheus-blackbox-exporter (Debian's package) probing the same N targets through its /probe
endpoint at the same concurrency (32), and against `curl` run once per target (32 at a time), in
one run.

The targets: Debian's nginx serving a static file over TLS 1.3 with keep-alive off, so each probe
makes a fresh connection and handshake; every site is the same server under its own URL. Both
probers skip DNS (probe dials the pinned edge address; blackbox gets an IP target with the name
as SNI and Host).

Beside them, the crypto floor: as many bare rustls handshakes (examples/bare_handshake.rs) against
the same server, one after the other.

Measured for each prober:
  wall      first request to last answer (probe: the whole process, start to exit, including
            reading the config and writing every result to its SQLite store);
  CPU       user + system seconds of the prober's process only (not nginx, not the Python driver
            that plays Prometheus for blackbox; for curl, all its processes);
  peak RSS  the process's high-water mark (getrusage for probe and for each curl, VmHWM for the
            exporter).

Everything listens on 127.0.0.1. Needs: nginx, openssl, prometheus-blackbox-exporter, a release
build of probe (built here). Usage: python3 bench/run-vs-blackbox.py [SITES] [ROUNDS]
"""

import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from benchlib import (BARE_HANDSHAKE, PROBE, SITE, STATIC, build_bare_handshake, build_probe, free_port,
                      nginx_lab, sites_config, wait_for_port)

SITES = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CONCURRENCY = 32  # probe's own bound on probes at once (src/schedule.rs)
TICKS = os.sysconf("SC_CLK_TCK")


def run_probe(config):
    t0 = time.perf_counter()
    proc = subprocess.Popen([PROBE, "run", "-c", config], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    ok = out.count(b"\nOK ") + out.startswith(b"OK ")
    if code != 0 or ok != SITES:
        sys.exit(f"probe run: exit {code}, {ok} of {SITES} sites OK\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def bare_round(d, port):
    """The crypto floor: SITES bare rustls handshakes (examples/bare_handshake.rs: same provider,
    ALPN and no resumption, a config and connection per handshake around one verifier), one after the other."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([BARE_HANDSHAKE, f"127.0.0.1:{port}", SITE, f"{d}/ca.pem", str(SITES)],
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("bare_handshake failed")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def blackbox_config(d):
    path = f"{d}/blackbox.yml"
    with open(path, "w") as f:
        f.write(f"""modules:
  https_bench:
    prober: http
    timeout: 5s
    http:
      method: GET
      preferred_ip_protocol: ip4
      headers:
        Host: {SITE}
      valid_status_codes: [200]
      tls_config:
        ca_file: {d}/ca.pem
        server_name: {SITE}
""")
    return path


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def curl_round(d, port):
    def one(i):
        proc = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2",
                                 "--cacert", f"{d}/ca.pem", "--connect-to", f"{SITE}:443:127.0.0.1:{port}",
                                 f"https://{SITE}{STATIC}?site={i}"], stdout=subprocess.PIPE)
        out = proc.stdout.read()
        _, _, usage = os.wait4(proc.pid, 0)
        return out == b"200", usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, range(SITES)))
    wall = time.perf_counter() - t0
    failed = sum(1 for ok, _, _ in results if not ok)
    if failed:
        sys.exit(f"curl: {failed} of {SITES} requests failed")
    return wall, sum(cpu for _, cpu, _ in results), max(rss for _, _, rss in results)


def blackbox_round(listen, port):
    def one(i):
        target = f"https://127.0.0.1:{port}{STATIC}?site={i}"
        url = f"http://{listen}/probe?module=https_bench&target={urllib.parse.quote(target, safe='')}"
        with urllib.request.urlopen(url, timeout=30) as r:
            return b"\nprobe_success 1" in r.read()

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, range(SITES)))
    wall = time.perf_counter() - t0
    if not all(results):
        sys.exit(f"blackbox: {results.count(False)} of {SITES} probes failed")
    return wall


def http_version(listen, port):
    target = f"https://127.0.0.1:{port}{STATIC}"
    url = f"http://{listen}/probe?module=https_bench&target={urllib.parse.quote(target, safe='')}"
    with urllib.request.urlopen(url, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("probe_http_version "):
                return line.split()[1]
    return "?"


def main():
    exporter = shutil.which("prometheus-blackbox-exporter")
    if exporter is None:
        sys.exit("needs prometheus-blackbox-exporter (apt install prometheus-blackbox-exporter)")
    build_probe()
    build_bare_handshake()
    with nginx_lab("probe-bench-") as (d, port):
        bench(exporter, d, port)


def bench(exporter, d, port):
    bb_port = free_port()
    listen = f"127.0.0.1:{bb_port}"
    bb = subprocess.Popen([exporter, f"--config.file={blackbox_config(d)}", f"--web.listen-address={listen}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(bb_port, bb, "blackbox exporter")
        config = sites_config(d, port, SITES, "10m", "probe")
        version = http_version(listen, port)
        rows = {"probe run": [], "blackbox_exporter": [], "curl, one per target": [],
                "bare rustls handshakes": []}
        for _ in range(ROUNDS):  # interleaved, so drift hits both alike
            os.remove(f"{d}/probe.sqlite") if os.path.exists(f"{d}/probe.sqlite") else None
            rows["probe run"].append(run_probe(config))
            before = cpu_seconds(bb.pid)
            wall = blackbox_round(listen, port)
            rows["blackbox_exporter"].append((wall, cpu_seconds(bb.pid) - before, peak_rss_mb(bb.pid)))
            rows["curl, one per target"].append(curl_round(d, port))
            rows["bare rustls handshakes"].append(bare_round(d, port))
        print(f"{SITES} sites, concurrency {CONCURRENCY}, median of {ROUNDS} rounds "
              f"(blackbox spoke HTTP/{version}, probe HTTP/2)")
        print(f"{'prober':<22}{'wall s':>10}{'CPU s':>10}{'CPU ms/probe':>14}{'probes/CPU s':>14}{'peak RSS MB':>13}")
        medians = {}
        for name, samples in rows.items():
            wall, cpu = (statistics.median(s[i] for s in samples) for i in (0, 1))
            rss = max(s[2] for s in samples)
            medians[name] = (wall, cpu, rss)
            print(f"{name:<22}{wall:>10.2f}{cpu:>10.2f}{cpu * 1000 / SITES:>14.2f}{SITES / cpu:>14.0f}{rss:>13.1f}")
        (pw, pc, pr), (bw, bc, br) = medians["probe run"], medians["blackbox_exporter"]
        print(f"{'ratio probe/blackbox':<22}{pw / bw:>10.2f}{pc / bc:>10.2f}{'':>14}{bc / pc:>13.2f}x{pr / br:>13.2f}")
        print(f"{'ratio probe/bare':<22}{'':>10}{pc / medians['bare rustls handshakes'][1]:>10.2f}"
              "   (the bare loop: handshakes only, sequential, no HTTP, no store)")
    finally:
        bb.terminate()
        bb.wait()


if __name__ == "__main__":
    main()
