#!/usr/bin/env python3
"""Loopback load benchmark of `oboro serve` (issue 18; a benchmark, not a timed test).

Starts a server on 127.0.0.1 with the bundled default model, submits N requests at once (N threads released
together, POST /oboro/v1/jobs), then polls every accepted job until it finishes. Every request must end as a
completed job or a 429 (queue full, with Retry-After): none lost. Prints the process's RSS before and after, p50/p99
latency (submission → image written), images/s, and the machine's CPU.

    python3 bench/serve_load.py --oboro build/oboro [--requests 1000] [--max-queue 300] [--steps 8] [--json]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "serve"))
from serve_util import Server, call  # noqa: E402


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = [l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")]
        cpus = [l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("CPU(s)")]
        avx512 = "avx512f" in out
        return "%s, %s CPUs%s" % (name[0] if name else "?", cpus[0] if cpus else "?", ", AVX-512" if avx512 else "")
    except OSError:
        return "?"


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--max-queue", type=int, default=300)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1800, help="give up polling after this many seconds")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the burst against the same server (RSS after each)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="oboro-serve-load-")
    srv = Server(a.oboro, os.path.join(work, "outputs"), "--max-queue", str(a.max_queue), "--http-threads", "32", "--quiet")
    try:
        body = {"prompt": "pixel art style, short hair, smile, blue background", "steps": a.steps,
                "width": 32, "height": 32, "seed": 1}
        warm = call(srv.base, "POST", "/sdapi/v1/txt2img", body)  # the models load once, before the measurement
        assert warm.status == 200, warm.body
        rss_before = rss(srv.proc.pid)

        rss_rounds, lost_total = [], 0
        for rnd in range(a.rounds):
            results = [None] * a.requests
            gate = threading.Barrier(a.requests + 1)

            def submit(i):
                gate.wait()
                t0 = time.time()
                try:
                    r = call(srv.base, "POST", "/oboro/v1/jobs", dict(body, seed=1000 + i + 100000 * rnd), timeout=300)
                    results[i] = (t0, r.status, r.json() if r.status == 202 else r.headers.get("Retry-After"))
                except Exception as e:  # noqa: BLE001 (counted as lost)
                    results[i] = (t0, "error: %s" % e, None)

            threads = [threading.Thread(target=submit, args=(i,)) for i in range(a.requests)]
            for t in threads:
                t.start()
            t_start = time.time()
            gate.wait()
            for t in threads:
                t.join()
            t_submitted = time.time()

            accepted = {r[2]["id"]: r[0] for r in results if r and r[1] == 202}
            rejected = [r for r in results if r and r[1] == 429]
            with_retry_after = sum(1 for r in rejected if r[2] and int(r[2]) >= 1)
            other = [r for r in results if not r or r[1] not in (202, 429)]
            done, pending = {}, set(accepted)
            deadline = time.time() + a.timeout
            with ThreadPoolExecutor(8) as pool:
                while pending and time.time() < deadline:
                    snaps = list(pool.map(lambda i: call(srv.base, "GET", "/oboro/v1/jobs/" + i), list(pending)))
                    for jid, s in zip(list(pending), snaps):
                        if s.status == 200 and s.json()["status"] in ("completed", "failed", "cancelled"):
                            done[jid] = s.json()
                            pending.discard(jid)
                    if pending:
                        time.sleep(0.5)
            rss_rounds.append(round(rss(srv.proc.pid) / 2 ** 20, 1))
            lost_total += len(pending) + len(other)
        rss_after = rss(srv.proc.pid)
        completed = {k: v for k, v in done.items() if v["status"] == "completed"}
        lat = [v["finished"] - accepted[k] for k, v in completed.items()]
        images = sum(len(v["images"]) for v in completed.values())
        t_last = max((v["finished"] for v in completed.values()), default=t_start)
        gen_times = [v["finished"] - v["started"] for v in completed.values()]
        peak = [l for l in call(srv.base, "GET", "/metrics").body.decode().splitlines()
                if l.startswith("oboro_peak_resident_memory_bytes ")]
        report = {
            "cpu": cpu_model(),
            "requests": a.requests, "max_queue": a.max_queue, "steps": a.steps, "size": "32x32",
            "accepted_202": len(accepted), "rejected_429": len(rejected), "429_with_retry_after": with_retry_after,
            "other_responses": len(other), "completed": len(completed),
            "failed": sum(1 for v in done.values() if v["status"] == "failed"),
            "cancelled": sum(1 for v in done.values() if v["status"] == "cancelled"),
            "lost": len(pending) + len(other), "lost_all_rounds": lost_total,
            "submit_seconds": round(t_submitted - t_start, 2),
            "latency_p50_s": round(pct(lat, 50), 2), "latency_p99_s": round(pct(lat, 99), 2),
            "generation_s_per_image": round(sum(gen_times) / max(1, len(gen_times)), 3),
            "images_per_s": round(images / max(1e-9, t_last - t_start), 2),
            "rss_before_mib": round(rss_before / 2 ** 20, 1), "rss_after_mib": round(rss_after / 2 ** 20, 1),
            "rss_after_each_round_mib": rss_rounds,
            "peak_rss_mib": round(float(peak[0].split()[1]) / 2 ** 20, 1) if peak else None,
            "other_kinds": sorted({str(r[1])[:80] if r else "no result" for r in other}),
            "history_images": call(srv.base, "GET", "/oboro/v1/history?limit=1").json()["total"],
        }
    finally:
        code = srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["exit_code_after_sigterm"] = code
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            print("%-24s %s" % (k, v))
    ok = report["lost_all_rounds"] == 0 and report["completed"] + report["rejected_429"] == a.requests and code == 0
    print("OK: every request completed or got 429" if ok else "FAILED: requests were lost", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
