#!/usr/bin/python3
"""Standalone checks of the oboro PyTorch twin (no C++ binary needed).

    /usr/bin/python3 tests/twin/selftest_twin.py

Exits 0 when every check passes, 1 otherwise.
"""

import math
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oboro_twin as tw          # noqa: E402
import safetensors_py as st      # noqa: E402

FAILS = []


def check(name, ok, detail=""):
    print(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""),
          flush=True)
    if not ok:
        FAILS.append(name)


def rel(a, b):
    a = a.double()
    b = b.double()
    nb = b.norm().item()
    return (a - b).norm().item() / (nb if nb > 0 else 1.0)


# ----------------------------------------------------------------------------
def test_patchify():
    g = torch.Generator().manual_seed(1)
    for (B, C, h, w, p) in [(2, 3, 4, 6, 2), (1, 16, 6, 10, 2), (1, 2, 6, 9, 3), (1, 3, 2, 5, 1)]:
        x = torch.randn(B, C, h, w, generator=g, dtype=torch.float64)
        tok = tw.patchify(x, p)
        hp, wp = h // p, w // p
        ref = torch.empty(B, hp * wp, C * p * p, dtype=torch.float64)
        for b in range(B):
            for y in range(hp):
                for xx in range(wp):
                    n = y * wp + xx
                    for c in range(C):
                        for i in range(p):
                            for j in range(p):
                                ref[b, n, c * p * p + i * p + j] = x[b, c, y * p + i, xx * p + j]
        err = (tok - ref).abs().max().item()
        back = tw.unpatchify(tok, p, hp, wp)
        err2 = (back - x).abs().max().item()
        check(f"patchify ordering B{B} C{C} {h}x{w} p{p}", err == 0 and err2 == 0,
              f"max|tok-loop|={err:.1e} max|unpatchify(patchify(x))-x|={err2:.1e}")


def test_rope():
    g = torch.Generator().manual_seed(2)
    theta = 10000.0
    for d in (4, 8, 16, 32):
        B, n = 2, 3
        hp, wp, L = 3, 5, 2
        S = L + hp * wp
        rows = torch.tensor([0] * L + [y for y in range(hp) for _ in range(wp)])
        cols = torch.tensor([0] * L + [x for _ in range(hp) for x in range(wp)])
        ang = tw.rope_angles(rows, cols, d, theta)
        q = torch.randn(B, S, n, d, generator=g, dtype=torch.float64)
        out = tw.apply_rope(q, torch.cos(ang), torch.sin(ang))
        ref = q.clone()
        for s in range(S):
            r, c = int(rows[s]), int(cols[s])
            for p in range(d // 2):
                if p < d // 4:
                    a = r * theta ** (-4.0 * p / d)
                else:
                    a = c * theta ** (-4.0 * (p - d // 4) / d)
                ca, sa = math.cos(a), math.sin(a)
                for b in range(B):
                    for h in range(n):
                        x0 = q[b, s, h, 2 * p].item()
                        x1 = q[b, s, h, 2 * p + 1].item()
                        ref[b, s, h, 2 * p] = x0 * ca - x1 * sa
                        ref[b, s, h, 2 * p + 1] = x0 * sa + x1 * ca
        err = (out - ref).abs().max().item()
        txt_err = (out[:, :L] - q[:, :L]).abs().max().item()
        check(f"RoPE2D vs per-pair loop d={d}", err < 1e-12 and txt_err == 0,
              f"max err {err:.1e}, text rows changed by {txt_err:.1e}")


def test_timestep():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    emb = tw.timestep_sinusoid(t, torch.float64)
    ref = torch.empty(3, 256, dtype=torch.float64)
    for b in range(3):
        for k in range(128):
            phi = math.exp(-math.log(10000.0) * k / 128)
            ref[b, k] = math.cos(1000.0 * t[b].item() * phi)
            ref[b, 128 + k] = math.sin(1000.0 * t[b].item() * phi)
    err = (emb - ref).abs().max().item()
    check("timestep sinusoid [cos, sin], t_s = 1000 t", err < 1e-12, f"max err {err:.1e}")


# ----------------------------------------------------------------------------
def naive_forward(model, x, t, txt, mask):
    """Literal, loop-based reading of spec §2-4 (float64), for tiny sizes only."""
    cfg = model.cfg
    P_ = {k: v.detach().double() for k, v in model.state_dict().items()}
    D, p = cfg["hidden_size"], cfg["patch_size"]
    eps = cfg["norm_eps"]
    theta = float(cfg["rope_theta"])
    B, C, h, w = x.shape
    L = txt.shape[1]
    hp, wp = h // p, w // p
    N = hp * wp

    def lin(name, v, bias=True):
        y = P_[name + ".weight"] @ v
        return y + P_[name + ".bias"] if bias else y

    def silu(v):
        return v / (1 + torch.exp(-v))

    def rms(v, wname):
        return v / math.sqrt(float((v * v).mean()) + eps) * P_[wname]

    def ln(v, wname, bname, e):
        mu = v.mean()
        var = ((v - mu) ** 2).mean()
        y = (v - mu) / math.sqrt(float(var) + e)
        if wname:
            y = y * P_[wname] + P_[bname]
        return y

    out = torch.zeros(B, C, h, w, dtype=torch.float64)
    for b in range(B):
        ts = 1000.0 * float(t[b])
        sin_emb = torch.tensor([math.cos(ts * math.exp(-math.log(10000.0) * k / 128)) for k in range(128)]
                               + [math.sin(ts * math.exp(-math.log(10000.0) * k / 128)) for k in range(128)],
                               dtype=torch.float64)
        temb = lin("t_embedder.mlp.2", silu(lin("t_embedder.mlp.0", sin_emb)))
        bemb = lin("bos_embedder.mlp.2", silu(lin("bos_embedder.mlp.0", txt[b, 0].double())))
        c = temb + bemb
        sc = silu(c)
        toks, pos, valid = [], [], []
        for l in range(L):
            toks.append(lin("cap_embedder.1", rms(txt[b, l].double(), "cap_embedder.0.weight")))
            pos.append((0, 0))
            valid.append(bool(mask[b, l] > 0.5))
        for y in range(hp):
            for xx in range(wp):
                feat = torch.zeros(C * p * p, dtype=torch.float64)
                for ch in range(C):
                    for i in range(p):
                        for j in range(p):
                            feat[ch * p * p + i * p + j] = x[b, ch, y * p + i, xx * p + j]
                toks.append(lin("x_embedder", feat))
                pos.append((y, xx))
                valid.append(True)
        S = len(toks)
        for li, nh in enumerate(cfg["heads"]):
            pre = f"layers.{li}."
            d = D // nh
            mod = lin(pre + "adaLN_modulation.1", sc)
            s_a, g_a, s_f, g_f = mod[:D], mod[D:2 * D], mod[2 * D:3 * D], mod[3 * D:]
            Q, K, V = [], [], []
            for s in range(S):
                u = rms(toks[s], pre + "attention_norm1.weight") * (1 + s_a)
                qkv = lin(pre + "attention.qkv", u, bias=False)
                q = ln(qkv[:D], pre + "attention.q_norm.weight", pre + "attention.q_norm.bias", eps)
                k = ln(qkv[D:2 * D], pre + "attention.k_norm.weight", pre + "attention.k_norm.bias", eps)
                v = qkv[2 * D:]
                r, cc = pos[s]
                for vec in (q, k):
                    for hh in range(nh):
                        for pp in range(d // 2):
                            if pp < d // 4:
                                a = r * theta ** (-4.0 * pp / d)
                            else:
                                a = cc * theta ** (-4.0 * (pp - d // 4) / d)
                            i0 = hh * d + 2 * pp
                            a0, a1 = float(vec[i0]), float(vec[i0 + 1])
                            vec[i0] = a0 * math.cos(a) - a1 * math.sin(a)
                            vec[i0 + 1] = a0 * math.sin(a) + a1 * math.cos(a)
                Q.append(q)
                K.append(k)
                V.append(v)
            new = []
            for s in range(S):
                o = torch.zeros(D, dtype=torch.float64)
                for hh in range(nh):
                    sl = slice(hh * d, (hh + 1) * d)
                    sc_ = [float(Q[s][sl] @ K[j][sl]) / math.sqrt(d) if valid[j] else -math.inf
                           for j in range(S)]
                    m = max(sc_)
                    e = [math.exp(z - m) for z in sc_]
                    z = sum(e)
                    for j in range(S):
                        if e[j] != 0.0:
                            o[sl] += (e[j] / z) * V[j][sl]
                a_out = lin(pre + "attention.out", o, bias=False)
                xs = toks[s] + torch.tanh(g_a) * rms(a_out, pre + "attention_norm2.weight")
                u = rms(xs, pre + "ffn_norm1.weight") * (1 + s_f)
                f = lin(pre + "feed_forward.w2",
                        silu(lin(pre + "feed_forward.w1", u, False)) * lin(pre + "feed_forward.w3", u, False),
                        False)
                new.append(xs + torch.tanh(g_f) * rms(f, pre + "ffn_norm2.weight"))
            toks = new
        scale = lin("final_layer.adaLN_modulation.1", sc)
        for n in range(N):
            y, xx = n // wp, n % wp
            o = lin("final_layer.linear", ln(toks[L + n], None, None, 1e-6) * (1 + scale))
            for ch in range(C):
                for i in range(p):
                    for j in range(p):
                        out[b, ch, y * p + i, xx * p + j] = o[ch * p * p + i * p + j]
    return out


def make_inputs(cfg, B, h, w, L, n_pad, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg["latent_channels"], h, w, generator=g)
    t = torch.rand(B, generator=g)
    txt = torch.randn(B, L, cfg["text_dim"], generator=g)
    mask = torch.ones(B, L)
    for b, k in enumerate(n_pad):
        if k:
            mask[b, L - k:] = 0
            txt[b, L - k:] = 5.0 * torch.randn(k, cfg["text_dim"], generator=g)
    return x, t, txt, mask


def test_naive():
    for cfg, (h, w), pads in [
        (dict(hidden_size=16, heads=[2, 4], ffn_hidden_size=24, text_dim=8,
              latent_channels=2, patch_size=2), (4, 6), [0, 2]),
        (dict(hidden_size=24, heads=[6, 2], ffn_hidden_size=20, text_dim=5,
              latent_channels=3, patch_size=1, cond_size=12), (3, 2), [1, 0]),
    ]:
        cfg = tw.normalize_config(cfg)
        model = tw.OboroDiT(cfg)
        model.load_state_dict(tw.random_state_dict(cfg, seed=3))
        model = model.double()
        x, t, txt, mask = make_inputs(cfg, 2, h, w, 4, pads, seed=4)
        with torch.no_grad():
            v = model(x, t, txt, mask)
        ref = naive_forward(model, x.double(), t.double(), txt.double(), mask)
        e = rel(v, ref)
        check(f"twin vs naive loop implementation D{cfg['hidden_size']} heads {cfg['heads']} "
              f"p{cfg['patch_size']}", e < 1e-12, f"rel err {e:.2e}")


def test_padding_invariance():
    cfg = tw.make_config("tiny", text_dim=32)
    model = tw.OboroDiT(cfg)
    model.load_state_dict(tw.random_state_dict(cfg, seed=5))
    model = model.double()
    g = torch.Generator().manual_seed(6)
    C = cfg["latent_channels"]
    x = torch.randn(1, C, 8, 6, generator=g)
    t = torch.tensor([0.37])
    txt = torch.randn(1, 4, 32, generator=g)
    with torch.no_grad():
        v0 = model(x, t, txt, torch.ones(1, 4))
        txt_p = torch.cat([txt, 10 * torch.randn(1, 5, 32, generator=g)], dim=1)
        m_p = torch.cat([torch.ones(1, 4), torch.zeros(1, 5)], dim=1)
        v1 = model(x, t, txt_p, m_p)
        # batched with another, longer sample
        x2 = torch.cat([x, torch.randn(1, C, 8, 6, generator=g)])
        t2 = torch.tensor([0.37, 0.9])
        txt2 = torch.cat([txt_p, torch.randn(1, 9, 32, generator=g)])
        m2 = torch.cat([m_p, torch.ones(1, 9)])
        v2 = model(x2, t2, txt2, m2)
    e1, e2 = rel(v1, v0), rel(v2[:1], v0)
    check("twin padding invariance (5 garbage padded text rows)", e1 < 1e-13, f"rel err {e1:.2e}")
    check("twin batch + padding invariance", e2 < 1e-13, f"rel err {e2:.2e}")
    # sanity: the mask matters (unmasked garbage changes the output)
    with torch.no_grad():
        v3 = model(x, t, txt_p, torch.ones(1, 9))
    e3 = rel(v3, v0)
    check("unmasked garbage changes the output (mask is live)", e3 > 1e-3, f"rel diff {e3:.2e}")


def test_dtypes_and_grad():
    cfg = tw.make_config("tiny", text_dim=32)
    sd = tw.random_state_dict(cfg, seed=7)
    m64 = tw.OboroDiT(cfg)
    m64.load_state_dict(sd)
    m32 = tw.OboroDiT(cfg)
    m32.load_state_dict(sd)
    m64 = m64.double()
    x, t, txt, mask = make_inputs(cfg, 2, 8, 8, 5, [0, 2], seed=8)
    with torch.no_grad():
        e = rel(m32(x, t, txt, mask), m64(x, t, txt, mask))
    check("twin float32 vs float64", e < 1e-5, f"rel err {e:.2e}")
    with torch.no_grad():
        ref = m64(x, t, txt, mask)
        e = rel(m64.set_attention_impl("fast")(x, t, txt, mask), ref)
        m64.set_attention_impl("explicit")
    check("attention impl 'fast' == 'explicit' (float64)", e < 1e-13, f"rel err {e:.2e}")

    # directional finite-difference check of the parameter gradient (float64)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(9)).double()
    params = [p for _, p in m64.named_parameters()]
    loss = ((m64(x, t, txt, mask) - target) ** 2).mean()
    grads = torch.autograd.grad(loss, params)
    gdir = torch.Generator().manual_seed(10)
    dirs = [torch.randn(p.shape, generator=gdir, dtype=torch.float64) for p in params]
    an = sum((g_ * d_).sum() for g_, d_ in zip(grads, dirs)).item()
    eps = 1e-5
    with torch.no_grad():
        for p, d_ in zip(params, dirs):
            p.add_(eps * d_)
        lp = ((m64(x, t, txt, mask) - target) ** 2).mean().item()
        for p, d_ in zip(params, dirs):
            p.sub_(2 * eps * d_)
        lm = ((m64(x, t, txt, mask) - target) ** 2).mean().item()
        for p, d_ in zip(params, dirs):
            p.add_(eps * d_)
    fd = (lp - lm) / (2 * eps)
    e = abs(fd - an) / abs(an)
    check("twin gradient vs central finite difference", e < 1e-6,
          f"autograd {an:.10e} fd {fd:.10e} rel {e:.1e}")
    zero = [n for (n, _), g_ in zip(m64.named_parameters(), grads) if g_.abs().max() == 0]
    check("every parameter gets a non-zero gradient", not zero, f"zero: {zero[:5]}")


def test_param_counts():
    cfg = tw.make_config("oboro-1b", text_dim=4096)
    n_shapes = tw.count_params(cfg)
    meta = tw.OboroDiT(cfg, device="meta")
    names = [n for n, _ in meta.named_parameters()]
    n_meta = sum(p.numel() for p in meta.parameters())
    check("oboro-1b parameter count (shapes)", n_shapes == 1122513472, f"{n_shapes:,}")
    check("oboro-1b parameter count (meta-device model)", n_meta == 1122513472, f"{n_meta:,}")
    check("module parameter names == §9 names", names == list(tw.param_shapes(cfg)),
          f"{len(names)} names")
    check("oboro-1b F", cfg["ffn_hidden_size"] == 4096 and cfg["cond_size"] == 1024,
          f"F={cfg['ffn_hidden_size']} C={cfg['cond_size']}")
    per_block = sum(math.prod(s) for k, s in tw.param_shapes(cfg).items() if k.startswith("layers.0."))
    check("oboro-1b per-block parameters", per_block == 34621440, f"{per_block:,}")
    for name, approx in (("tiny", 4.1e6), ("small", 22.7e6)):
        c = tw.make_config(name, text_dim=4096)
        n = tw.count_params(c)
        ok = round(n / 1e5) == round(approx / 1e5)
        check(f"{name} parameter count ≈ {approx / 1e6:.1f}M", ok,
              f"{n:,} heads {c['heads']} F {c['ffn_hidden_size']}")


def test_state_dict_and_files():
    cfg = tw.make_config("tiny", text_dim=16, latent_channels=4)
    sd = tw.random_state_dict(cfg, seed=11)
    model = tw.OboroDiT(cfg)
    res = model.load_state_dict(sd, strict=True)
    check("random_state_dict loads strictly", not res.missing_keys and not res.unexpected_keys)
    trivial = [k for k, v in sd.items() if (v == 0).all() or (v == 1).all() or v.std() < 1e-3]
    check("all random tensors non-trivial", not trivial, str(trivial[:5]))
    m2 = tw.randomize_(tw.OboroDiT(cfg), seed=11)
    same = all(torch.equal(m2.state_dict()[k], v) for k, v in sd.items())
    check("randomize_ == random_state_dict", same)

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        tw.save_model(path, cfg, sd)
        model2, cfg2 = tw.load_model(path, dtype=torch.float32)
        same = all(torch.equal(model2.state_dict()[k], v) for k, v in sd.items())
        check("model file round trip (config + tensors)", same and cfg2 == cfg)
        hdr, meta, _ = st.read_header(path)
        check("model file metadata", meta.get("modelspec.architecture") == "oboro-dit-v1"
              and all(v["dtype"] == "F32" for v in hdr.values()))

        g = torch.Generator().manual_seed(12)
        ts = {
            "f32": torch.randn(3, 4, generator=g),
            "f64": torch.randn(5, generator=g, dtype=torch.float64),
            "f16": torch.randn(2, 3, generator=g).half(),
            "bf16": torch.randn(7, generator=g).bfloat16(),
            "i32": torch.arange(-3, 9, dtype=torch.int32).reshape(3, 4),
            "i64": torch.tensor([-(2 ** 40), 5], dtype=torch.int64),
            "u8": torch.tensor([0, 255], dtype=torch.uint8),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 3),
        }
        p2 = os.path.join(d, "t.safetensors")
        st.save(p2, ts, {"a": "b"})
        back, meta = st.load(p2)
        ok = meta == {"a": "b"} and set(back) == set(ts) and all(
            back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v)
            for k, v in ts.items())
        check("safetensors round trip F32/F64/F16/BF16/I32/I64/U8", ok)
        with open(p2, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        check("safetensors header padded to 8 bytes", n % 8 == 0, f"header {n} bytes")

        # F8_E4M3 decoding of a hand-made file
        import json
        import struct
        vals = bytes([0x00, 0x38, 0xB8, 0x7E, 0x01, 0x08, 0x7F])
        hdr = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [7], "data_offsets": [0, 7]}}).encode()
        p3 = os.path.join(d, "f8.safetensors")
        with open(p3, "wb") as f:
            f.write(struct.pack("<Q", len(hdr)) + hdr + vals)
        w = st.load(p3)[0]["w"]
        exp = [0.0, 1.0, -1.0, 448.0, 2.0 ** -9, 2.0 ** -6]
        ok = w[:6].tolist() == exp and math.isnan(w[6].item())
        check("safetensors F8_E4M3 decode", ok, str(w.tolist()))


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    for fn in (test_patchify, test_rope, test_timestep, test_naive, test_padding_invariance,
               test_dtypes_and_grad, test_param_counts, test_state_dict_and_files):
        try:
            fn()
        except Exception as e:  # a crash is a failure, keep going
            import traceback
            traceback.print_exc()
            check(fn.__name__, False, f"raised {type(e).__name__}: {e}")
    print(f"selftest finished in {time.time() - t0:.1f} s")
    if FAILS:
        print(f"FAILED: {len(FAILS)} check(s): {FAILS}")
        return 1
    print("ALL PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
