#!/usr/bin/env python3
"""Scale table: one `probe run` pass over 1,000 / 10,000 / 100,000 sites (or the sizes given),
all of them the same local nginx under their own URLs (TLS 1.3, a fresh connection per probe).

For each size it runs two passes on a new store and prints, for the second pass (the first one
creates the store):
  wall s        the whole process, start to exit (reading the config, probing, storing);
  CPU ms/probe  user + system seconds of the process, per site;
  peak RSS MB   the process's high-water mark (getrusage of the child);
  store MB/day  what one pass added to the store's pages in use (the WAL folded in), times the passes a day at
                the config's 1-minute interval.

Everything listens on 127.0.0.1. Needs: nginx, openssl, a release build of probe (built here).
Each pass is bounded by PASS_TIMEOUT seconds. Usage: python3 bench/scale.py [SITES ...]
"""

import os
import sqlite3
import subprocess
import sys
import tempfile
import time

from benchlib import PROBE, build_probe, make_certs, sites_config, start_nginx

SIZES = [int(a) for a in sys.argv[1:]] or [1000, 10000, 100000]
PASS_TIMEOUT = 600
PASSES_PER_DAY = 24 * 60  # the config's interval is one minute


def store_bytes(d, name):
    """The store's pages in use, after folding the WAL into the database file."""
    db = sqlite3.connect(f"{d}/{name}.sqlite")
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size
    finally:
        db.close()


def one_pass(config):
    """Runs `probe run` once; returns (wall s, CPU s, peak RSS MB) of that process alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([PROBE, "run", "-c", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _, _, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    wall = time.perf_counter() - t0
    if wall > PASS_TIMEOUT:
        sys.exit(f"a pass took {wall:.0f} s, over the {PASS_TIMEOUT} s bound")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main():
    build_probe()
    d = tempfile.mkdtemp(prefix="probe-scale-")
    os.chmod(d, 0o755)
    make_certs(d)
    nginx, port = start_nginx(d)
    try:
        print(f"{'sites':>8}{'wall s':>10}{'CPU ms/probe':>14}{'peak RSS MB':>13}{'store MB/day':>14}")
        for sites in SIZES:
            name = f"scale{sites}"
            config = sites_config(d, port, sites, "1m", name)
            one_pass(config)
            before = store_bytes(d, name)
            wall, cpu, rss = one_pass(config)
            added = store_bytes(d, name) - before
            print(f"{sites:>8}{wall:>10.2f}{cpu * 1000 / sites:>14.3f}{rss:>13.1f}"
                  f"{added * PASSES_PER_DAY / 1e6:>14.0f}")
    finally:
        nginx.kill()


if __name__ == "__main__":
    main()
