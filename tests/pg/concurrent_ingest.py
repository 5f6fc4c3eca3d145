#!/usr/bin/env python3
"""4 processes ingest 4 shards of one folder into one PostgreSQL manifest at once; one of them is
killed (SIGKILL) mid-way and restarted. Every image must be in the manifest exactly once, with the
same rows and the same dataset digest as a single-process ingest into an SQLite manifest.

Needs OBORO_TEST_PG (tests/pg/with_server.sh sets it); exits 77 (ctest: skipped) without it.
  concurrent_ingest.py --oboro build/oboro --workdir build/pg_concurrent [--images 1200]
"""
import argparse, functools, hashlib, os, shutil, signal, subprocess, sys, time

print = functools.partial(print, flush=True)  # noqa: A001 — lines reach ctest's log in order


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--images", type=int, default=1200)
    a = ap.parse_args()
    server = os.environ.get("OBORO_TEST_PG", "")
    if not server:
        print("skipped: OBORO_TEST_PG is not set (run under tests/pg/with_server.sh)")
        return 77
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    data = os.path.join(a.workdir, "data")
    run([a.oboro, "data", "synth", "-o", data, "-n", str(a.images), "--size", "48", "--seed", "7"])

    # Reference: one process, SQLite.
    ref = os.path.join(a.workdir, "ref.db")
    run([a.oboro, "data", "ingest", data, "--manifest", ref, "-q"])

    # The kill races the workers (a shard takes well under a second here): an attempt whose worker 1 finished
    # before it could be killed mid-way is discarded and the scenario starts again in a fresh schema.
    for attempt in range(5):
        schema = "oboro_concurrent_%d_%d" % (os.getpid(), attempt)
        psql(server, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s" % (schema, schema))
        target = server + " options=-csearch_path=" + schema

        # application_name per worker: the test can find each worker's connections.
        def start(i):
            cmd = [a.oboro, "data", "ingest", data, "--manifest", target + " application_name=oboro_w%d" % i,
                   "--shard", "%d/4" % i, "--batch", "20", "-q"]
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        procs = [start(i) for i in range(4)]
        # Kill worker 1 once at least one batch is committed and it is still working.
        victim = procs[1]
        deadline = time.time() + 120
        killed_mid_way = False
        while time.time() < deadline:
            n = int(psql(server, "SELECT count(*) FROM pg_tables WHERE schemaname='%s' AND tablename='images'" % schema) or 0)
            done = int(psql(server, "SELECT count(*) FROM %s.images" % schema)) if n else 0
            if victim.poll() is not None:
                break
            if done >= 40:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed_mid_way = True
                break
            time.sleep(0.005)
        if killed_mid_way:
            break
        print("attempt %d: worker 1 finished before it could be killed mid-way; again" % (attempt + 1))
        for p in procs:
            p.communicate(timeout=600)
        psql(server, "DROP SCHEMA %s CASCADE" % schema)
    if not killed_mid_way:
        print("FAIL: worker 1 finished before it could be killed mid-way in 5 attempts (make --images larger)")
        return 1
    left = int(psql(server, "SELECT count(*) FROM %s.images" % schema))
    print("killed worker 1 mid-way: %d of %d images in the manifest at that moment" % (left, a.images))
    # The others finish their shards, then find shard 1 abandoned (started, unfinished, unlocked) and take it over.
    outs = []
    for p in procs[:1] + procs[2:]:
        out, err = p.communicate(timeout=600)
        outs.append(out)
        if p.returncode != 0:
            print("FAIL: a worker exited %d:\n%s%s" % (p.returncode, out, err))
            return 1
    took = sum("took over 1 shard" in o for o in outs)
    after = int(psql(server, "SELECT count(*) FROM %s.images" % schema))
    print("the 3 other workers finished; %d took over shard 1; %d of %d images now" % (took, after, a.images))
    if took != 1 or after != a.images:
        print("FAIL: shard 1 of the killed worker was not taken over exactly once")
        return 1
    # The killed worker, restarted, finds its shard done: nothing added, nothing duplicated.
    restarted = start(1)
    out, err = restarted.communicate(timeout=600)
    if restarted.returncode != 0 or " 0 added" not in out:
        print("FAIL: the restarted worker (exit %d) added rows or failed:\n%s%s" % (restarted.returncode, out, err))
        return 1

    # Exactly once, and the same rows as the single-process SQLite ingest.
    n, distinct = psql(server, "SELECT count(*), count(DISTINCT path) FROM %s.images" % schema).split("|")
    caps = int(psql(server, "SELECT count(*) FROM %s.captions" % schema))
    feats = int(psql(server, "SELECT count(*) FROM %s.features" % schema))
    ok = True
    for name, got in (("images", int(n)), ("distinct paths", int(distinct)), ("features", feats)):
        if got != a.images:
            print("FAIL: %s = %d, expected %d" % (name, got, a.images))
            ok = False
    pg_rows = listing(a.oboro, target)
    ref_rows = listing(a.oboro, ref)
    ref_caps = len(ref_rows)  # synth writes one caption per image
    if caps != ref_caps:
        print("FAIL: %d captions, expected %d" % (caps, ref_caps))
        ok = False
    if pg_rows != ref_rows:
        print("FAIL: the rows differ from a single-process ingest (%d vs %d rows)" % (len(pg_rows), len(ref_rows)))
        ok = False
    d_pg, d_ref = digest(pg_rows), digest(ref_rows)
    print("dataset digest: 4 processes (PostgreSQL) %s, 1 process (SQLite) %s" % (d_pg, d_ref))
    if d_pg != d_ref:
        ok = False
    psql(server, "DROP SCHEMA %s CASCADE" % schema)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def psql(server, sql):
    return subprocess.run(["psql", server, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def listing(oboro, manifest):
    """(sha256, status, licence, WxH, path) of every image, sorted."""
    out = subprocess.run([oboro, "data", "list", "--manifest", manifest, "--long"], check=True, capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split("\t")
        rows.append((f[0], f[1], f[2], f[3], f[6]))
    return sorted(rows)


def digest(rows):
    """The dataset digest (docs/data.md): sha256 of the sorted "<sha256> <licence>\\n" lines of the active images."""
    lines = sorted("%s %s\n" % (r[0], r[2]) for r in rows if r[1] == "active")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


if __name__ == "__main__":
    try:
        rc = main()
    except Exception:  # noqa: BLE001 — shown on stdout, which ctest prints on failure
        import traceback
        traceback.print_exc(file=sys.stdout)
        rc = 1
    sys.stdout.flush()
    sys.exit(rc)
