#!/usr/bin/env python3
"""Crash points of `oboro train` (issue 21): SIGKILL a tiny training run at --kills random moments -- half at a
named crash point inside a save (OBORO_CRASH_AT: the atomic writer's open / first write / fsync / rename /
renamed, or after a whole save), half after a random wall-clock delay -- and continue it each time as a user
would (`--resume latest` once a checkpoint exists, else `--overwrite`). Then check, against one uninterrupted
run of the same config:
  * every checkpoint state/step-*.safetensors (weights, AdamW moments, EMA, counters), the model and text-encoder
    files, the vocabulary and loss.svg are byte-identical;
  * log.jsonl has one record per step in order, each byte-identical once its samples_per_s (wall-clock timing)
    is removed (train/train_log.h states the rule);
  * no temp file (NAME.tmp.PID) is left;
  * the final invocation exits 0 and prints the model path.
Also: a finished run killed inside its last export and resumed re-exports (the model equals the reference's);
while another process holds the output folder's lock, a run is refused naming the folder and that PID.

  crash_train.py --oboro build/oboro --workdir DIR [--kills 20] [--steps 16] [--seed 1]
"""

import argparse
import os
import random
import re
import shutil
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crash_util import (ATOMIC_POINTS, Timer, files_under, kill_run, log, pick_kill, run, safetensors_diff,  # noqa: E402
                        same_bytes, temp_files)


def write_png(path, w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def make_dataset(d):
    """12 tiny images: a coloured square on white, captioned by colour and position (as tests/unit/test_train.cpp)."""
    os.makedirs(d, exist_ok=True)
    colours = [("red", (220, 30, 30)), ("green", (30, 200, 40)), ("blue", (30, 40, 220))]
    where = ["top left", "top right", "bottom left", "bottom right"]
    k = 0
    for name, c in colours:
        for pos in range(4):
            rgb = [255] * (8 * 8 * 3)
            x0, y0 = (pos % 2) * 4, (pos // 2) * 4
            for y in range(y0, y0 + 4):
                for x in range(x0, x0 + 4):
                    rgb[(y * 8 + x) * 3:(y * 8 + x) * 3 + 3] = c
            write_png(os.path.join(d, f"img{k}.png"), 8, 8, rgb)
            with open(os.path.join(d, f"img{k}.txt"), "w") as f:
                f.write(f"a {name} square, {where[pos]}")
            k += 1


def write_config(path, data, out, steps):
    with open(path, "w") as f:
        f.write(f"""train_data_dir = "{data}"
output_dir = "{out}"
output_name = "tiny"
resolution = 8
model_preset = "tiny"
head_schedule = "uniform"
hidden_size = 32
num_layers = 2
ffn_hidden_size = 48
patch_size = 2
vocab_size = 40
t5_d_model = 16
t5_layers = 1
t5_heads = 2
t5_d_kv = 8
t5_d_ff = 24
train_batch_size = 4
gradient_accumulation_steps = 2
max_train_steps = {steps}
learning_rate = 1e-3
lr_scheduler = "cosine"
ema_decay = 0.9
seed = 5
threads = 1
save_every_n_steps = 2
""")


STRIP_TIMING = re.compile(r'"samples_per_s":[^,}]*,?')


def log_lines(path):
    with open(path, "rb") as f:
        return [STRIP_TIMING.sub("", l) for l in f.read().decode().splitlines()]


def checkpoints(out):
    """The finished checkpoints (not temp files), oldest first."""
    d = os.path.join(out, "state")
    return sorted(n for n in os.listdir(d) if n.startswith("step-") and n.endswith(".safetensors")) \
        if os.path.isdir(d) else []


def has_checkpoint(out):
    return bool(checkpoints(out))


def has_earlier_run(out):
    return any(os.path.exists(os.path.join(out, n)) for n in ("tiny.safetensors", "tiny.t5.safetensors", "log.jsonl"))


def compare(ref, out):
    """Failures (strings) of `out` against the uninterrupted run `ref`."""
    bad = []
    want = [f for f in files_under(ref) if f != ".oboro.lock"]
    got = [f for f in files_under(out) if f != ".oboro.lock"]
    if want != got:
        bad.append(f"files differ: only in reference {sorted(set(want) - set(got))}, "
                   f"only in the killed run {sorted(set(got) - set(want))}")
    for f in want:
        a, b = os.path.join(ref, f), os.path.join(out, f)
        if not os.path.exists(b):
            continue
        if f == "log.jsonl":
            la, lb = log_lines(a), log_lines(b)
            if la != lb:
                first = next((i for i in range(min(len(la), len(lb))) if la[i] != lb[i]), min(len(la), len(lb)))
                bad.append(f"log.jsonl differs ({len(la)} vs {len(lb)} records; first at line {first + 1})")
        elif not same_bytes(a, b):
            extra = f" (tensors {safetensors_diff(a, b)})" if f.endswith(".safetensors") else ""
            bad.append(f"{f} differs{extra}")
    left = temp_files(out)
    if left:
        bad.append(f"temp files left: {left}")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    oboro = os.path.abspath(a.oboro)
    wd = os.path.abspath(a.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    data = os.path.join(wd, "data")
    make_dataset(data)
    ref, out = os.path.join(wd, "ref"), os.path.join(wd, "killed")
    write_config(os.path.join(wd, "ref.toml"), data, ref, a.steps)
    write_config(os.path.join(wd, "killed.toml"), data, out, a.steps)
    clock = Timer()

    # The uninterrupted reference, timed to pick wall-clock kill moments inside a run.
    run([oboro, "train", "--config", os.path.join(wd, "ref.toml")])
    t_ref = clock()
    log(f"reference run: {a.steps} steps in {t_ref:.1f} s")

    rng = random.Random(a.seed)
    cmd_base = [oboro, "train", "--config", os.path.join(wd, "killed.toml")]
    kills, attempts, temps_seen, by_kind = 0, 0, 0, {}
    while kills < a.kills:
        attempts += 1
        if attempts > 4 * a.kills + 20:
            sys.exit(f"FAIL: only {kills} of {a.kills} kills landed in {attempts - 1} runs")
        cmd = cmd_base + (["--resume", "latest"] if has_checkpoint(out) else ["--overwrite"] if has_earlier_run(out) else [])
        # Aim inside what is left of the run: 4 atomic writes per save (text encoder, DiT, checkpoint, loss.svg).
        done = int(checkpoints(out)[-1][5:13]) if has_checkpoint(out) else 0
        saves_left = max(1, (a.steps - done) // 2)
        kill = pick_kill(rng, ATOMIC_POINTS + ["train.saved"], 4 * saves_left, t_ref * (a.steps - done) / a.steps)
        rc, err, killed = kill_run(cmd, kill)
        if rc != 0 and not killed:
            sys.exit(f"FAIL: {' '.join(cmd)} exited {rc}:\n{err}")
        if not killed:  # finished before the kill: start the killed run again from scratch
            log(f"  run {attempts}: finished before kill {kill}; starting over")
            shutil.rmtree(out)
            continue
        kills += 1
        kind = kill[1].split("#")[0] if kill[0] == "point" else "wall-clock"
        by_kind[kind] = by_kind.get(kind, 0) + 1
        temps_seen += len(temp_files(out))
        steps = checkpoints(out)
        log(f"  kill {kills}: {kill[0]} {kill[1] if kill[0] == 'point' else f'{kill[1]:.2f} s'}"
            f" -> latest checkpoint {steps[-1] if steps else 'none'}")
    # Run to the end.
    cmd = cmd_base + (["--resume", "latest"] if has_checkpoint(out) else ["--overwrite"] if has_earlier_run(out) else [])
    rc, err, _ = run(cmd)
    bad = compare(ref, out)

    # A finished run killed inside its final export, then resumed: the model files are written again.
    for f in ("tiny.safetensors", "tiny.t5.safetensors"):
        with open(os.path.join(out, f), "r+b") as fh:  # what a half-finished export could leave: an older model
            fh.truncate(0)
    rc2, err2, killed2 = kill_run(cmd_base + ["--resume", "latest"], ("point", "atomic.rename#1"))
    if not killed2:
        bad.append(f"the kill inside the final export did not land (exit {rc2}): {err2}")
    rc3, err3, _ = run(cmd_base + ["--resume", "latest"])
    for f in ("tiny.safetensors", "tiny.t5.safetensors"):
        if not same_bytes(os.path.join(ref, f), os.path.join(out, f)):
            bad.append(f"{f} after a resume of the finished run differs from the reference")
    bad += [b for b in compare(ref, out) if b not in bad]

    # Two processes, one folder: while another process holds the folder's lock, a run is refused in one line
    # naming the folder and the holder's PID, and writes nothing.
    import fcntl
    with open(os.path.join(out, ".oboro.lock"), "r+") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        lk.truncate(0)
        lk.write(f"{os.getpid()}\n")
        lk.flush()
        before = {f: os.path.getmtime(os.path.join(out, f)) for f in files_under(out)}
        rc4, err4, _ = run(cmd_base + ["--resume", "latest"], check=False)
        lines = [l for l in err4.splitlines() if l.startswith("oboro: error:")]
        want = f"oboro: error: {out}: another oboro run (PID {os.getpid()}) is training into this output folder"
        if rc4 == 0 or len(lines) != 1 or not lines[0].startswith(want):
            bad.append(f"a run into a locked folder: exit {rc4}, stderr {err4.strip()[-300:]}")
        if {f: os.path.getmtime(os.path.join(out, f)) for f in files_under(out)} != before:
            bad.append("a run into a locked folder changed files")
        fcntl.flock(lk, fcntl.LOCK_UN)

    log(f"{kills} kills ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))}) in {attempts} runs, "
        f"{temps_seen} temp files left by kills (all removed by the next start), {clock():.1f} s in all")
    if bad:
        sys.exit("FAIL:\n  " + "\n  ".join(bad))
    log(f"PASS: every checkpoint, the model files, vocabulary, loss.svg and log.jsonl (timing removed) equal the "
        f"uninterrupted run's; no temp file left")


if __name__ == "__main__":
    main()
