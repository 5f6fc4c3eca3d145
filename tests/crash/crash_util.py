"""Shared parts of the crash-point drivers (tests/crash/): run oboro and SIGKILL it, at a named crash point
(OBORO_CRASH_AT, core/crash_point.h) or after a random wall-clock delay; compare output folders byte for byte.
Python standard library only."""

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time

# Crash points of every atomic save (io/atomic_file.cpp) and of the trainer's save (trainer.cpp).
ATOMIC_POINTS = ["atomic.open", "atomic.write", "atomic.fsync", "atomic.rename", "atomic.renamed"]


def log(msg):
    print(msg, flush=True)


def run(cmd, env_extra=None, kill_after=None, check=True):
    """Runs cmd; with kill_after (seconds) SIGKILLs it then. Returns (returncode, stderr text, killed_by_us)."""
    env = dict(os.environ)
    env.pop("OBORO_CRASH_AT", None)
    if env_extra:
        env.update(env_extra)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed = False
    try:
        out, err = p.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate()
        killed = True
    err = err.decode("utf-8", "replace")
    if check and p.returncode != 0 and p.returncode != -signal.SIGKILL:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {p.returncode}:\n{err}")
    return p.returncode, err, killed


def files_under(root):
    """Relative paths of the regular files under root, sorted."""
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


def temp_files(root):
    """Left-over atomic-save temp files (NAME.tmp.PID) under root."""
    return [f for f in files_under(root) if ".tmp." in os.path.basename(f)
            and os.path.basename(f).rsplit(".tmp.", 1)[1].isdigit()]


def safetensors_diff(a, b):
    """Names of the tensors (and '__metadata__') whose bytes differ between two safetensors files."""
    def parse(p):
        with open(p, "rb") as f:
            raw = f.read()
        n = struct.unpack("<Q", raw[:8])[0]
        h = json.loads(raw[8:8 + n])
        data = raw[8 + n:]
        return h, data
    ha, da = parse(a)
    hb, db = parse(b)
    diff = []
    for k in sorted(set(ha) | set(hb)):
        if k == "__metadata__":
            if ha.get(k) != hb.get(k):
                diff.append(k)
            continue
        if k not in ha or k not in hb:
            diff.append(k)
            continue
        sa, ea = ha[k]["data_offsets"]
        sb, eb = hb[k]["data_offsets"]
        if da[sa:ea] != db[sb:eb] or ha[k]["shape"] != hb[k]["shape"]:
            diff.append(k)
    return diff


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def pick_kill(rng, points, max_nth, max_delay):
    """A random kill: ('point', 'NAME#N') or ('time', seconds); N in 1..max_nth (a crash point met once per save
    is met at most max_nth / 4 times: N is then drawn from that range)."""
    if rng.random() < 0.5:
        name = rng.choice(points)
        top = max_nth if name.startswith("atomic.") else max(1, max_nth // 4)
        return ("point", f"{name}#{rng.randint(1, top)}")
    return ("time", rng.uniform(0.05, max(0.1, max_delay)))


def kill_run(cmd, kill, env_extra=None):
    """Runs cmd with the kill applied. Returns (returncode, stderr, was_killed)."""
    env = dict(env_extra or {})
    if kill[0] == "point":
        env["OBORO_CRASH_AT"] = kill[1]
        rc, err, _ = run(cmd, env)
        return rc, err, rc == -signal.SIGKILL
    rc, err, killed = run(cmd, env, kill_after=kill[1])
    return rc, err, killed


class Timer:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self):
        return time.monotonic() - self.t0
