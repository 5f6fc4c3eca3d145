#!/usr/bin/python3
"""Time one classifier-free-guidance step (cond + uncond as one batch) of the
PyTorch twin DiT on the CPU, with random float32 weights (no model file needed).

    /usr/bin/python3 bench/twin_dit_bench.py --config oboro-1b --height 416 --width 736 \
        --batch 2 --text-len 32 --threads 2 --repeats 3

Prints one JSON object; `seconds_per_step` is the mean over the timed repeats of one
forward of the given batch under torch.no_grad(). With `--dtypes float32,bfloat16` each
precision is timed in turn on the same model (bfloat16 = torch.autocast on the CPU: GEMMs in
BF16 through oneDNN, weights stay float32) and `min_seconds` is the best of all of them;
`results` holds each precision's own times.
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "twin"))
import oboro_twin as tw  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="oboro-1b", help="tiny | small | oboro-1b")
    ap.add_argument("--schedule", default="mmh", choices=["mmh", "uniform"], help="head schedule")
    ap.add_argument("--height", type=int, default=416, help="image height in pixels")
    ap.add_argument("--width", type=int, default=736, help="image width in pixels")
    ap.add_argument("--batch", type=int, default=2, help="2 = one CFG step (cond + uncond)")
    ap.add_argument("--text-len", type=int, default=32, help="padded text length L")
    ap.add_argument("--text-dim", type=int, default=4096)
    ap.add_argument("--latent-channels", type=int, default=16)
    ap.add_argument("--latent-stride", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards before timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attention", default="fast", choices=("fast", "explicit"),
                    help="fast: baddbmm + torch.softmax (default); explicit: the reference "
                         "exp/sum softmax used by the tests (slower, same result)")
    ap.add_argument("--dtypes", default="float32",
                    help="comma-separated precisions to time: float32, bfloat16 (CPU autocast)")
    ap.add_argument("--train", action="store_true",
                    help="time a training step instead: forward, MSE loss, backward, AdamW update")
    args = ap.parse_args()

    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    s = args.latent_stride * args.patch_size
    if args.height % s or args.width % s:
        sys.exit(f"height and width must be multiples of {s}")

    cfg = tw.make_config(args.config, text_dim=args.text_dim,
                         latent_channels=args.latent_channels, patch_size=args.patch_size,
                         schedule=args.schedule)
    t0 = time.time()
    # build on the meta device, allocate once, fill with the random-weight rule
    model = tw.OboroDiT(cfg, device="meta").to_empty(device="cpu")
    tw.randomize_(model, seed=args.seed)
    model = model.to(args.device).set_attention_impl(args.attention)
    model = model.train() if args.train else model.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01) if args.train else None
    build_s = time.time() - t0

    g = torch.Generator().manual_seed(args.seed + 1)
    B, L = args.batch, args.text_len
    h, w = args.height // args.latent_stride, args.width // args.latent_stride
    x = torch.randn(B, args.latent_channels, h, w, generator=g)
    t = torch.full((B,), 0.5)
    txt = torch.randn(B, L, args.text_dim, generator=g)
    mask = torch.ones(B, L)
    if B >= 2:          # the uncond half: the empty prompt is one token (</s>), rest padding
        mask[B // 2:, 1:] = 0.0
    x, t, txt, mask = (a.to(args.device) for a in (x, t, txt, mask))

    target = torch.randn(x.shape, generator=g).to(args.device)

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("float32", "bfloat16"):
            sys.exit(f"unknown dtype {d!r}: use float32 or bfloat16")

    def autocast(dtype):
        if dtype == "bfloat16":
            return torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16)
        return torch.autocast(device_type=args.device.split(":")[0], enabled=False)

    def step(dtype):
        if args.train:
            opt.zero_grad(set_to_none=True)
            with autocast(dtype):
                v = model(x, t, txt, mask)
                loss = torch.mean((v.float() - target) ** 2)
            loss.backward()
            opt.step()
            return v.detach()
        with torch.no_grad(), autocast(dtype):
            v = model(x, t, txt, mask)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return v

    results = {}
    for dtype in dtypes:
        for _ in range(args.warmup):
            step(dtype)
        times = []
        for _ in range(args.repeats):
            t1 = time.perf_counter()
            v = step(dtype)
            times.append(time.perf_counter() - t1)
        if not torch.isfinite(v).all():
            sys.exit(f"non-finite output ({dtype})")
        results[dtype] = {"min_seconds": min(times), "seconds_per_step": sum(times) / len(times), "times": times}
    best = min(results, key=lambda d: results[d]["min_seconds"])
    times = results[best]["times"]

    n_img = (h // args.patch_size) * (w // args.patch_size)
    print(json.dumps({
        "seconds_per_step": sum(times) / len(times),
        "threads": threads,
        "min_seconds": min(times),
        "times": times,
        "config": args.config,
        "params": tw.count_params(cfg),
        "batch": B,
        "image_tokens": n_img,
        "text_len": L,
        "height": args.height,
        "width": args.width,
        "dtype": best,
        "results": results,
        "attention": args.attention,
        "mode": "train" if args.train else "forward",
        "device": args.device,
        "torch": torch.__version__,
        "build_seconds": build_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
