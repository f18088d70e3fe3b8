#!/usr/bin/env python3
"""Peak RSS of the torture suite (tests/torture.rs): every hostile server and the probes against
them run in one test process, so that process's high-water mark bounds what `probe` holds while
servers send 100 MB bodies, 1 MB header lines, 10,000 headers, endless bodies and the rest.

Builds the test binary (release profile, as deployed), runs it once per round, prints the peak
RSS of each round and the largest. Usage: python3 bench/torture-rss.py [ROUNDS]"""

import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3


def test_binary():
    out = subprocess.run(
        ["cargo", "test", "--release", "--test", "torture", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "torture" \
                and message.get("executable"):
            return message["executable"]
    sys.exit("no torture test binary built")


def main():
    binary = test_binary()
    peaks = []
    for _ in range(ROUNDS):
        proc = subprocess.Popen([binary, "--test-threads=1"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("the torture suite failed; run cargo test --test torture")
        peaks.append(usage.ru_maxrss / 1024)
    print("torture suite peak RSS per round (MB):", " ".join(f"{p:.1f}" for p in peaks))
    print(f"largest: {max(peaks):.1f} MB")


if __name__ == "__main__":
    main()
