#!/usr/bin/python3
"""Time the PyTorch twin of the FLUX.1 VAE decoder (tests/twin/vae_twin.py) on the CPU with random
float32 weights of the true size (no model file needed):

    /usr/bin/python3 bench/twin_vae_bench.py --height 416 --width 736 --threads 2 --dtypes float32,bfloat16

float32 times the twin in F32, bfloat16 a BF16 copy of it (weights and activations).
Prints one JSON object: `min_seconds` (best decode over the precisions), `dtype`, `results`;
with --encode also `encode` (same fields).
"""

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "twin"))
sys.path.insert(0, HERE)
import vae_twin  # noqa: E402
import twin_common_bench as tc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=416)
    ap.add_argument("--width", type=int, default=736)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--encode", action="store_true")
    args = ap.parse_args()
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    dtypes = tc.parse_dtypes(args.dtypes)
    if args.height % 8 or args.width % 8:
        sys.exit("height and width must be multiples of 8")

    cfg = vae_twin.make_config()
    sd = vae_twin.random_state_dict(cfg)
    # bfloat16: the whole twin in BF16 (weights and activations; GroupNorm does not take BF16 input with F32
    # weights under torch 1.13's CPU autocast)
    twins = {d: vae_twin.Twin(sd, dtype=torch.float32 if d == "float32" else torch.bfloat16) for d in dtypes}
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(1, cfg["z"], args.height // 8, args.width // 8, generator=g)
    img = torch.rand(1, 3, args.height, args.width, generator=g) * 2 - 1

    def dec(dtype):
        with torch.no_grad():
            return twins[dtype].decode(lat)

    def enc(dtype):
        with torch.no_grad():
            return twins[dtype].encode(img)

    results, best = tc.best_of(dec, dtypes, args.warmup, args.repeats)
    out = {"min_seconds": results[best]["min_seconds"], "dtype": best, "results": results, "threads": threads,
           "image": f"{args.width}x{args.height}", "torch": torch.__version__}
    if args.encode:
        er, eb = tc.best_of(enc, dtypes, args.warmup, args.repeats)
        out["encode"] = {"min_seconds": er[eb]["min_seconds"], "dtype": eb, "results": er}
    out["peak_rss_bytes"] = tc.peak_rss_bytes()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
