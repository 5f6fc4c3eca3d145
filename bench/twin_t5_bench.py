#!/usr/bin/python3
"""Time the PyTorch twin of the T5 v1.1 encoder (tests/twin/t5_twin.py) encoding one prompt on the
CPU, with random float32 weights of the given size (no model file needed):

    /usr/bin/python3 bench/twin_t5_bench.py --d-model 4096 --d-kv 64 --heads 64 --d-ff 10240 \
        --layers 2 --tokens 77 --threads 2 --dtypes float32,bfloat16

Prints one JSON object: `min_seconds` (best over the precisions), `dtype` (which), `results`.
"""

import argparse
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "twin"))
sys.path.insert(0, HERE)
import t5_twin  # noqa: E402
import twin_common_bench as tc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=32128)
    ap.add_argument("--d-model", type=int, default=4096)
    ap.add_argument("--d-kv", type=int, default=64)
    ap.add_argument("--heads", type=int, default=64)
    ap.add_argument("--d-ff", type=int, default=10240)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    dtypes = tc.parse_dtypes(args.dtypes)

    cfg = t5_twin.make_config(vocab_size=args.vocab, d_model=args.d_model, d_kv=args.d_kv,
                              num_heads=args.heads, d_ff=args.d_ff, num_layers=args.layers)
    with torch.no_grad():
        model = t5_twin.T5EncoderTwin(cfg).eval()
        g = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif "shared" in name or "relative_attention_bias" in name:
                p.normal_(0.0, 1.0, generator=g)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=g)
    B, L = args.batch, args.tokens
    ids = torch.randint(0, args.vocab, (B, L), generator=g)
    mask = torch.ones(B, L)

    def run(dtype):
        with torch.no_grad(), tc.autocast(dtype):
            return model(ids, mask)

    results, best = tc.best_of(run, dtypes, args.warmup, args.repeats)
    print(json.dumps({"min_seconds": results[best]["min_seconds"], "dtype": best, "results": results,
                      "threads": threads, "layers": args.layers, "tokens": L, "batch": B,
                      "peak_rss_bytes": tc.peak_rss_bytes(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
