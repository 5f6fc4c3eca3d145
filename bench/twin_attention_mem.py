#!/usr/bin/python3
"""Working memory of the PyTorch twin's attention as the sequence grows: for each token count,
the peak-RSS increase (VmHWM reset through /proc/self/clear_refs) of one attention forward over
q, k, v (B, H, S, dh) already in memory, for the twin's explicit softmax ("naive", as
tests/twin/oboro_twin.py), its baddbmm + torch.softmax path ("fast"), and torch 1.13's
private math-path scaled-dot-product attention ("sdpa"), which also materialises S x S scores.

    /usr/bin/python3 bench/twin_attention_mem.py --tokens 256,1024,4096 --heads 24 --head-dim 64
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin_common_bench as tc  # noqa: E402


def naive(q, k, v):
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    m = s.amax(dim=-1, keepdim=True)
    e = torch.exp(s - m)
    p = e / e.sum(dim=-1, keepdim=True)
    return torch.matmul(p, v)


def fast(q, k, v):
    B, H, S, d = q.shape
    s = torch.baddbmm(torch.zeros(1, 1, 1), q.reshape(B * H, S, d), k.reshape(B * H, S, d).transpose(1, 2),
                      alpha=1.0 / math.sqrt(d))
    return torch.bmm(torch.softmax(s, dim=-1), v.reshape(B * H, S, d)).reshape(B, H, S, d)


def sdpa(q, k, v):
    f = getattr(F, "scaled_dot_product_attention", None)
    if f is not None:
        return f(q, k, v)
    return F._scaled_dot_product_attention(q, k, v)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="256,1024,4096")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--impls", default="naive,fast,sdpa")
    args = ap.parse_args()
    tc.malloc_return_memory()
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    impls = {"naive": naive, "fast": fast, "sdpa": sdpa}
    names = [n for n in args.impls.split(",") if n]
    rows = []
    for S in [int(s) for s in args.tokens.split(",") if s]:
        g = torch.Generator().manual_seed(S)
        q, k, v = (torch.randn(args.batch, args.heads, S, args.head_dim, generator=g) for _ in range(3))
        row = {"tokens": S}
        for n in names:
            with torch.no_grad():
                reset_ok = True
                try:
                    tc.reset_hwm()
                except OSError:
                    reset_ok = False
                base = tc.rss_bytes()
                t0 = time.perf_counter()
                o = impls[n](q, k, v)
                dt = time.perf_counter() - t0
                peak = tc.hwm_bytes()
                del o
            row[n] = {"extra_bytes": max(0, peak - base) if reset_ok else None, "seconds": dt}
        rows.append(row)
    print(json.dumps({"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "threads": threads,
                      "rows": rows, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
