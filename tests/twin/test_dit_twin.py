#!/usr/bin/python3
"""Compare the C++ oboro DiT against the PyTorch twin (spec §2-5, §9).

    /usr/bin/python3 tests/twin/test_dit_twin.py --oboro build/oboro [--workdir DIR]

Uses the debug contract of the binary:
  oboro debug dit      --model M --inputs IN --output OUT   (IN: x, t, txt, txt_mask -> OUT: v)
  oboro debug dit-grad --model M --inputs IN --output OUT   (IN also: target -> OUT: v, loss,
                                                             grad.<param> for every parameter,
                                                             loss = mean((v - target)^2))
The reference is the twin in float64 loaded from the same (F32) model file and inputs.
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
import oboro_twin as tw          # noqa: E402
import safetensors_py as st      # noqa: E402

TOL_V = 1e-5
TOL_LOSS = 1e-5
TOL_GRAD = 1e-4
TOL_PAD = 1e-5
TOL_TWIN_F32 = 1e-4
# mixed_precision = "bf16" (MatmulPrecision::BF16) against the twin with the same BF16-rounded GEMM operands
# (twin_common.bf16_linear). BF16 rounding is discontinuous: activations that differ by one F32 ulp round to
# neighbouring BF16 values now and then, and the difference cascades through the layers, so two correct BF16
# implementations agree only to a few 1e-3 (the twin in float32 vs float64 shows that spread itself). The check:
# C++ vs the float64 BF16 twin within BF16_SPREAD x the twin's own float32-vs-float64 spread, over all outputs and
# over all gradients, and within BF16_VS_F32 of the F32 twin.
BF16_SPREAD = 3.0
BF16_VS_F32 = 3e-2

from twin_common import FAILS, BinaryError, bf16_linear, check, get_out, rel, run_oboro  # noqa: E402


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------

def cases():
    return [
        dict(name="a-tiny-mmh",
             cfg=tw.make_config("tiny", text_dim=64, latent_channels=16, patch_size=2),
             B=2, latent=(16, 8, 8), L=5, pads=[0, 2], t=[0.25, 0.8], seed=101, bf16=True),
        dict(name="b-nonsquare-8layer-mmh-cond128",
             cfg=tw.normalize_config(dict(hidden_size=192, heads=[8, 8, 16, 16, 24, 24, 48, 48],
                                          ffn_hidden_size=320, text_dim=48, latent_channels=4,
                                          patch_size=2, cond_size=128)),
             B=2, latent=(4, 6, 10), L=6, pads=[3, 0], t=[0.6, 0.05], seed=202, bf16=True),
        dict(name="c-uniform-patch1-theta1000",
             cfg=tw.normalize_config(dict(hidden_size=64, heads=[4, 4, 4, 4], ffn_hidden_size=96,
                                          text_dim=40, latent_channels=3, patch_size=1,
                                          rope_theta=1000.0)),
             B=2, latent=(3, 6, 5), L=4, pads=[0, 1], t=[0.9, 0.35], seed=303),
    ]


def make_inputs(case, gen):
    cfg = case["cfg"]
    B, L = case["B"], case["L"]
    C, h, w = case["latent"]
    x = torch.randn(B, C, h, w, generator=gen)
    t = torch.tensor(case["t"], dtype=torch.float32)
    txt = torch.randn(B, L, cfg["text_dim"], generator=gen)
    mask = torch.ones(B, L)
    for b, k in enumerate(case["pads"]):
        if k:
            mask[b, L - k:] = 0.0
            txt[b, L - k:] = 5.0 * torch.randn(k, cfg["text_dim"], generator=gen)  # garbage
    target = torch.randn(B, C, h, w, generator=gen)
    return dict(x=x, t=t, txt=txt, txt_mask=mask, target=target)


def f32_sinusoid(t, dtype):
    """The timestep sinusoid as a float32 implementation would compute it."""
    k = torch.arange(128, dtype=torch.float32)
    phi = torch.exp(-math.log(10000.0) * k / 128)
    ang = (1000.0 * t.float())[:, None] * phi[None, :]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1).to(dtype)


def twin_forward(model, inp):
    return model(inp["x"], inp["t"], inp["txt"], inp["txt_mask"])


def run_case(case, args, workdir):
    cfg = case["cfg"]
    print(f"\n=== case {case['name']}: D={cfg['hidden_size']} heads={cfg['heads']} "
          f"F={cfg['ffn_hidden_size']} C={cfg['cond_size']} text_dim={cfg['text_dim']} "
          f"latent={case['latent']} p={cfg['patch_size']} theta={cfg['rope_theta']} "
          f"B={case['B']} L={case['L']} pads={case['pads']}", flush=True)
    t_case = time.time()
    gen = torch.Generator().manual_seed(case["seed"])
    d = os.path.join(workdir, case["name"])
    os.makedirs(d, exist_ok=True)
    model_path = os.path.join(d, "model.safetensors")
    tw.save_model(model_path, cfg, tw.random_state_dict(cfg, seed=case["seed"]))
    inp = make_inputs(case, gen)
    in_path = os.path.join(d, "inputs.safetensors")
    st.save(in_path, {k: inp[k] for k in ("x", "t", "txt", "txt_mask")})
    in_grad_path = os.path.join(d, "inputs_grad.safetensors")
    st.save(in_grad_path, inp)

    # --- reference: twin in float64 from the same file
    m64, cfg_file = tw.load_model(model_path, dtype=torch.float64)
    assert cfg_file == cfg
    v_ref = twin_forward(m64, inp)
    loss_ref = ((v_ref - inp["target"].double()) ** 2).mean()
    names = [n for n, _ in m64.named_parameters()]
    grads_ref = dict(zip(names, torch.autograd.grad(loss_ref, list(m64.parameters()))))
    v_ref = v_ref.detach()

    # --- twin self-checks
    m32, _ = tw.load_model(model_path, dtype=torch.float32)
    with torch.no_grad():
        e32 = rel(twin_forward(m32, inp), v_ref)
        orig = tw.timestep_sinusoid
        tw.timestep_sinusoid = f32_sinusoid
        try:
            e_sin = rel(twin_forward(m64, inp), v_ref)
        finally:
            tw.timestep_sinusoid = orig
    check("twin float32 vs float64", e32 <= TOL_TWIN_F32, f"rel {e32:.2e} (tol {TOL_TWIN_F32:g})")
    print(f"  [info] a float32 timestep sinusoid alone moves v by rel {e_sin:.2e} "
          f"(compute it in double to stay well inside {TOL_V:g})")

    pad_inp = padding_inputs(case, inp, gen)
    with torch.no_grad():
        tv = {k: twin_forward(m64, pi) for k, pi in pad_inp.items()}
    e_tp = rel(tv["padded"], tv["unpadded"])
    e_tb = rel(tv["batched"][:1], tv["unpadded"])
    check("twin padding invariance", e_tp <= 1e-12, f"rel {e_tp:.2e}")
    check("twin batch+padding invariance", e_tb <= 1e-12, f"rel {e_tb:.2e}")

    # --- C++ forward
    B, (C, h, w) = case["B"], case["latent"]
    out, dt = run_oboro(args.oboro, "dit", model_path, in_path,
                        os.path.join(d, "out_dit.safetensors"), args.timeout)
    v_cpp = get_out(out, "v", (B, C, h, w), "debug dit")
    e = rel(v_cpp, v_ref)
    check("C++ dit v vs twin (float64)", e <= TOL_V,
          f"rel {e:.2e} (tol {TOL_V:g}), max abs {(v_cpp.double() - v_ref).abs().max():.2e}, "
          f"|v| rms {v_ref.pow(2).mean().sqrt():.3f}, {dt:.2f} s")
    if not math.isfinite(e) or e > TOL_V:
        for b in range(B):
            print(f"         sample {b}: rel {rel(v_cpp[b], v_ref[b]):.2e}")

    # --- C++ padding / batch invariance
    pv = {}
    for k, pi in pad_inp.items():
        pth = os.path.join(d, f"inputs_{k}.safetensors")
        st.save(pth, pi)
        o, _ = run_oboro(args.oboro, "dit", model_path, pth,
                         os.path.join(d, f"out_{k}.safetensors"), args.timeout)
        pv[k] = get_out(o, "v", tuple(pi["x"].shape), f"debug dit ({k})")
    e1 = rel(pv["padded"], pv["unpadded"])
    e2 = rel(pv["batched"][:1], pv["unpadded"])
    e3 = rel(pv["unpadded"], tv["unpadded"])
    check("C++ padding invariance (unpadded vs +garbage padded text rows)", e1 <= TOL_PAD,
          f"rel {e1:.2e} (L {pad_inp['unpadded']['txt'].shape[1]} vs "
          f"{pad_inp['padded']['txt'].shape[1]})")
    check("C++ batch+padding invariance (sample in a padded batch of 2)", e2 <= TOL_PAD,
          f"rel {e2:.2e}")
    check("C++ unpadded single sample vs twin", e3 <= TOL_V, f"rel {e3:.2e}")

    # --- C++ gradients
    if args.no_grad:
        print("  [SKIP] dit-grad (--no-grad)")
    else:
        out, dt = run_oboro(args.oboro, "dit-grad", model_path, in_grad_path,
                            os.path.join(d, "out_grad.safetensors"), args.timeout)
        vg = get_out(out, "v", (B, C, h, w), "debug dit-grad")
        e = rel(vg, v_ref)
        check("C++ dit-grad v vs twin", e <= TOL_V, f"rel {e:.2e}, {dt:.2f} s")
        loss = get_out(out, "loss", (1,), "debug dit-grad")
        el = abs(loss.double().item() - loss_ref.item()) / abs(loss_ref.item())
        check("C++ loss vs twin", el <= TOL_LOSS,
              f"C++ {loss.item():.8g} twin {loss_ref.item():.8g} rel {el:.2e}")
        missing = [n for n in names if "grad." + n not in out]
        extra = sorted(k for k in out if k.startswith("grad.") and k[5:] not in grads_ref)
        check("C++ gradient tensor set", not missing and not extra,
              f"{len(names)} expected; missing {missing[:6]}{'...' if len(missing) > 6 else ''}"
              f" extra {extra[:6]}")
        errs = []
        for n in names:
            if "grad." + n not in out:
                continue
            g = out["grad." + n]
            if tuple(g.shape) != tuple(grads_ref[n].shape):
                errs.append((math.inf, n, f"shape {tuple(g.shape)} != {tuple(grads_ref[n].shape)}"))
                continue
            eg = rel(g, grads_ref[n])
            errs.append((eg if math.isfinite(eg) else math.inf, n,
                         f"|g| {grads_ref[n].norm():.3e}"))
        errs.sort(key=lambda r: -r[0])
        bad = [r for r in errs if not r[0] <= TOL_GRAD]
        worst = errs[0][0] if errs else math.nan
        check(f"C++ parameter gradients vs twin ({len(errs)} tensors)", not bad and bool(errs),
              f"worst rel {worst:.2e} (tol {TOL_GRAD:g}); {len(bad)} over tolerance")
        for eg, n, info in errs[:max(5, min(len(bad), 20))]:
            print(f"         {eg:.2e}  grad.{n}  {info}")
        if case.get("bf16"):
            check_bf16(case, args, d, model_path, in_grad_path, inp, v_ref, grads_ref, names)
    print(f"  case time {time.time() - t_case:.1f} s")


def check_bf16(case, args, d, model_path, in_grad_path, inp, v_ref, grads_ref, names):
    """dit-grad with --matmul-precision bf16 against the twin whose Linear GEMMs round their operands."""
    B, (C, h, w) = case["B"], case["latent"]

    def flat(gs):
        return torch.cat([gs[n].double().reshape(-1) for n in names])

    twin = {}
    for dtype in (torch.float64, torch.float32):
        m, _ = tw.load_model(model_path, dtype=dtype)
        x = {k: (v.to(dtype) if k != "t" else v) for k, v in inp.items()}
        with bf16_linear():
            v = twin_forward(m, x)
            loss = ((v - x["target"]) ** 2).mean()
            g = dict(zip(names, torch.autograd.grad(loss, list(m.parameters()))))
        twin[dtype] = (v.detach().double(), flat(g))
    (v64, g64), (v32, g32) = twin[torch.float64], twin[torch.float32]
    out, dt = run_oboro(args.oboro, "dit-grad", model_path, in_grad_path,
                        os.path.join(d, "out_grad_bf16.safetensors"), args.timeout,
                        extra=["--matmul-precision", "bf16"])
    vg = get_out(out, "v", (B, C, h, w), "debug dit-grad --matmul-precision bf16")
    missing = [n for n in names if "grad." + n not in out or tuple(out["grad." + n].shape) != tuple(grads_ref[n].shape)]
    check("C++ bf16 gradient tensor set", not missing, f"missing or misshapen: {missing[:6]}")
    if missing:
        return
    gc = flat({n: out["grad." + n] for n in names})
    for what, c, t64, t32, f32 in (("v", vg, v64, v32, v_ref), ("all gradients", gc, g64, g32, flat(grads_ref))):
        e, spread, e_f32 = rel(c, t64), rel(t32, t64), rel(c, f32)
        check(f"C++ bf16 {what} vs bf16 twin", e <= BF16_SPREAD * spread and e_f32 <= BF16_VS_F32,
              f"rel {e:.2e} (tol {BF16_SPREAD:g} x the twin's float32-vs-float64 spread {spread:.2e}); "
              f"vs the F32 twin rel {e_f32:.2e} (tol {BF16_VS_F32:g})")


def padding_inputs(case, inp, gen):
    """Sample 0 with only its valid text rows; the same with 3 extra garbage padded rows;
    and the padded one batched with a second, longer sample."""
    cfg = case["cfg"]
    n_valid = int(inp["txt_mask"][0].sum().item())
    x0, t0 = inp["x"][:1], inp["t"][:1]
    txt0 = inp["txt"][:1, :n_valid]
    unp = dict(x=x0, t=t0, txt=txt0, txt_mask=torch.ones(1, n_valid))
    k = 3
    txt_p = torch.cat([txt0, 7.0 * torch.randn(1, k, cfg["text_dim"], generator=gen)], dim=1)
    m_p = torch.cat([torch.ones(1, n_valid), torch.zeros(1, k)], dim=1)
    pad = dict(x=x0, t=t0, txt=txt_p, txt_mask=m_p)
    Lb = n_valid + k
    bat = dict(x=torch.cat([x0, torch.randn(x0.shape, generator=gen)]),
               t=torch.cat([t0, torch.tensor([0.71])]),
               txt=torch.cat([txt_p, torch.randn(1, Lb, cfg["text_dim"], generator=gen)]),
               txt_mask=torch.cat([m_p, torch.ones(1, Lb)]))
    return {"unpadded": unp, "padded": pad, "batched": bat}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oboro", required=True, help="path to the oboro binary")
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder, removed)")
    ap.add_argument("--cases", default="", help="comma-separated case name prefixes (default all)")
    ap.add_argument("--no-grad", action="store_true", help="skip the dit-grad checks")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per binary call")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()

    binary = shutil.which(args.oboro) or args.oboro
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"ERROR: oboro binary {args.oboro!r} not found or not executable "
              f"(build it first, e.g. cmake --build build)")
        return 2
    args.oboro = os.path.abspath(binary)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))

    tmp = None
    if args.workdir:
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="oboro_twin_")
        workdir = tmp
    print(f"oboro binary: {args.oboro}\nworkdir: {workdir}")
    wanted = [c for c in args.cases.split(",") if c]
    t0 = time.time()
    status = 0
    try:
        for case in cases():
            if wanted and not any(case["name"].startswith(wc) for wc in wanted):
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
    print(f"\ntotal {time.time() - t0:.1f} s")
    if FAILS:
        print(f"FAILED: {len(FAILS)} check(s):")
        for f in FAILS:
            print(f"  - {f}")
        status = 1
    else:
        print("ALL PASS")
    return status


if __name__ == "__main__":
    sys.exit(main())
