#!/usr/bin/env python3
"""3 processes build the cache of one PostgreSQL manifest at once (`oboro data cache --shard i/3`, one shared
--out folder); one of them is killed (SIGKILL) once it has committed some entries, and restarted after the others
have finished. The others must take its shard over; the restarted worker must find nothing left to do. At the end
every cache entry (key, kind) and the tensor bytes it points at, and every image's cache row, equal a single
process's cache of the same images in an SQLite manifest; no key twice, every entry's shard file present, no temp
file left.

Needs OBORO_TEST_PG (tests/pg/with_server.sh sets it); exits 77 (ctest: skipped) without it.
  concurrent_cache.py --oboro build/oboro --workdir build/pg_cache [--images 600]
"""
import argparse, functools, os, shutil, signal, subprocess, sqlite3, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
from crash_data import tensor_bytes  # noqa: E402
from crash_util import temp_files  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from concurrent_ingest import psql, run  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001 — lines reach ctest's log in order
WORKERS = 3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--images", type=int, default=600)
    a = ap.parse_args()
    server = os.environ.get("OBORO_TEST_PG", "")
    if not server:
        print("skipped: OBORO_TEST_PG is not set (run under tests/pg/with_server.sh)")
        return 77
    oboro, wd = os.path.abspath(a.oboro), os.path.abspath(a.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    data = os.path.join(wd, "data")
    run([oboro, "data", "synth", "-o", data, "-n", str(a.images), "--size", "48", "--seed", "11"])

    # Reference: one process, SQLite.
    ref_db, ref_cache = os.path.join(wd, "ref.db"), os.path.join(wd, "ref_cache")
    prepare(oboro, data, ref_db)
    run(cache_cmd(oboro, ref_db, ref_cache))
    ref = cache_content(ref_db, ref_cache)
    print("reference: %d cache entries, %d image cache rows (one process, SQLite)" % (len(ref[0]), len(ref[1])))

    # The kill races the workers: an attempt whose worker 1 finished before it could be killed with some of its
    # entries committed is discarded and the scenario starts again in a fresh schema and folder.
    for attempt in range(5):
        schema = "oboro_cache_%d_%d" % (os.getpid(), attempt)
        psql(server, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s" % (schema, schema))
        target = server + " options=-csearch_path=" + schema
        out = os.path.join(wd, "cache")
        shutil.rmtree(out, ignore_errors=True)
        prepare(oboro, data, target)
        before = int(psql(server, "SELECT count(*) FROM %s.cache_entries" % schema))

        def start(i):
            return subprocess.Popen(cache_cmd(oboro, target, out) + ["--shard", "%d/%d" % (i, WORKERS)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        procs = [start(i) for i in range(WORKERS)]
        victim, killed_mid_way, deadline = procs[1], False, time.time() + 120
        while time.time() < deadline and victim.poll() is None:
            # worker 1's committed entries: the shard files it names carry "-s1of3"
            mine = int(psql(server, "SELECT count(*) FROM %s.cache_entries WHERE shard LIKE '%%-s1of%d%%'"
                            % (schema, WORKERS)))
            if mine >= 20:
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
    else:
        print("FAIL: worker 1 finished before it could be killed mid-way in 5 attempts (make --images larger)")
        return 1
    at_kill = int(psql(server, "SELECT count(*) FROM %s.cache_entries" % schema)) - before
    print("killed worker 1 with %d entries of its shard committed (%d of %d entries in all at that moment)"
          % (mine, at_kill, len(ref[0])))
    outs = []
    for p in procs[:1] + procs[2:]:
        o, err = p.communicate(timeout=600)
        outs.append(o)
        if p.returncode != 0:
            print("FAIL: a worker exited %d:\n%s%s" % (p.returncode, o, err))
            return 1
    took = sum("took over 1 shard" in o for o in outs)
    print("the %d other workers finished; %d took over shard 1" % (WORKERS - 1, took))
    restarted = start(1)
    o, err = restarted.communicate(timeout=600)
    if restarted.returncode != 0 or ": 0 latents written" not in o:
        print("FAIL: the restarted worker (exit %d) wrote latents or failed:\n%s%s" % (restarted.returncode, o, err))
        return 1

    snap = os.path.join(wd, "snapshot.db")
    if os.path.exists(snap):
        os.remove(snap)
    run([oboro, "data", "manifest", "copy", target, snap])
    got = cache_content(snap, out)
    ok = took == 1
    if not ok:
        print("FAIL: shard 1 of the killed worker was taken over %d times, expected once" % took)
    for name, r, g in (("cache entries", ref[0], got[0]), ("image cache rows", ref[1], got[1])):
        if g != r:
            diff = sorted(set(r) ^ set(g)) or [k for k in r if r[k] != g.get(k)]
            print("FAIL: %s differ from a single process's: %d vs %d, e.g. %s" % (name, len(g), len(r), diff[:3]))
            ok = False
    if got[2]:
        print("FAIL: %d entries name a shard file that is not there or lacks their tensor: %s" % (len(got[2]), got[2][:3]))
        ok = False
    if temp_files(out):
        print("FAIL: temp files left: %s" % temp_files(out))
        ok = False
    print("%d entries, %d image cache rows, each equal to the single-process cache's; %d shard files"
          % (len(got[0]), len(got[1]), len([f for f in os.listdir(out) if f.endswith(".safetensors")])))
    psql(server, "DROP SCHEMA %s CASCADE" % schema)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def prepare(oboro, data, manifest):
    run([oboro, "data", "ingest", data, "--manifest", manifest, "-q"])
    run([oboro, "data", "bucket", "--manifest", manifest, "--stage", "1", "--upscale"])


def cache_cmd(oboro, manifest, out):
    return [oboro, "data", "cache", "--manifest", manifest, "--out", out, "--stage", "1", "--shard-mb", "1", "-q"]


def cache_content(db, cache_dir):
    """({key: (kind, tensor shape and bytes)}, {(image path, stage, codec): (latent_key, text_key)}, [broken])"""
    c = sqlite3.connect(db)
    try:
        entries = c.execute("SELECT key, kind, shard, tensor FROM cache_entries").fetchall()
        dup = c.execute("SELECT COUNT(*) - COUNT(DISTINCT key) FROM cache_entries").fetchone()[0]
        rows = c.execute("SELECT i.path, ic.stage, ic.codec, ic.latent_key, ic.text_key FROM image_cache ic "
                         "JOIN images i ON i.id = ic.image_id").fetchall()
    finally:
        c.close()
    content, broken = {}, []
    for key, kind, shard, tensor in entries:
        try:
            content[key] = (kind, tensor_bytes(os.path.join(cache_dir, shard), tensor))
        except (OSError, KeyError, ValueError) as e:
            broken.append("%s: %s" % (key, e))
    if dup:
        broken.append("%d duplicate keys" % dup)
    return content, {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}, broken


if __name__ == "__main__":
    sys.exit(main())
