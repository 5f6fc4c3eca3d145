#!/usr/bin/python3
"""Compare the C++ FLUX.1 VAE against the PyTorch twin (spec section 8).

    /usr/bin/python3 tests/twin/test_vae_twin.py --oboro build/oboro [--workdir DIR]

Reduced width (ch 32, ch_mult [1,2,4,4], 2 encoder / 3 decoder res blocks, z 16) but the real structure and
the real key names, random weights written by this test. Uses the debug contract of the binary:
  oboro debug vae --model M --encode IN --output OUT   (IN: image (B,3,H,W) F32 -> OUT: latent (B,16,H/8,W/8),
                                                        0.3611 * (mean - 0.1159))
  oboro debug vae --model M --decode IN --output OUT   (IN: latent -> OUT: image, decoder(latent/0.3611 + 0.1159))
Files: ae.safetensors names (F32), the same weights under diffusers names (must give bit-identical outputs),
and BF16 ae weights (compared with the twin run on the same BF16-rounded values). Reference: the twin in float64.
Exit status 0 = pass, 1 = a check failed, 2 = the binary is missing / unusable.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vae_twin as tw            # noqa: E402
import safetensors_py as st      # noqa: E402
from twin_common import FAILS, BinaryError, check, get_out, rel  # noqa: E402

TOL = 1e-5
TOL_TWIN_F32 = 1e-4


def run_vae(binary, model, mode, inp, out, timeout, extra=()):
    cmd = [binary, "debug", "vae", "--model", model, f"--{mode}", inp, "--output", out, *extra]
    if os.path.exists(out):
        os.remove(out)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BinaryError(f"`{' '.join(cmd)}` timed out after {timeout} s")
    if r.returncode != 0:
        tail = (r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"))[-2000:]
        raise BinaryError(f"`{' '.join(cmd)}` exited with status {r.returncode}:\n{tail}")
    tensors, _ = st.load(out)
    return tensors, time.time() - t0


RESULTS = []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oboro", required=True, help="path to the oboro binary")
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder, removed)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per binary call")
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
        d = os.path.abspath(args.workdir)
        os.makedirs(d, exist_ok=True)
    else:
        tmp = d = tempfile.mkdtemp(prefix="oboro_vae_twin_")
    print(f"oboro binary: {args.oboro}\nworkdir: {d}")
    t_all = time.time()
    try:
        run(args, d)
    except BinaryError as e:
        check("binary call", False, str(e))
    finally:
        if tmp and not FAILS:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"(files kept in {tmp} for inspection)")
    print("\nsummary (relative errors vs the float64 twin):")
    for name, e in RESULTS:
        print(f"  {name:44s} {e:.2e}")
    print(f"total {time.time() - t_all:.1f} s")
    if FAILS:
        print(f"FAILED: {len(FAILS)} check(s):")
        for f in FAILS:
            print(f"  - {f}")
        return 1
    print("ALL PASS")
    return 0


def run(args, d):
    cfg = tw.make_config(ch=32, ch_mult=[1, 2, 4, 4], enc_blocks=2, dec_blocks=3, z=16)
    sd = tw.random_state_dict(cfg, seed=5)
    print(f"config {cfg}, {sum(t.numel() for t in sd.values())} parameters")
    ae = os.path.join(d, "ae.safetensors")
    diff = os.path.join(d, "diffusers.safetensors")
    ae16 = os.path.join(d, "ae_bf16.safetensors")
    tw.save_ae(ae, sd)
    tw.save_diffusers(diff, sd, cfg)
    tw.save_ae(ae16, sd, dtype=torch.bfloat16)
    check("twin config inferred from the names", tw.infer_config(tw.load_state_dict(ae)) == cfg)

    gen = torch.Generator().manual_seed(6)
    B, H, W = 2, 48, 64
    image = torch.rand(B, 3, H, W, generator=gen) * 2 - 1
    latent = torch.randn(B, 16, H // 8, W // 8, generator=gen)
    enc_in = os.path.join(d, "enc_in.safetensors")
    dec_in = os.path.join(d, "dec_in.safetensors")
    st.save(enc_in, {"image": image})
    st.save(dec_in, {"latent": latent})

    with torch.no_grad():
        t64 = tw.Twin(tw.load_state_dict(ae), torch.float64)
        lat_ref, img_ref = t64.encode(image), t64.decode(latent)
        t32 = tw.Twin(tw.load_state_dict(ae), torch.float32)
        e = rel(t32.encode(image), lat_ref)
        check("twin float32 vs float64 (encode)", e <= TOL_TWIN_F32, f"rel {e:.2e}")
        e = rel(t32.decode(latent), img_ref)
        check("twin float32 vs float64 (decode)", e <= TOL_TWIN_F32, f"rel {e:.2e}")
        tb = tw.Twin(tw.load_state_dict(ae16), torch.float64)  # BF16 values, computed in float64
        lat_ref16, img_ref16 = tb.encode(image), tb.decode(latent)

    outs = {}
    for label, model, lref, iref in (("ae F32", ae, lat_ref, img_ref), ("diffusers F32", diff, lat_ref, img_ref),
                                     ("ae BF16", ae16, lat_ref16, img_ref16)):
        o, dt = run_vae(args.oboro, model, "encode", enc_in, os.path.join(d, "out_enc.safetensors"), args.timeout)
        lat = get_out(o, "latent", (B, 16, H // 8, W // 8), f"debug vae --encode ({label})")
        e = rel(lat, lref)
        check(f"C++ encode vs twin ({label})", e <= TOL, f"rel {e:.2e} (tol {TOL:g}), {dt:.2f} s")
        RESULTS.append((f"encode latent, {label}", e))
        o, dt = run_vae(args.oboro, model, "decode", dec_in, os.path.join(d, "out_dec.safetensors"), args.timeout)
        img = get_out(o, "image", (B, 3, H, W), f"debug vae --decode ({label})")
        e = rel(img, iref)
        check(f"C++ decode vs twin ({label})", e <= TOL, f"rel {e:.2e} (tol {TOL:g}), {dt:.2f} s")
        RESULTS.append((f"decode image, {label}", e))
        outs[label] = (lat, img)
    a, b = outs["ae F32"], outs["diffusers F32"]
    check("diffusers layout gives bit-identical outputs to ae.safetensors",
          torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]))

    # forced tiling at a tile smaller than the latent still runs through the contract (the bound is a unit test)
    o, _ = run_vae(args.oboro, ae, "decode", dec_in, os.path.join(d, "out_tiled.safetensors"), args.timeout,
                   ("--tiled", "--tile", "4", "--overlap", "2"))
    img_t = get_out(o, "image", (B, 3, H, W), "debug vae --decode --tiled")
    e = rel(img_t, img_ref)
    check("C++ tiled decode (tile 4, overlap 2 latent px) is finite", bool(torch.isfinite(img_t).all()),
          f"rel to untiled twin {e:.2e} (informational)")

    # a broken file is one clear error naming the tensor
    broken = os.path.join(d, "broken.safetensors")
    sd2 = tw.load_state_dict(ae)
    del sd2["decoder.mid.attn_1.q.bias"]
    st.save(broken, sd2)
    r = subprocess.run([args.oboro, "debug", "vae", "--model", broken, "--decode", dec_in, "--output",
                        os.path.join(d, "x.safetensors")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    msg = r.stderr.decode(errors="replace").strip()
    check("missing tensor: exit 1 with a message naming it", r.returncode == 1 and "decoder.mid.attn_1.q.bias" in msg,
          msg[:200])


if __name__ == "__main__":
    sys.exit(main())
