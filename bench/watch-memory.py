#!/usr/bin/env python3
"""Peak RSS of `probe watch` with 1,000 and 10,000 (or the given numbers of) configured sites,
all probed for real: every site is the local nginx (TLS 1.3, keep-alive off) under its own URL,
on a 30 s interval — longer for more than 9,000 sites, at most 300 probes a second on this
machine (100,000 sites: 334 s) — so the whole list is probed once within the first interval
(first probes spread over it). The watch runs for the interval plus 10 s, with the feed server on
(`--listen`, rendering the feeds from the store), then its high-water mark (VmHWM) is read and it
is stopped with SIGTERM.

Usage: python3 bench/watch-memory.py [--no-feeds] [SITES ...]   (default: 1000 10000)"""

import signal
import sqlite3
import subprocess
import sys
import time

from benchlib import PROBE, build_probe, free_port, nginx_lab, sites_config

MIN_INTERVAL = 30
MAX_RATE = 300  # probes a second


def interval_for(sites):
    return max(MIN_INTERVAL, -(-sites // MAX_RATE))


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    feeds = "--no-feeds" not in sys.argv
    counts = [int(a) for a in sys.argv[1:] if a.isdigit()] or [1000, 10000]
    build_probe()
    rows = []
    with nginx_lab("probe-bench-") as (d, port):
        for sites in counts:
            interval = interval_for(sites)
            path = sites_config(d, port, sites, f"{interval}s", f"watch-{sites}")
            listen = ["--listen", f"127.0.0.1:{free_port()}"] if feeds else []
            proc = subprocess.Popen([PROBE, "watch", "-c", path, *listen],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(interval + 10)
            peak, now = vm(proc.pid, "VmHWM"), vm(proc.pid, "VmRSS")
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            with sqlite3.connect(f"{d}/watch-{sites}.sqlite") as db:
                probed = db.execute("SELECT COUNT(DISTINCT site) FROM results").fetchone()[0]
                results = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            rows.append((sites, interval, probed, results, peak, now))
        served = "feeds served" if feeds else "no feed server"
        print(f"probe watch, run for the interval plus 10 s, {served}")
        print(f"{'sites':>8}{'interval s':>11}{'probed':>8}{'results':>9}{'peak RSS MB':>13}{'RSS at end MB':>15}")
        for sites, interval, probed, results, peak, now in rows:
            print(f"{sites:>8}{interval:>11}{probed:>8}{results:>9}{peak:>13.1f}{now:>15.1f}")


if __name__ == "__main__":
    main()
