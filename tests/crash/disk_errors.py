#!/usr/bin/env python3
"""Full disks and I/O errors (issue 21), with the faultfs LD_PRELOAD shim (tests/crash/faultfs.c) making the
writes of one file fail. For each of checkpoint save, model export, the training log, generated image, the SQLite
manifest and a dataset export, under ENOSPC after some bytes, EIO on fsync and a failing rename:
  * the command exits != 0 with ONE error line ("oboro: error: ...") that names the file;
  * the previous file (the earlier checkpoint, the previous model, the earlier image, the manifest's rows) is
    byte-identical / intact (`PRAGMA integrity_check` = ok, same rows);
  * no temp file (NAME.tmp.PID) is left;
and the run can be continued afterwards (train: --resume latest gives the uninterrupted run's files).

  disk_errors.py --oboro build/oboro --faultfs build/tests/faultfs.so --workdir DIR
"""

import argparse
import json
import os
import shutil
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crash_util import files_under, log, run, same_bytes, temp_files  # noqa: E402
from crash_train import log_lines, make_dataset, write_config  # noqa: E402

FAULTS = {
    "ENOSPC after 1 KiB": {"FAULTFS_OPS": "write", "FAULTFS_ERRNO": "ENOSPC", "FAULTFS_AFTER": "1024"},
    "EIO on fsync": {"FAULTFS_OPS": "fsync", "FAULTFS_ERRNO": "EIO"},
    "rename fails": {"FAULTFS_OPS": "rename", "FAULTFS_ERRNO": "EIO"},
}

failures = []


def expect_clean_failure(label, rc, err, path_word, folder):
    """rc != 0, one 'oboro: error:' line naming path_word, no temp files in folder."""
    lines = [l for l in err.splitlines() if l.startswith("oboro: error:")]
    problems = []
    if rc == 0:
        problems.append("exit 0")
    elif rc < 0:
        problems.append(f"killed by signal {-rc}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    elif path_word not in lines[0]:
        problems.append(f"the error does not name {path_word}: {lines[0]}")
    left = temp_files(folder)
    if left:
        problems.append(f"temp files left: {left}")
    if problems:
        failures.append(f"{label}: " + "; ".join(problems) + f"\n    stderr: {err.strip()[-600:]}")
    else:
        log(f"  ok  {label}: {lines[0][:150]}")


def snapshot(folder):
    out = {}
    for f in files_under(folder):
        with open(os.path.join(folder, f), "rb") as fh:
            out[f] = fh.read()
    return out


def check_train(oboro, shim, wd):
    data = os.path.join(wd, "data")
    make_dataset(data)
    ref = os.path.join(wd, "train_ref")
    write_config(os.path.join(wd, "ref.toml"), data, ref, 4)
    run([oboro, "train", "--config", os.path.join(wd, "ref.toml")])
    for fault, env in FAULTS.items():
        for target, word in (("checkpoint", "state/step-00000004.safetensors"), ("model export", "tiny.safetensors")):
            out = os.path.join(wd, f"train_{target.replace(' ', '_')}_{fault.split()[0]}")
            cfg = os.path.join(wd, os.path.basename(out) + ".toml")
            write_config(cfg, data, out, 4)
            run([oboro, "train", "--config", cfg, "--stop-after", "2"])
            before = snapshot(out)
            rc, err, _ = run([oboro, "train", "--config", cfg, "--resume", "latest"],
                             dict(env, LD_PRELOAD=shim, FAULTFS_MATCH=word), check=False)
            expect_clean_failure(f"train, {target}, {fault}", rc, err, word, out)
            after = snapshot(out)
            changed = [f for f in before if f not in ("log.jsonl", ".oboro.lock") and before[f] != after.get(f)
                       and not (target == "checkpoint" and f in ("tiny.safetensors", "tiny.t5.safetensors"))]
            if changed:  # (a failed checkpoint comes after the model files of its step: those may be new)
                failures.append(f"train, {target}, {fault}: earlier files changed: {changed}")
            rc, err, _ = run([oboro, "train", "--config", cfg, "--resume", "latest"], check=False)
            if rc != 0:
                failures.append(f"train, {target}, {fault}: --resume latest afterwards failed: {err.strip()[-300:]}")
            else:
                for f in ("state/step-00000004.safetensors", "tiny.safetensors", "tiny.t5.safetensors"):
                    if not same_bytes(os.path.join(ref, f), os.path.join(out, f)):
                        failures.append(f"train, {target}, {fault}: {f} after the resume differs from the reference")
            shutil.rmtree(out)


def check_train_log(oboro, shim, wd):
    """log.jsonl: its appends fail (a full disk, an I/O error) part-way through a run, or its rewrite on resume
    fails; the run stops with one line naming log.jsonl, and --resume latest afterwards ends with the uninterrupted
    run's model files and log records."""
    data = os.path.join(wd, "data")
    ref = os.path.join(wd, "log_ref")
    write_config(os.path.join(wd, "log_ref.toml"), data, ref, 8)
    run([oboro, "train", "--config", os.path.join(wd, "log_ref.toml")])
    cases = {"ENOSPC after 700 bytes": {"FAULTFS_OPS": "write", "FAULTFS_ERRNO": "ENOSPC", "FAULTFS_AFTER": "700"},
             "EIO on write": {"FAULTFS_OPS": "write", "FAULTFS_ERRNO": "EIO", "FAULTFS_AFTER": "500"},
             "rename fails (resume)": {"FAULTFS_OPS": "rename", "FAULTFS_ERRNO": "EIO"}}
    for fault, env in cases.items():
        out = os.path.join(wd, f"log_{fault.split()[0]}_{len(fault)}")
        cfg = out + ".toml"
        write_config(cfg, data, out, 8)
        if "resume" in fault:  # an interrupted run whose log holds records after its last checkpoint, the last torn
            run([oboro, "train", "--config", cfg, "--stop-after", "3"])
            with open(os.path.join(out, "log.jsonl"), "a") as f:
                f.write('{"step": 4, "loss": 1.0}\n{"step": 5, "lo')
            cmd = [oboro, "train", "--config", cfg, "--resume", "latest"]
        else:
            cmd = [oboro, "train", "--config", cfg]
        before = snapshot(out) if os.path.isdir(out) else {}
        rc, err, _ = run(cmd, dict(env, LD_PRELOAD=shim, FAULTFS_MATCH="log.jsonl"), check=False)
        expect_clean_failure(f"train, log.jsonl, {fault}", rc, err, "log.jsonl", out)
        if "resume" in fault and snapshot(out).get("log.jsonl") != before.get("log.jsonl"):
            failures.append(f"train, log.jsonl, {fault}: the log changed although its rewrite failed")
        rc, err, _ = run([oboro, "train", "--config", cfg, "--resume", "latest"], check=False)
        if rc != 0:
            failures.append(f"train, log.jsonl, {fault}: --resume latest afterwards failed: {err.strip()[-300:]}")
            continue
        for f in ("tiny.safetensors", "tiny.t5.safetensors"):
            if not same_bytes(os.path.join(ref, f), os.path.join(out, f)):
                failures.append(f"train, log.jsonl, {fault}: {f} after the resume differs from the reference")
        if log_lines(os.path.join(out, "log.jsonl")) != log_lines(os.path.join(ref, "log.jsonl")):
            failures.append(f"train, log.jsonl, {fault}: the log after the resume differs from the reference's records")
        shutil.rmtree(out)


def check_export(oboro, shim, wd):
    """data export --force over a previous export, its writes failing: the previous manifest.jsonl and every file it
    lists stay (even an image removed from the manifest since), no temp is left, and the export run again without
    the fault gives the new export (the removed image's files gone)."""
    src = os.path.join(wd, "export_src")
    make_dataset(src)
    faults = dict(FAULTS, **{"ENOSPC at once": {"FAULTFS_OPS": "write", "FAULTFS_ERRNO": "ENOSPC"}})
    for fault, env in faults.items():
        for mode in ("copy", "link"):
            label = f"data export --mode {mode}, {fault}"
            db = os.path.join(wd, f"x_{mode}_{fault.split()[0]}_{len(fault)}.db")
            out = os.path.join(wd, f"x_{mode}_{fault.split()[0]}_{len(fault)}")
            run([oboro, "data", "ingest", src, "--manifest", db, "--license", "CC0-1.0", "-q"])
            run([oboro, "data", "export", "--manifest", db, "-o", out, "--mode", mode, "-q"])
            before = snapshot(out)
            with open(os.path.join(out, "manifest.jsonl")) as f:
                first = json.loads(f.readline())
            run([oboro, "data", "remove", "--manifest", db, "--hash", first["sha256"], "--reason", "rights"])
            rc, err, _ = run([oboro, "data", "export", "--manifest", db, "-o", out, "--mode", mode, "--force", "-q"],
                             dict(env, LD_PRELOAD=shim, FAULTFS_MATCH=out + "/"), check=False)
            expect_clean_failure(label, rc, err, out, out)
            after = snapshot(out)
            if after != before:
                failures.append(f"{label}: the previous export changed: "
                                f"{sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f))[:6]}")
            rc, err, _ = run([oboro, "data", "export", "--manifest", db, "-o", out, "--mode", mode, "--force", "-q"],
                             check=False)
            final = snapshot(out) if rc == 0 else {}
            gone = [f for f in final if first["sha256"] in f]
            want = len(before) - 2
            if rc != 0 or gone or len(final) != want or temp_files(out):
                failures.append(f"{label}: the export again afterwards: exit {rc}, {len(final)} files (want {want}), "
                                f"removed image's files still there: {gone}, temps: {temp_files(out)}")


def check_generate(oboro, shim, wd):
    out = os.path.join(wd, "gen")
    base = [oboro, "generate", "a red square", "--size", "32x32", "--steps", "2", "--seed", "3", "-o", out]
    run(base)
    before = snapshot(out)
    for fault, env in FAULTS.items():
        rc, err, _ = run(base, dict(env, LD_PRELOAD=shim, FAULTFS_MATCH=out + "/"), check=False)
        expect_clean_failure(f"generate, image, {fault}", rc, err, out, out)
        if snapshot(out) != before:
            failures.append(f"generate, image, {fault}: the folder's earlier files changed or a partial image is left: "
                            f"{sorted(set(snapshot(out)) ^ set(before))}")


def manifest_rows(db):
    c = sqlite3.connect(db)
    try:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        rows = sorted(c.execute("SELECT sha256, path FROM images").fetchall())
    finally:
        c.close()
    return ok, rows


def check_manifest(oboro, shim, wd):
    src_a, src_b = os.path.join(wd, "ingest_a"), os.path.join(wd, "ingest_b")
    make_dataset(src_a)
    os.makedirs(src_b)
    for n in sorted(os.listdir(src_a))[:8]:  # 4 images of A, captions changed: new images for B
        shutil.move(os.path.join(src_a, n), os.path.join(src_b, n))
    for fault, env in FAULTS.items():
        if fault == "rename fails":
            continue  # SQLite renames nothing
        db = os.path.join(wd, f"m_{fault.split()[0]}.db")
        run([oboro, "data", "ingest", src_a, "--manifest", db, "--license", "CC0-1.0", "-q"])
        ok0, rows0 = manifest_rows(db)
        rc, err, _ = run([oboro, "data", "ingest", src_b, "--manifest", db, "--license", "CC0-1.0", "-q"],
                         dict(env, LD_PRELOAD=shim, FAULTFS_MATCH=os.path.basename(db)), check=False)
        expect_clean_failure(f"data ingest, manifest, {fault}", rc, err, db, wd)
        ok1, rows1 = manifest_rows(db)
        if ok1 != "ok" or rows1 != rows0:
            failures.append(f"data ingest, manifest, {fault}: integrity_check {ok1}, rows {len(rows0)} -> {len(rows1)}")
        rc, err, _ = run([oboro, "data", "ingest", src_b, "--manifest", db, "--license", "CC0-1.0", "-q"], check=False)
        ok2, rows2 = manifest_rows(db)
        if rc != 0 or ok2 != "ok" or len(rows2) != 12:
            failures.append(f"data ingest, manifest, {fault}: the ingest again afterwards: exit {rc}, integrity {ok2}, "
                            f"{len(rows2)} rows (want 12)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--faultfs", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    oboro, shim, wd = os.path.abspath(a.oboro), os.path.abspath(a.faultfs), os.path.abspath(a.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    check_train(oboro, shim, wd)
    check_train_log(oboro, shim, wd)
    check_generate(oboro, shim, wd)
    check_manifest(oboro, shim, wd)
    check_export(oboro, shim, wd)
    if failures:
        sys.exit("FAIL:\n  " + "\n  ".join(failures))
    log("PASS: every failing write gave one error line naming the file, a non-zero exit, the earlier files intact "
        "and no temp file")


if __name__ == "__main__":
    main()
