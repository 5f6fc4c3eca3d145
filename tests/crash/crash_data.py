#!/usr/bin/env python3
"""Crash points of `oboro data ingest`, `oboro data cache` and `oboro data export` (issue 21): SIGKILL each at
--kills random moments
(wall-clock delays inside the run, and for the cache also the atomic writer's named crash points), rerun the same
command each time, and check against one uninterrupted run:
  ingest: `PRAGMA integrity_check` = ok; no duplicate or missing rows (one row per image path and per sha256);
          every image's columns (but the ingest/update timestamps), captions and features equal the reference's;
  cache:  integrity ok; the cache entries (key, kind, bucket, row in its shard) and the tensors they point at are
          byte-identical to the reference's, no two entries share a key; no temp file is left;
  export: a `--force` re-export over a previous export (3 images removed from the manifest since), killed and
          rerun: after every kill the folder's manifest.jsonl lists only files that are there and whole (the old
          or the new export); at the end the folder is file-for-file, byte-for-byte an uninterrupted export of the
          same manifest into a new folder; no temp file is left.

  crash_data.py --oboro build/oboro --workdir DIR [--kills 20] [--images 400] [--seed 1]
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crash_train import write_png  # noqa: E402
from crash_util import ATOMIC_POINTS, Timer, kill_run, log, run, temp_files  # noqa: E402

IMAGE_COLS = ("relpath, sha256, file_size, width, height, source, original, license, license_from, attribution, "
              "score, quality, status, reason, reason_kind, sig")


def make_images(d, n, seed):
    os.makedirs(d)
    r = random.Random(seed)
    for k in range(n):
        write_png(os.path.join(d, f"i{k:04d}.png"), 32, 32, [r.randrange(256) for _ in range(32 * 32 * 3)])
        with open(os.path.join(d, f"i{k:04d}.txt"), "w") as f:
            f.write(f"noise picture number {k}")


def manifest_dump(db):
    c = sqlite3.connect(db)
    try:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        rows = c.execute(f"SELECT {IMAGE_COLS} FROM images ORDER BY relpath").fetchall()
        dup_path = c.execute("SELECT COUNT(*) - COUNT(DISTINCT path) FROM images").fetchone()[0]
        dup_sha = c.execute("SELECT COUNT(*) - COUNT(DISTINCT sha256) FROM images").fetchone()[0]
        caps = c.execute("SELECT i.relpath, c.idx, c.origin, c.text FROM captions c JOIN images i ON i.id = c.image_id "
                         "ORDER BY 1, 2").fetchall()
        feats = c.execute("SELECT i.relpath, f.extractor, f.vec FROM features f JOIN images i ON i.id = f.image_id "
                          "ORDER BY 1, 2").fetchall()
        buckets = c.execute("SELECT i.relpath, b.stage, b.width, b.height, b.crop_x, b.crop_y, b.crop_w, b.crop_h "
                            "FROM buckets b JOIN images i ON i.id = b.image_id ORDER BY 1, 2").fetchall()
        cache = c.execute("SELECT * FROM cache_entries ORDER BY key").fetchall() if c.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'cache_entries'").fetchone() else []
        cache_cols = [d[0] for d in c.execute("SELECT * FROM cache_entries LIMIT 0").description] if cache else []
    finally:
        c.close()
    return {"ok": ok, "rows": rows, "dup_path": dup_path, "dup_sha": dup_sha, "captions": caps, "features": feats,
            "buckets": buckets, "cache": cache, "cache_cols": cache_cols}


def tensor_bytes(path, name):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    s, e = h[name]["data_offsets"]
    return h[name]["shape"], raw[8 + n + s:8 + n + e]


def cache_content(db, cache_dir):
    """Per entry key: its columns but the shard's file name, and the bytes of the tensor it names."""
    d = manifest_dump(db)
    cols = d["cache_cols"]
    out = {}
    for row in d["cache"]:
        r = dict(zip(cols, row))
        shard = os.path.join(cache_dir, r.pop("shard"))
        r.pop("created", None)  # a timestamp
        tensor = r.get("tensor") or r.get("name") or r["key"]
        try:
            out[r["key"]] = (json.dumps(r, sort_keys=True, default=str), tensor_bytes(shard, tensor))
        except (OSError, KeyError) as e:
            out[r["key"]] = ("unreadable", str(e))
    return d["ok"], len(d["cache"]), out


def kill_loop(name, cmd, rng, kills, t_ref, points):
    done, attempts, by_kind = 0, 0, {}
    while done < kills:
        attempts += 1
        if attempts > 4 * kills + 20:
            sys.exit(f"FAIL: {name}: only {done} of {kills} kills landed")
        if points and rng.random() < 0.5:
            kill = ("point", f"{rng.choice(points)}#{rng.randint(1, 3)}")
        else:
            kill = ("time", rng.uniform(0.02, max(0.05, t_ref)))
        rc, err, killed = kill_run(cmd, kill)
        if rc != 0 and not killed:
            sys.exit(f"FAIL: {name}: {' '.join(cmd)} exited {rc}:\n{err}")
        if not killed:
            return done, attempts, by_kind, False  # the work is finished: nothing left to kill
        done += 1
        kind = kill[1].split("#")[0] if kill[0] == "point" else "wall-clock"
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return done, attempts, by_kind, True


def folder_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def export_consistent(folder):
    """'' when every file manifest.jsonl lists is there with its sha256 (images) — else what is wrong."""
    mpath = os.path.join(folder, "manifest.jsonl")
    if not os.path.exists(mpath):
        return "no manifest.jsonl"
    import hashlib
    with open(mpath) as f:
        for line in f:
            rec = json.loads(line)
            p = os.path.join(folder, rec["file"])
            try:
                with open(p, "rb") as fh:
                    if hashlib.sha256(fh.read()).hexdigest() != rec["sha256"]:
                        return f"{rec['file']}: not the listed content"
            except OSError:
                return f"{rec['file']}: listed but missing"
    return ""


def check_export(oboro, wd, db, rng, kills, bad):
    ref_db, exp_db = os.path.join(wd, "export_ref.db"), os.path.join(wd, "export.db")
    shutil.copyfile(db, ref_db)
    shutil.copyfile(db, exp_db)
    folder, ref_folder = os.path.join(wd, "export"), os.path.join(wd, "export_ref")

    def export(d, out):
        return [oboro, "data", "export", "--manifest", d, "-o", out, "--mode", "copy", "--force", "-q"]

    run(export(exp_db, folder))  # the previous export
    with open(os.path.join(folder, "manifest.jsonl")) as f:
        removed = [json.loads(line)["sha256"] for line in f][:3]
    for d in (ref_db, exp_db):
        for h in removed:
            run([oboro, "data", "remove", "--manifest", d, "--hash", h, "--reason", "crash test"])
    clock = Timer()
    run(export(ref_db, ref_folder))
    t_export = clock()
    ref = folder_bytes(ref_folder)
    done = attempts = 0
    kinds = {}
    while done < kills and attempts < 4 * kills + 20:
        attempts += 1
        if rng.random() < 0.5:
            kill = ("point", f"{rng.choice(ATOMIC_POINTS)}#{rng.randint(1, 40)}")
        else:
            kill = ("time", rng.uniform(0.02, max(0.05, t_export)))
        rc, err, killed = kill_run(export(exp_db, folder), kill)
        if rc != 0 and not killed:
            bad.append(f"export: exited {rc}: {err.strip()[-300:]}")
            return
        if killed:
            done += 1
            kind = kill[1].split("#")[0] if kill[0] == "point" else "wall-clock"
            kinds[kind] = kinds.get(kind, 0) + 1
            problem = export_consistent(folder)
            if problem:
                bad.append(f"export: after a kill ({kill[1]}): {problem}")
    run(export(exp_db, folder))
    got = folder_bytes(folder)
    if got != ref:
        diff = sorted(f for f in set(ref) | set(got) if ref.get(f) != got.get(f))
        bad.append(f"export: {len(diff)} files differ from an uninterrupted export: {diff[:5]}")
    if temp_files(folder):
        bad.append(f"export: temp files left: {temp_files(folder)}")
    log(f"export: {len(ref)} files in {t_export:.2f} s uninterrupted; {done} kills "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}) in {attempts} attempts")
    if done < kills:
        bad.append(f"export: only {done} of {kills} kills landed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    oboro, wd = os.path.abspath(a.oboro), os.path.abspath(a.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    src = os.path.join(wd, "src")
    make_images(src, a.images, a.seed)
    rng = random.Random(a.seed)
    bad = []
    clock = Timer()

    def ingest(db):
        return [oboro, "data", "ingest", src, "--manifest", db, "--license", "CC0-1.0", "--batch", "8", "--threads",
                "1", "-q"]

    # ---- ingest, in batches of 8 images per transaction: kill, rerun, until the kills are spent
    ref_db, db = os.path.join(wd, "ref.db"), os.path.join(wd, "killed.db")
    t0 = clock()
    run(ingest(ref_db))
    t_ingest = clock() - t0
    rounds = kills_ingest = 0
    while kills_ingest < a.kills:  # each round starts a fresh manifest (an ingest that finished has nothing left)
        rounds += 1
        if rounds > 4 * a.kills:
            bad.append(f"ingest: only {kills_ingest} kills landed in {rounds - 1} rounds")
            break
        for p in (db, db + "-wal", db + "-shm", db + "-journal"):
            if os.path.exists(p):
                os.remove(p)
        n, _, _, _ = kill_loop("ingest", ingest(db), rng, a.kills - kills_ingest, t_ingest, [])
        kills_ingest += n
        run(ingest(db))
        ref, got = manifest_dump(ref_db), manifest_dump(db)
        if got["ok"] != "ok":
            bad.append(f"ingest: integrity_check {got['ok']}")
        if got["dup_path"] or got["dup_sha"]:
            bad.append(f"ingest: duplicate rows ({got['dup_path']} by path, {got['dup_sha']} by sha256)")
        for k in ("rows", "captions", "features"):
            if got[k] != ref[k]:
                bad.append(f"ingest: {k} differ ({len(ref[k])} in the reference, {len(got[k])} after the kills)")
    log(f"ingest: {a.images} images in {t_ingest:.2f} s uninterrupted; {kills_ingest} kills in {rounds} round(s)")

    # ---- cache (stage 1 buckets of both manifests first)
    for d in (ref_db, db):
        run([oboro, "data", "bucket", "--manifest", d, "--stage", "1", "--upscale"])
    ref_cache, cache = os.path.join(wd, "ref_cache"), os.path.join(wd, "cache")

    def cache_cmd(d, out):
        return [oboro, "data", "cache", "--manifest", d, "--out", out, "--stage", "1", "--shard-mb", "1", "-q"]

    t0 = clock()
    run(cache_cmd(ref_db, ref_cache))
    t_cache = clock() - t0
    ref_ok, ref_n, ref_content = cache_content(ref_db, ref_cache)
    rounds = kills_cache = 0
    cache_kinds = {}
    work_db = os.path.join(wd, "cache_work.db")
    while kills_cache < a.kills:
        rounds += 1
        if rounds > 4 * a.kills:
            bad.append(f"cache: only {kills_cache} kills landed in {rounds - 1} rounds")
            break
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copyfile(db, work_db)
        n, _, kinds, _ = kill_loop("cache", cache_cmd(work_db, cache), rng, a.kills - kills_cache, t_cache,
                                   ATOMIC_POINTS)
        kills_cache += n
        for k, v in kinds.items():
            cache_kinds[k] = cache_kinds.get(k, 0) + v
        run(cache_cmd(work_db, cache))
        ok, count, content = cache_content(work_db, cache)
        if ok != "ok":
            bad.append(f"cache: integrity_check {ok}")
        if count != len(content):
            bad.append(f"cache: {count - len(content)} duplicate entry keys")
        if content != ref_content:
            diff = [k for k in set(ref_content) | set(content) if ref_content.get(k) != content.get(k)]
            bad.append(f"cache: {len(diff)} of {len(ref_content)} entries differ from the reference's")
        if temp_files(cache):
            bad.append(f"cache: temp files left: {temp_files(cache)}")
    log(f"cache: {ref_n} entries in {t_cache:.2f} s uninterrupted; {kills_cache} kills "
        f"({', '.join(f'{k} {v}' for k, v in sorted(cache_kinds.items()))}) in {rounds} round(s)")
    check_export(oboro, wd, db, rng, a.kills, bad)
    log(f"{clock():.1f} s in all")
    if bad:
        sys.exit("FAIL:\n  " + "\n  ".join(bad))
    log("PASS: after the kills the manifest is intact with no duplicate or missing rows, the cache entries and "
        "their tensors equal the uninterrupted run's, and so does the export folder, file for file")


if __name__ == "__main__":
    main()
