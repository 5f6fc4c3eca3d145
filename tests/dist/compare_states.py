#!/usr/bin/env python3
"""Compare two oboro training checkpoints: every tensor bitwise and the counters of oboro.train_state.
Usage: compare_states.py A.safetensors B.safetensors   (exit 0 = identical, 1 = a difference, printed)"""
import json
import struct
import sys

COUNTERS = ("step", "epoch", "index", "samples_seen", "loss_ema", "global_batch")


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}
    return tensors, json.loads(meta["oboro.train_state"])


def main():
    (ta, sa), (tb, sb) = read(sys.argv[1]), read(sys.argv[2])
    bad = []
    if sorted(ta) != sorted(tb):
        bad.append(f"tensor names differ: {sorted(ta)} vs {sorted(tb)}")
    for k in sorted(set(ta) & set(tb)):
        if ta[k] != tb[k]:
            bad.append(f"tensor {k} differs")
    for c in COUNTERS:
        if sa.get(c) != sb.get(c):
            bad.append(f"counter {c}: {sa.get(c)} vs {sb.get(c)}")
    for b in bad:
        print(f"{sys.argv[1]} vs {sys.argv[2]}: {b}")
    if not bad:
        print(f"identical: {len(ta)} tensors and counters {[sa.get(c) for c in COUNTERS]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
