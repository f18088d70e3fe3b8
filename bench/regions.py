#!/usr/bin/env python3
"""Write cost of regions: N sites (default 10,000) probed by three regions sharing one
PostgreSQL 15 store, against one prober on its SQLite file, in one run.

The targets: the local nginx under its own URL per site (TLS 1.3, a fresh connection per
probe), as bench/scale.py. PostgreSQL is Debian's postgresql-15, started here (initdb in a temp
dir, unix socket, default settings but fsync kept on). Rounds:
  sqlite     one `probe run` pass over the sites on a SQLite store (after a first pass that
             creates it);
  postgres   three `probe run --region R` passes at once, one per region, on the shared store
             (after a first round that creates it): every site written and decided three times.
Measured per round:
  wall s          first start to last exit;
  results/s       results written per second of wall;
  CPU ms/probe    user + system seconds of the probe processes, per result (PostgreSQL's own
                  CPU is shown apart: the server's processes, from /proc);
  bytes/result    growth of the store per result written: SQLite's pages in use (everything);
                  PostgreSQL's results table with its indexes and TOAST (the history: the
                  per-site tables are rewritten, their old row versions reclaimed by autovacuum);
  GB / 30 days    that, for the sites probed every minute by the round's regions, kept 30 days
                  (the default retention).

Everything listens on 127.0.0.1 or a unix socket. Needs: nginx, openssl, postgresql-15, a release
build of probe (built here). Each process is killed after PASS_TIMEOUT seconds.
Usage: python3 bench/regions.py [SITES]
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import PROBE, SITE, STATIC, build_probe, free_port, nginx_lab

SITES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
REGIONS = ["eu-west", "us-east", "ap-south"]
PASS_TIMEOUT = 600
PG_BIN = "/usr/lib/postgresql/15/bin"
DAY_RESULTS_PER_SITE = 24 * 60


def config(d, port, name, store_lines):
    lines = ["defaults:", "  interval: 1m", "  timeout: 5s", f"  ca_file: {d}/ca.pem", "sites:"]
    for i in range(SITES):
        lines.append(f'  - {{ name: s{i}, url: "https://{SITE}{STATIC}?site={i}", edge: "127.0.0.1:{port}" }}')
    lines += ["alerts:", "  confirm_retries: 0", "store:", *store_lines, ""]
    path = f"{d}/{name}.yaml"
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def run_all(commands, env):
    """Starts every command at once; returns (wall s, CPU s of them all)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in commands]
    timer = threading.Timer(PASS_TIMEOUT, lambda: [p.kill() for p in procs])
    timer.start()
    cpu = 0.0
    try:
        for p in procs:
            _, status, usage = os.wait4(p.pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
            code = os.waitstatus_to_exitcode(status)
            if code not in (0, 1, 2):
                sys.exit(f"probe: exit {code}: {p.stderr.read().decode()[-2000:]}")
    finally:
        timer.cancel()
    return time.perf_counter() - t0, cpu


def sqlite_bytes(path):
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size
    finally:
        db.close()


class Postgres:
    """initdb in a temp dir and the server on a unix socket there; as `postgres` when root."""

    def __init__(self, d):
        self.dir = d
        self.data = f"{d}/pg-data"
        self.socket = f"{d}/pg-run"
        self.port = free_port()
        os.makedirs(self.socket)
        os.chmod(self.socket, 0o777)
        os.chmod(d, 0o755)
        self.as_user = []
        if os.geteuid() == 0:
            os.makedirs(self.data, mode=0o700)
            shutil.chown(self.data, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.as_user, f"{PG_BIN}/initdb", "-D", self.data, "-U", "probe", "--auth=trust",
                        "--no-instructions", "-E", "UTF8", "--locale=C"], check=True, stdout=subprocess.DEVNULL)
        self.server = subprocess.Popen([*self.as_user, f"{PG_BIN}/postgres", "-D", self.data, "-k", self.socket,
                                        "-h", "", "-p", str(self.port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if self.psql("postgres", "SELECT 1") == "1":
                break
            time.sleep(0.1)
        else:
            sys.exit("postgres did not start")
        self.psql("postgres", "CREATE DATABASE probe OWNER probe")
        self.url = f"postgresql://probe@/probe?host={self.socket}&port={self.port}"

    def psql(self, db, sql):
        out = subprocess.run([f"{PG_BIN}/psql", "-h", self.socket, "-p", str(self.port), "-U", "probe", "-d", db,
                              "-AtXq", "-c", sql], capture_output=True, text=True)
        return out.stdout.strip()

    def bytes(self):
        """The history's size: the results table with its indexes and TOAST. (The per-site
        tables, latest reports and states, are rewritten in place of older row versions that
        autovacuum reclaims: they do not grow with the history.)"""
        self.psql("probe", "VACUUM probe.results")
        return int(self.psql("probe", "SELECT pg_total_relation_size('probe.results')"))

    def cpu_seconds(self):
        """User + system seconds of every server process (the postmaster's children included)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"postgres" not in f.read().split(b"\0")[0]:
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            except OSError:
                continue
        return total / ticks

    def stop(self):
        self.server.terminate()
        self.server.wait()


def main():
    build_probe()
    env = dict(os.environ)
    with nginx_lab("probe-regions-") as (d, port):
        # SQLite, one prober.
        sqlite_config = config(d, port, "sqlite", [f"  path: {d}/sqlite.sqlite"])
        run_all([[PROBE, "run", "-c", sqlite_config]], env)
        before = sqlite_bytes(f"{d}/sqlite.sqlite")
        wall, cpu = run_all([[PROBE, "run", "-c", sqlite_config]], env)
        grown = sqlite_bytes(f"{d}/sqlite.sqlite") - before
        rows = [("SQLite, 1 region", wall, SITES, cpu, None, grown, 1)]

        pg_dir = tempfile.mkdtemp(prefix="probe-regions-pg-")
        pg = Postgres(pg_dir)
        try:
            env["PROBE_DATABASE_URL"] = pg.url
            pg_config = config(d, port, "postgres", ["  url_env: PROBE_DATABASE_URL"])
            commands = [[PROBE, "run", "-c", pg_config, "--region", r] for r in REGIONS]
            run_all(commands, env)
            before, pg_cpu = pg.bytes(), pg.cpu_seconds()
            wall, cpu = run_all(commands, env)
            grown = pg.bytes() - before
            server_cpu = pg.cpu_seconds() - pg_cpu
            results = int(pg.psql("probe", "SELECT COUNT(*) FROM probe.results"))
            if results != 2 * len(REGIONS) * SITES:
                sys.exit(f"expected {2 * len(REGIONS) * SITES} results, found {results}")
            rows.append((f"PostgreSQL, {len(REGIONS)} regions at once", wall, len(REGIONS) * SITES, cpu, server_cpu,
                         grown, len(REGIONS)))
        finally:
            pg.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)

    print(f"{SITES} sites; one pass per region")
    print(f"{'store':<32}{'wall s':>8}{'results/s':>11}{'CPU ms/probe':>14}{'server CPU ms/result':>22}"
          f"{'bytes/result':>14}{'GB / 30 days':>14}")
    for name, wall, results, cpu, server, grown, regions in rows:
        per = grown / results
        month = per * SITES * regions * DAY_RESULTS_PER_SITE * 30 / 1e9
        server_text = f"{server * 1000 / results:.3f}" if server is not None else "-"
        print(f"{name:<32}{wall:>8.2f}{results / wall:>11.0f}{cpu * 1000 / results:>14.3f}{server_text:>22}"
              f"{per:>14.0f}{month:>14.1f}")


if __name__ == "__main__":
    main()
