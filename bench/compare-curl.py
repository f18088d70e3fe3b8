#!/usr/bin/env python3
"""Side-by-side benchmark: probe's phase timings and wall time against curl, on the same local
HTTPS target (Debian's nginx, TLS, HTTP/2, a static file), in one run.

It prints:
  1. per phase (connect, tls, ttfb, transfer, total): the median of probe and of curl -w over the
     same number of interleaved requests, the difference of the medians, and the median absolute
     difference between each probe request and the curl request made right after it; then two
     bare handshakes against the same server and keys as references: OpenSSL (python ssl) and
     rustls as probe configures it (examples/bare_handshake.rs), with probe's tls median above
     the latter;
  2. injected delays: a relay (bench/benchlib.py) holds the server's first bytes back by a known
     delay; probe's tls (over HTTPS) and ttfb (over plain HTTP) through the relay with and without
     the delay must differ by that delay;
  3. the wall time of one `probe` run that looks at the edge and the origin (two routes) against
     two curl runs one after the other, and against its slowest route when both routes are
     slowed (so the routes must run side by side).

Everything listens on 127.0.0.1. Needs: nginx, openssl, curl, a release build of probe and of
the bare_handshake example (`cargo build --release [--example bare_handshake]`; this script
builds both). Usage: python3 bench/compare-curl.py [RUNS]
"""

import json
import ssl
import socket
import statistics
import subprocess
import sys
import time

from benchlib import PROBE, SITE, STATIC, build_bare_handshake, build_probe, nginx_lab, run, start_relay

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 50


def probe_phases(d, port, scheme="https"):
    out = subprocess.run([PROBE, f"{scheme}://{SITE}{STATIC}", "--edge", f"127.0.0.1:{port}",
                          "--ca-file", f"{d}/ca.pem", "--json"], capture_output=True, text=True)
    obs = json.loads(out.stdout)["observations"][0]
    assert obs["error"] is None, obs["error"]
    t = obs["timings_ms"]
    return {k: t[k] for k in ("connect", "tls", "ttfb", "transfer", "total")}


CURL_FORMAT = "%{time_namelookup} %{time_connect} %{time_appconnect} %{time_pretransfer} %{time_starttransfer} %{time_total}"


def curl_phases(d, port, scheme="https"):
    default_port = 443 if scheme == "https" else 80
    out = run(["curl", "-s", "-o", "/dev/null", "--http2", "--cacert", f"{d}/ca.pem",
               "--connect-to", f"{SITE}:{default_port}:127.0.0.1:{port}", "-w", CURL_FORMAT,
               f"{scheme}://{SITE}{STATIC}"])
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


def rustls_tls_handshake(d, port):
    """The bare handshake with the library probe uses, configured as probe configures it: the
    floor under probe's tls phase (the difference is probe's own work inside the phase)."""
    out = subprocess.run([build_bare_handshake(), f"127.0.0.1:{port}", SITE, f"{d}/ca.pem", str(RUNS)],
                         capture_output=True, text=True, check=True)
    return statistics.median(float(line) for line in out.stdout.split())


def injected(d, port):
    """Known delays through a relay: the measured phase must move by the delay."""
    with open(f"{d}/plain_port") as f:
        plain = int(f.read())
    print()
    print(f"Injected delay, median of {RUNS} runs through a relay without and with it (ms)")
    print(f"{'phase':<22}{'injected':>10}{'without':>10}{'with':>10}{'probe saw':>11}"
          f"{'curl saw':>10}{'probe-curl':>12}")
    for phase, scheme, target in (("tls (https)", "https", port), ("ttfb (plain http)", "http", plain)):
        key = phase.split()[0]
        for delay_ms in (50, 200):
            base, slowed = start_relay(target, 0), start_relay(target, delay_ms / 1000)
            seen = {"probe": ([], []), "curl": ([], [])}
            for _ in range(RUNS):  # interleaved
                seen["probe"][0].append(probe_phases(d, base, scheme)[key])
                seen["probe"][1].append(probe_phases(d, slowed, scheme)[key])
                seen["curl"][0].append(curl_phases(d, base, scheme)[key])
                seen["curl"][1].append(curl_phases(d, slowed, scheme)[key])
            a, b = (statistics.median(x) for x in seen["probe"])
            ca, cb = (statistics.median(x) for x in seen["curl"])
            print(f"{phase:<22}{delay_ms:>10}{a:>10.3f}{b:>10.3f}{b - a:>11.3f}{cb - ca:>10.3f}"
                  f"{(b - a) - (cb - ca):>+12.3f}")
    print("(the relay is Python asyncio: its own sleep overshoots the delay by about a millisecond;"
          " curl through the same relay is the yardstick)")


def side_by_side(d, port):
    """Both routes slowed by a different known delay: one probe must take about the slower one."""
    edge, origin = start_relay(port, 0.100), start_relay(port, 0.200)
    both = [PROBE, f"https://{SITE}{STATIC}", "--edge", f"127.0.0.1:{edge}", "--origin",
            f"127.0.0.1:{origin}", "--ca-file", f"{d}/ca.pem", "--json"]
    walls, slowest = [], []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        out = subprocess.run(both, capture_output=True, text=True)
        walls.append((time.perf_counter() - t0) * 1000)
        report = json.loads(out.stdout)
        slowest.append(max(o["timings_ms"]["total"] for o in report["observations"]))
    w, s = statistics.median(walls), statistics.median(slowest)
    print()
    print(f"One ad-hoc probe, edge slowed 100 ms and origin 200 ms, median of {RUNS} (ms)")
    print(f"{'probe wall time (process start included)':<44}{w:>10.2f}")
    print(f"{'its slowest route (origin page, total)':<44}{s:>10.2f}")
    print(f"{'ratio':<44}{w / s:>10.3f}")


def main():
    build_probe()
    with nginx_lab("probe-bench-") as (d, port):
        probe_phases(d, port), curl_phases(d, port)  # warm up caches and the page cache
        samples = {"probe": [], "curl": []}
        for _ in range(RUNS):  # interleaved, so drift hits both alike
            samples["probe"].append(probe_phases(d, port))
            samples["curl"].append(curl_phases(d, port))
        print(f"Phase timings on loopback, median of {RUNS} interleaved requests each (ms)")
        print(f"{'phase':<10}{'probe':>10}{'curl':>10}{'diff':>10}{'median |diff|':>15}")
        for phase in ("connect", "tls", "ttfb", "transfer", "total"):
            p = statistics.median(s[phase] for s in samples["probe"])
            c = statistics.median(s[phase] for s in samples["curl"])
            pairs = statistics.median(abs(a[phase] - b[phase])
                                      for a, b in zip(samples["probe"], samples["curl"]))
            print(f"{phase:<10}{p:>10.3f}{c:>10.3f}{p - c:>+10.3f}{pairs:>15.3f}")
        print(f"reference: bare OpenSSL handshake, context prebuilt (python ssl): "
              f"{python_tls_handshake(d, port):.3f} ms")
        bare = rustls_tls_handshake(d, port)
        ours = statistics.median(s["tls"] for s in samples["probe"])
        print(f"reference: bare rustls handshake, same provider, ALPN and no resumption "
              f"(examples/bare_handshake.rs): {bare:.3f} ms; probe's tls phase {ours:.3f} ms, "
              f"{ours - bare:+.3f} ms above it")

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

        injected(d, port)
        side_by_side(d, port)


if __name__ == "__main__":
    main()
