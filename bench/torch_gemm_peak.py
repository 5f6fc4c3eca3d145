#!/usr/bin/python3
"""GEMM peak of PyTorch's CPU kernels (oneDNN/MKL-DNN for BF16, its BLAS for F32) at n x n x n:
best of --repeats after one warm-up, in GFLOP/s (2 n^3 FLOPs per GEMM).

    /usr/bin/python3 bench/torch_gemm_peak.py --n 2048 --threads 2 --repeats 5
"""

import argparse
import json
import os
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    n = args.n
    out = {"n": n, "threads": threads, "torch": torch.__version__}
    g = torch.Generator().manual_seed(0)
    a32 = torch.randn(n, n, generator=g)
    b32 = torch.randn(n, n, generator=g)
    for name, a, b in (("float32", a32, b32), ("bfloat16", a32.bfloat16(), b32.bfloat16())):
        torch.matmul(a, b)
        best = 1e30
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        out[name + "_gflops"] = 2.0 * n ** 3 / best / 1e9
        out[name + "_seconds"] = best
    with open("/proc/loadavg") as f:
        out["load_average"] = " ".join(f.read().split()[:3])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
