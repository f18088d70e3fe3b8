#!/usr/bin/env python3
"""Scale table: one `probe run` pass over 1,000 / 10,000 / 100,000 sites (or the sizes given),
all of them the same local nginx under their own URLs (TLS 1.3, a fresh connection per probe).

For each size it runs two passes on a new store and prints, for the second pass (the first one
creates the store):
  wall s        the whole process, start to exit (reading the config, probing, storing);
  CPU ms/probe  user + system seconds of the process, per site;
  peak RSS MB   the process's high-water mark (getrusage of the child);
  store MB/day  what one pass added to the store's pages in use (the WAL folded in), times the
                passes a day at the config's 1-minute interval;
  check-config RSS MB  the peak RSS of `probe check-config` on the same file (loading the config).

Everything listens on 127.0.0.1. Needs: nginx, openssl, a release build of probe (built here).
Each process is killed after PASS_TIMEOUT seconds. Usage: python3 bench/scale.py [SITES ...]
"""

import os
import sqlite3
import subprocess
import sys
import threading
import time

from benchlib import PROBE, build_probe, nginx_lab, sites_config

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


def measured(args):
    """Runs probe with `args`, killed after PASS_TIMEOUT seconds; returns (wall s, CPU s, peak RSS
    MB) of that process alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([PROBE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = threading.Timer(PASS_TIMEOUT, proc.kill)
    deadline.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    finally:
        deadline.cancel()
    wall = time.perf_counter() - t0
    if wall >= PASS_TIMEOUT:
        sys.exit(f"probe {args[0]} took over the {PASS_TIMEOUT} s bound")
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1, 2):  # 1 and 2 are site verdicts; 3 (UNKNOWN), a panic or a kill are not
        sys.exit(f"probe {' '.join(args)}: exit {code}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main():
    build_probe()
    with nginx_lab("probe-scale-") as (d, port):
        print(f"{'sites':>8}{'wall s':>10}{'CPU ms/probe':>14}{'peak RSS MB':>13}{'store MB/day':>14}"
              f"{'check-config RSS MB':>21}")
        for sites in SIZES:
            name = f"scale{sites}"
            config = sites_config(d, port, sites, "1m", name)
            _, _, config_rss = measured(["check-config", "-c", config])
            measured(["run", "-c", config])
            before = store_bytes(d, name)
            wall, cpu, rss = measured(["run", "-c", config])
            added = store_bytes(d, name) - before
            print(f"{sites:>8}{wall:>10.2f}{cpu * 1000 / sites:>14.3f}{rss:>13.1f}"
                  f"{added * PASSES_PER_DAY / 1e6:>14.0f}{config_rss:>21.1f}")


if __name__ == "__main__":
    main()
