#!/usr/bin/python3
"""Compare the C++ oboro T5 v1.1 encoder against the PyTorch twin (spec section 7).

    /usr/bin/python3 tests/twin/test_t5_twin.py --oboro build/oboro [--workdir DIR]

Uses the debug contract of the binary:
  oboro debug t5      --model M --inputs IN --output OUT   (IN: ids (B,L) I32/I64, mask (B,L) F32
                                                          -> OUT: hidden (B,L,d_model) F32)
  oboro debug t5-grad --model M --inputs IN --output OUT   (IN also: target (B,L,d_model) -> OUT: hidden,
                                                          loss, grad.<param> for every parameter;
                                                          loss = sum_{b,l} mask*sum_d (hidden-target)^2
                                                                 / (d_model * sum mask))
The reference is the twin in float64 loaded from the same (F32) files. Only valid rows of `hidden`
are compared (padded rows are unspecified by the contract).
Exit status 0 = pass, 1 = a check failed, 2 = the binary is missing / unusable.
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import t5_twin as tw             # noqa: E402
import safetensors_py as st      # noqa: E402

TOL_H = 1e-5
TOL_LOSS = 1e-5
TOL_GRAD = 1e-4
TOL_PAD = 1e-6
TOL_TWIN_F32 = 1e-4

from twin_common import FAILS, BinaryError, check, get_out, rel, run_oboro  # noqa: E402


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------

def cases():
    return [
        # oboro layout: one file, config in metadata; 3 layers; I32 ids
        dict(name="a-file-d64-h4",
             cfg=tw.make_config(vocab_size=100, d_model=64, d_kv=16, num_heads=4, d_ff=96, num_layers=3),
             layout="file", B=2, L=13, pads=[0, 5], id_dtype=torch.int32, seed=11),
        # HF layout: 3 shards + index.json + config.json (max distance 40, eps 1e-5), no metadata,
        # H*d_kv = 72 != d_model = 48, embedding stored as encoder.embed_tokens.weight, decoder.* and
        # lm_head.* present (ignored); I64 ids; L = 60 reaches the clamp of max distance 40
        dict(name="b-sharded-inner72-d48-maxdist40",
             cfg=tw.make_config(vocab_size=120, d_model=48, d_kv=24, num_heads=3, d_ff=80, num_layers=2,
                                relative_attention_max_distance=40, layer_norm_epsilon=1e-5),
             layout="sharded", B=2, L=60, pads=[7, 0], id_dtype=torch.int64, seed=22),
        # long sequence: distances up to 149 > 128 (log buckets and the max-distance clamp);
        # single file without metadata or config.json: config inferred from shapes, defaults
        dict(name="c-long-L150-inferred",
             cfg=tw.make_config(vocab_size=64, d_model=32, d_kv=8, num_heads=2, d_ff=40, num_layers=2),
             layout="bare", B=2, L=150, pads=[0, 23], id_dtype=torch.int64, seed=33),
    ]


def write_model(case, d):
    cfg = case["cfg"]
    sd = tw.random_state_dict(cfg, seed=case["seed"])
    if case["layout"] == "file":
        path = os.path.join(d, "t5.safetensors")
        tw.save_model(path, cfg, sd)
    elif case["layout"] == "bare":
        path = os.path.join(d, "bare.safetensors")
        st.save(path, sd)
    else:
        path = os.path.join(d, "hf")
        if os.path.isdir(path):
            shutil.rmtree(path)
        gen = torch.Generator().manual_seed(case["seed"] + 1)
        extra = {"decoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(8, cfg["d_model"], generator=gen),
                 "decoder.final_layer_norm.weight": torch.ones(cfg["d_model"]),
                 "lm_head.weight": torch.randn(cfg["vocab_size"], cfg["d_model"], generator=gen)}
        tw.save_sharded(path, cfg, sd, shards=3, embed_name=tw.EMBED_ALIAS, extra=extra)
    return path


def make_inputs(case, gen):
    cfg = case["cfg"]
    B, L = case["B"], case["L"]
    ids = torch.randint(3, cfg["vocab_size"], (B, L), generator=gen)
    mask = torch.ones(B, L)
    for b, k in enumerate(case["pads"]):
        ids[b, L - k - 1] = 1                       # </s> ends the valid part
        if k:
            mask[b, L - k:] = 0.0
            ids[b, L - k:] = torch.randint(0, cfg["vocab_size"], (k,), generator=gen)  # garbage pads
    target = torch.randn(B, L, cfg["d_model"], generator=gen)
    return dict(ids=ids.to(case["id_dtype"]), mask=mask, target=target)


def masked_loss(h, target, mask):
    m = mask.to(h.dtype)[..., None]
    return ((h - target.to(h.dtype)) ** 2 * m).sum() / (m.sum() * h.shape[-1])


def valid_rows(x, mask):
    return x[mask != 0]


def padding_inputs(case, inp, gen):
    """Sample 0 with only its valid tokens; the same with 4 extra garbage pad tokens; and that padded
    row batched with a second, longer, fully valid sample."""
    cfg = case["cfg"]
    n = int(inp["mask"][0].sum().item())
    ids0 = inp["ids"][:1, :n]
    unp = dict(ids=ids0, mask=torch.ones(1, n))
    k = 4
    ids_p = torch.cat([ids0, torch.randint(0, cfg["vocab_size"], (1, k), generator=gen).to(ids0.dtype)], dim=1)
    m_p = torch.cat([torch.ones(1, n), torch.zeros(1, k)], dim=1)
    pad = dict(ids=ids_p, mask=m_p)
    bat = dict(ids=torch.cat([ids_p, torch.randint(0, cfg["vocab_size"], (1, n + k),
                                                   generator=gen).to(ids0.dtype)]),
               mask=torch.cat([m_p, torch.ones(1, n + k)]))
    return {"unpadded": unp, "padded": pad, "batched": bat}, n


def run_case(case, args, workdir):
    cfg = case["cfg"]
    print(f"\n=== case {case['name']}: {cfg} layout={case['layout']} B={case['B']} L={case['L']} "
          f"pads={case['pads']} ids={case['id_dtype']}", flush=True)
    t_case = time.time()
    gen = torch.Generator().manual_seed(case["seed"])
    d = os.path.join(workdir, case["name"])
    os.makedirs(d, exist_ok=True)
    model_path = write_model(case, d)
    inp = make_inputs(case, gen)
    in_path = os.path.join(d, "inputs.safetensors")
    st.save(in_path, {k: inp[k] for k in ("ids", "mask")})
    in_grad_path = os.path.join(d, "inputs_grad.safetensors")
    st.save(in_grad_path, inp)
    mask = inp["mask"]

    # --- reference: twin in float64 from the same files
    m64, cfg_file = tw.load_model(model_path, dtype=torch.float64)
    check("twin config read back from the files", cfg_file == cfg, f"{cfg_file}")
    h_ref = m64(inp["ids"], mask)
    loss_ref = masked_loss(h_ref, inp["target"], mask)
    names = [n for n, _ in m64.named_parameters()]
    grads_ref = dict(zip(names, torch.autograd.grad(loss_ref, list(m64.parameters()))))
    h_ref = h_ref.detach()
    hv_ref = valid_rows(h_ref, mask)

    m32, _ = tw.load_model(model_path, dtype=torch.float32)
    with torch.no_grad():
        e32 = rel(valid_rows(m32(inp["ids"], mask), mask), hv_ref)
    check("twin float32 vs float64", e32 <= TOL_TWIN_F32, f"rel {e32:.2e} (tol {TOL_TWIN_F32:g})")

    pad_inp, n0 = padding_inputs(case, inp, gen)
    with torch.no_grad():
        tv = {k: m64(pi["ids"], pi["mask"]) for k, pi in pad_inp.items()}
    e_tp = rel(tv["padded"][:, :n0], tv["unpadded"])
    e_tb = rel(tv["batched"][:1, :n0], tv["unpadded"])
    check("twin padding invariance", e_tp <= 1e-12, f"rel {e_tp:.2e}")
    check("twin batch+padding invariance", e_tb <= 1e-12, f"rel {e_tb:.2e}")

    # --- C++ forward
    B, L, D = case["B"], case["L"], cfg["d_model"]
    out, dt = run_oboro(args.oboro, "t5", model_path, in_path, os.path.join(d, "out_t5.safetensors"), args.timeout)
    h_cpp = get_out(out, "hidden", (B, L, D), "debug t5")
    e = rel(valid_rows(h_cpp, mask), hv_ref)
    check("C++ t5 hidden (valid rows) vs twin (float64)", e <= TOL_H,
          f"rel {e:.2e} (tol {TOL_H:g}), max abs {(valid_rows(h_cpp, mask).double() - hv_ref).abs().max():.2e}, "
          f"{dt:.2f} s")
    if not math.isfinite(e) or e > TOL_H:
        for b in range(B):
            print(f"         sample {b}: rel {rel(valid_rows(h_cpp[b:b+1], mask[b:b+1]), valid_rows(h_ref[b:b+1], mask[b:b+1])):.2e}")
    RESULTS.append((case["name"], "forward", e))

    # --- C++ padding / batch invariance
    pv = {}
    for k, pi in pad_inp.items():
        pth = os.path.join(d, f"inputs_{k}.safetensors")
        st.save(pth, pi)
        o, _ = run_oboro(args.oboro, "t5", model_path, pth, os.path.join(d, f"out_{k}.safetensors"), args.timeout)
        pv[k] = get_out(o, "hidden", (pi["ids"].shape[0], pi["ids"].shape[1], D), f"debug t5 ({k})")
    e1 = rel(pv["padded"][:, :n0], pv["unpadded"])
    e2 = rel(pv["batched"][:1, :n0], pv["unpadded"])
    e3 = rel(pv["unpadded"], tv["unpadded"])
    check("C++ padding invariance (valid rows, unpadded vs +4 garbage pad tokens)", e1 <= TOL_PAD,
          f"rel {e1:.2e} (L {n0} vs {n0 + 4})")
    check("C++ batch+padding invariance (sample in a padded batch of 2)", e2 <= TOL_PAD, f"rel {e2:.2e}")
    check("C++ unpadded single sample vs twin", e3 <= TOL_H, f"rel {e3:.2e}")

    # --- C++ gradients
    out, dt = run_oboro(args.oboro, "t5-grad", model_path, in_grad_path,
                        os.path.join(d, "out_grad.safetensors"), args.timeout)
    hg = get_out(out, "hidden", (B, L, D), "debug t5-grad")
    e = rel(valid_rows(hg, mask), hv_ref)
    check("C++ t5-grad hidden vs twin", e <= TOL_H, f"rel {e:.2e}, {dt:.2f} s")
    loss = get_out(out, "loss", (1,), "debug t5-grad")
    el = abs(loss.double().item() - loss_ref.item()) / abs(loss_ref.item())
    check("C++ loss vs twin", el <= TOL_LOSS, f"C++ {loss.item():.8g} twin {loss_ref.item():.8g} rel {el:.2e}")
    RESULTS.append((case["name"], "loss", el))
    missing = [n for n in names if "grad." + n not in out]
    extra = sorted(k for k in out if k.startswith("grad.") and k[5:] not in grads_ref)
    check("C++ gradient tensor set", not missing and not extra,
          f"{len(names)} expected; missing {missing[:6]} extra {extra[:6]}")
    errs = []
    for n in names:
        if "grad." + n not in out:
            continue
        g = out["grad." + n]
        if tuple(g.shape) != tuple(grads_ref[n].shape):
            errs.append((math.inf, n, f"shape {tuple(g.shape)} != {tuple(grads_ref[n].shape)}"))
            continue
        eg = rel(g, grads_ref[n])
        errs.append((eg if math.isfinite(eg) else math.inf, n, f"|g| {grads_ref[n].norm():.3e}"))
    errs.sort(key=lambda r: -r[0])
    bad = [r for r in errs if not r[0] <= TOL_GRAD]
    worst = errs[0][0] if errs else math.nan
    check(f"C++ parameter gradients vs twin ({len(errs)} tensors)", not bad and bool(errs),
          f"worst rel {worst:.2e} (tol {TOL_GRAD:g}); {len(bad)} over tolerance")
    for eg, n, info in errs[:max(4, min(len(bad), 20))]:
        print(f"         {eg:.2e}  grad.{n}  {info}")
    RESULTS.append((case["name"], "grad(worst)", worst))
    print(f"  case time {time.time() - t_case:.1f} s")


RESULTS = []


def bucket_selfcheck():
    """The spec formula (double precision) against the float32 torch expression Hugging Face evaluates,
    for the T5 defaults 32 buckets / max distance 128: they must agree for every |n| < 1000."""
    n = torch.arange(-999, 1000)
    half, exact = 16, 8
    b = (n > 0).long() * half
    a = n.abs()
    large = exact + (torch.log(a.float().clamp(min=1) / exact) / math.log(128 / exact) * (half - exact)).long()
    hf = b + torch.where(a < exact, a, torch.clamp(large, max=half - 1))
    ours = torch.tensor([tw.relative_bucket(int(v), 32, 128) for v in n])
    bad = (hf != ours).nonzero().flatten()
    check("twin bucket function == HF float32 formula (32/128, |n| < 1000)", bad.numel() == 0,
          f"first mismatch at n = {int(n[bad[0]])}" if bad.numel() else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oboro", required=True, help="path to the oboro binary")
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder, removed)")
    ap.add_argument("--cases", default="", help="comma-separated case name prefixes (default all)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per binary call")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()

    binary = shutil.which(args.oboro) or args.oboro
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"ERROR: oboro binary {args.oboro!r} not found or not executable (build it first)")
        return 2
    args.oboro = os.path.abspath(binary)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))

    tmp = None
    if args.workdir:
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="oboro_t5_twin_")
        workdir = tmp
    print(f"oboro binary: {args.oboro}\nworkdir: {workdir}")
    wanted = [c for c in args.cases.split(",") if c]
    t0 = time.time()
    bucket_selfcheck()
    try:
        for case in cases():
            if wanted and not any(case["name"].startswith(w) for w in wanted):
                continue
            try:
                run_case(case, args, workdir)
            except BinaryError as e:
                check(f"case {case['name']}: binary call", False, str(e))
    finally:
        if tmp and not FAILS:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"(files kept in {tmp} for inspection)")
    print("\nsummary (relative errors vs the float64 twin):")
    for name, what, e in RESULTS:
        print(f"  {name:34s} {what:12s} {e:.2e}")
    print(f"total {time.time() - t0:.1f} s")
    if FAILS:
        print(f"FAILED: {len(FAILS)} check(s):")
        for f in FAILS:
            print(f"  - {f}")
        return 1
    print("ALL PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
