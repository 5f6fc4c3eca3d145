#!/usr/bin/env python3
"""Memory over many generations in one process (issue 21): `oboro serve` with the bundled default model answers
--count txt2img requests (32x32, --steps steps, a new seed each); the server's resident set (VmRSS of
/proc/PID/status) is read after generation --warm and after the last. The test passes when the growth between
the two stays within --margin-kib per generation past --warm plus --margin-mib in all. Each finished request
leaves, by design, a PNG in the outputs folder, one line in its history index, and in memory a 24-byte history
entry and one finished-job record (up to --keep-jobs, default 4,096; docs/reliability.md has the figures); the
per-generation margin covers that, the fixed margin allocator noise. With --keep-jobs below --warm the job records
stop growing too.

  rss_generations.py --oboro build/oboro --workdir DIR [--count 1000] [--warm 100] [--keep-jobs N]
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serve"))
from serve_util import Server, call  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--margin-mib", type=float, default=4.0)
    ap.add_argument("--margin-kib", type=float, default=4.0)
    ap.add_argument("--keep-jobs", type=int, default=0, help="passed to oboro serve (0: its default)")
    a = ap.parse_args()
    wd = os.path.abspath(a.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    extra = ["--keep-jobs", str(a.keep_jobs)] if a.keep_jobs else []
    srv = Server(os.path.abspath(a.oboro), os.path.join(wd, "outputs"), "--threads", "1", *extra)
    samples = []
    t0 = time.monotonic()
    try:
        for i in range(1, a.count + 1):
            r = call(srv.base, "POST", "/sdapi/v1/txt2img",
                     {"prompt": "a red circle", "width": 32, "height": 32, "steps": a.steps, "seed": i})
            if r.status != 200:
                sys.exit(f"FAIL: generation {i}: HTTP {r.status}: {r.body[:300]!r}")
            if i == a.warm or i == a.count or i % max(1, a.count // 10) == 0:
                samples.append((i, rss_kib(srv.proc.pid)))
    finally:
        rc = srv.stop()
    dt = time.monotonic() - t0
    base = dict(samples)[a.warm]
    end = dict(samples)[a.count]
    allowed = a.margin_mib * 1024 + a.margin_kib * (a.count - a.warm)
    print("generation  VmRSS (MiB)")
    for i, kib in samples:
        print(f"{i:10d}  {kib / 1024:8.1f}")
    print(f"{a.count} generations in {dt:.1f} s ({dt / a.count * 1000:.0f} ms each); VmRSS {base / 1024:.1f} MiB at "
          f"{a.warm}, {end / 1024:.1f} MiB at {a.count}: {(end - base) / 1024:+.2f} MiB (allowed {allowed / 1024:.2f} MiB)")
    if rc != 0:
        sys.exit(f"FAIL: the server exited {rc} on SIGTERM")
    if end - base > allowed:
        sys.exit("FAIL: the resident set grew more than the margin")
    print("PASS")


if __name__ == "__main__":
    main()
