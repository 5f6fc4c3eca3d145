"""PyTorch reference ("twin") of the oboro DiT, written from
docs/spec.md sections 2-5 and 9.

Plain, explicit code: every norm, the RoPE and the softmax attention are written
out so that the model runs in float64 (for reference values) or float32.

    cfg = make_config("tiny", text_dim=64)
    model = OboroDiT(cfg)
    model.load_state_dict(random_state_dict(cfg, seed=0))   # strict
    v = model.to(torch.float64)(x, t, txt, txt_mask)
"""

import json
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_py import load as st_load, save as st_save  # noqa: E402

ARCHITECTURE = "oboro-dit-v1"
TIME_FREQ_DIM = 256          # sinusoid width (128 cos + 128 sin)
FINAL_LN_EPS = 1e-6          # §4: LayerNorm_noaffine(x_img, eps 1e-6)


# ----------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------

def ffn_size(hidden_size, multiple_of=256):
    """§3: F = round_up(int(2*4D/3), multiple_of)."""
    f = int(2 * 4 * hidden_size / 3)
    return ((f + multiple_of - 1) // multiple_of) * multiple_of


def mmh_heads(n_layers, stages=(8, 16, 24, 48)):
    """§3 default rule: the layer stack is split into 4 equal stages."""
    if n_layers % len(stages) != 0:
        raise ValueError(f"n_layers {n_layers} is not divisible by {len(stages)}")
    per = n_layers // len(stages)
    return [h for h in stages for _ in range(per)]


_NAMED = {
    # name: (D, layers)   (§5)
    "oboro-1b": (1536, 32),
    "small": (384, 8),
    "tiny": (192, 4),
}


def make_config(name, text_dim=4096, latent_channels=16, patch_size=2,
                schedule="mmh", uniform_heads=None, **extra):
    """Named §5 configuration as a config dict (the `oboro.config` JSON).

    schedule "mmh" uses heads 8/16/24/48 in 4 equal stages; "uniform" uses
    `uniform_heads` everywhere (default: head dim 64, a twin-side convenience,
    the spec does not fix the baseline's head count).
    """
    if name not in _NAMED:
        raise ValueError(f"unknown config {name!r}; known: {sorted(_NAMED)}")
    D, n_layers = _NAMED[name]
    if schedule == "mmh":
        heads = mmh_heads(n_layers)
    elif schedule == "uniform":
        heads = [int(uniform_heads or D // 64)] * n_layers
    else:
        raise ValueError(f"unknown head schedule {schedule!r}")
    cfg = {
        "hidden_size": D,
        "heads": heads,
        "ffn_hidden_size": ffn_size(D, 256),
        "text_dim": int(text_dim),
        "latent_channels": int(latent_channels),
        "patch_size": int(patch_size),
    }
    cfg.update(extra)
    return normalize_config(cfg)


def normalize_config(cfg):
    """Fill optional fields with their §9 defaults and check the §5 rules."""
    cfg = dict(cfg)
    for k in ("hidden_size", "heads", "ffn_hidden_size", "text_dim",
              "latent_channels", "patch_size"):
        if k not in cfg:
            raise ValueError(f"config lacks required field {k!r}")
    D = int(cfg["hidden_size"])
    heads = [int(h) for h in cfg["heads"]]
    if not heads:
        raise ValueError("heads must list at least one layer")
    for h in heads:
        if h <= 0 or D % h != 0 or (D // h) % 4 != 0:
            raise ValueError(f"hidden_size {D} with {h} heads: head dim must be an "
                             f"integer divisible by 4 (D divisible by 4*heads)")
    cfg["hidden_size"] = D
    cfg["heads"] = heads
    cfg.setdefault("cond_size", min(D, 1024))
    cfg.setdefault("norm_eps", 1e-5)
    cfg.setdefault("rope_theta", 10000.0)
    return cfg


def param_shapes(cfg):
    """OrderedDict name -> shape of every §9 tensor (no allocation)."""
    cfg = normalize_config(cfg)
    D, C = cfg["hidden_size"], cfg["cond_size"]
    Fh, T = cfg["ffn_hidden_size"], cfg["text_dim"]
    P = cfg["latent_channels"] * cfg["patch_size"] ** 2
    s = OrderedDict()
    s["t_embedder.mlp.0.weight"] = (C, TIME_FREQ_DIM)
    s["t_embedder.mlp.0.bias"] = (C,)
    s["t_embedder.mlp.2.weight"] = (C, C)
    s["t_embedder.mlp.2.bias"] = (C,)
    s["bos_embedder.mlp.0.weight"] = (C, T)
    s["bos_embedder.mlp.0.bias"] = (C,)
    s["bos_embedder.mlp.2.weight"] = (C, C)
    s["bos_embedder.mlp.2.bias"] = (C,)
    s["cap_embedder.0.weight"] = (T,)
    s["cap_embedder.1.weight"] = (D, T)
    s["cap_embedder.1.bias"] = (D,)
    s["x_embedder.weight"] = (D, P)
    s["x_embedder.bias"] = (D,)
    for i in range(len(cfg["heads"])):
        p = f"layers.{i}."
        s[p + "attention.qkv.weight"] = (3 * D, D)
        s[p + "attention.q_norm.weight"] = (D,)
        s[p + "attention.q_norm.bias"] = (D,)
        s[p + "attention.k_norm.weight"] = (D,)
        s[p + "attention.k_norm.bias"] = (D,)
        s[p + "attention.out.weight"] = (D, D)
        s[p + "feed_forward.w1.weight"] = (Fh, D)
        s[p + "feed_forward.w2.weight"] = (D, Fh)
        s[p + "feed_forward.w3.weight"] = (Fh, D)
        for n in ("attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"):
            s[p + n + ".weight"] = (D,)
        s[p + "adaLN_modulation.1.weight"] = (4 * D, C)
        s[p + "adaLN_modulation.1.bias"] = (4 * D,)
    s["final_layer.adaLN_modulation.1.weight"] = (D, C)
    s["final_layer.adaLN_modulation.1.bias"] = (D,)
    s["final_layer.linear.weight"] = (P, D)
    s["final_layer.linear.bias"] = (P,)
    return s


def count_params(cfg):
    n = 0
    for shape in param_shapes(cfg).values():
        k = 1
        for d in shape:
            k *= d
        n += k
    return n


# ----------------------------------------------------------------------------
# random weights (all tensors non-trivial, unlike a real zero-init model)
# ----------------------------------------------------------------------------

def _is_norm_weight(name):
    return (name.endswith("_norm.weight") or ".attention_norm" in name
            or ".ffn_norm" in name or name == "cap_embedder.0.weight")


def init_tensor_(name, t, gen):
    """Fill `t` in place following the random-weight rule for `name`:
    norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1), matrices N(0,1)/sqrt(fan_in)."""
    with torch.no_grad():
        if t.dim() == 1:
            t.normal_(0.0, 1.0, generator=gen).mul_(0.1)
            if _is_norm_weight(name):
                t.add_(1.0)
        else:
            fan_in = t.shape[1]
            t.normal_(0.0, 1.0, generator=gen).mul_(1.0 / math.sqrt(fan_in))
    return t


def random_state_dict(cfg, seed=0, dtype=torch.float32):
    """Random §9 state dict for `cfg` (deterministic in `seed`)."""
    gen = torch.Generator().manual_seed(int(seed))
    sd = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        sd[name] = init_tensor_(name, torch.empty(shape, dtype=torch.float32), gen).to(dtype)
    return sd


def randomize_(model, seed=0):
    """Same rule as random_state_dict, in place (no second copy of the weights).
    The values equal random_state_dict(model.cfg, seed) when the model is float32."""
    gen = torch.Generator().manual_seed(int(seed))
    params = dict(model.named_parameters())
    for name in param_shapes(model.cfg):
        p = params[name]
        if p.dtype == torch.float32:
            init_tensor_(name, p.data, gen)
        else:
            p.data.copy_(init_tensor_(name, torch.empty(p.shape), gen))
    return model


# ----------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps) over the last dim."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last dim, biased variance; weight/bias may be None."""
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    var = xc.pow(2).mean(dim=-1, keepdim=True)
    y = xc * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class LayerNormAffine(nn.Module):
    def __init__(self, dim, eps, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.bias = nn.Parameter(torch.zeros(dim, device=device))

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps)


class MLPEmbedder(nn.Module):
    """Linear(in->C), SiLU, Linear(C->C): names mlp.0 and mlp.2."""

    def __init__(self, in_dim, out_dim, device=None):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim, bias=True, device=device),
                                 nn.SiLU(),
                                 nn.Linear(out_dim, out_dim, bias=True, device=device))

    def forward(self, x):
        return self.mlp(x)


def timestep_sinusoid(t, dtype):
    """§2.1: t_s = 1000 t; phi_k = exp(-ln(10000) k/128), k = 0..127;
    emb = [cos(t_s phi), sin(t_s phi)].  Computed in float64, then cast."""
    half = TIME_FREQ_DIM // 2
    k = torch.arange(half, dtype=torch.float64, device=t.device)
    phi = torch.exp(-math.log(10000.0) * k / half)
    ts = 1000.0 * t.to(torch.float64)
    ang = ts[:, None] * phi[None, :]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1).to(dtype)


def rope_angles(rows, cols, head_dim, theta):
    """§3 RoPE2D angle table (S, head_dim/2) in float64.

    pair p < d/4 rotates by row * omega_p, pair p >= d/4 by col * omega_(p-d/4),
    omega_k = theta^(-4k/d), k = 0..d/4-1.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"head dim {head_dim} is not divisible by 4")
    q = head_dim // 4
    k = torch.arange(q, dtype=torch.float64)
    omega = theta ** (-4.0 * k / head_dim)
    a_row = rows.to(torch.float64)[:, None] * omega[None, :]
    a_col = cols.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([a_row, a_col], dim=-1)


def apply_rope(x, cos, sin):
    """x (B, S, n, d); cos/sin (S, d/2). Pair p is (x[2p], x[2p+1]);
    (a, b) -> (a cos - b sin, a sin + b cos)."""
    B, S, n, d = x.shape
    xp = x.reshape(B, S, n, d // 2, 2)
    a, b = xp[..., 0], xp[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack([a * c - b * s, a * s + b * c], dim=-1)
    return out.reshape(B, S, n, d)


class Attention(nn.Module):
    def __init__(self, dim, n_heads, eps, device=None):
        super().__init__()
        self.dim = dim
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.impl = "explicit"      # "explicit" (reference) or "fast" (benchmarks)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, device=device)
        self.q_norm = LayerNormAffine(dim, eps, device=device)
        self.k_norm = LayerNormAffine(dim, eps, device=device)
        self.out = nn.Linear(dim, dim, bias=False, device=device)

    def forward(self, x, cos, sin, key_bias):
        """x (B,S,D); cos/sin (S, d_l/2); key_bias (B,S): 0 or -inf per key."""
        B, S, D = x.shape
        n, d = self.n_heads, self.head_dim
        qkv = self.qkv(x)
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        q = self.q_norm(q)                       # full-width LayerNorm, then heads
        k = self.k_norm(k)
        q = q.reshape(B, S, n, d)                # head h = columns h*d .. (h+1)*d
        k = k.reshape(B, S, n, d)
        v = v.reshape(B, S, n, d)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        q = q.permute(0, 2, 1, 3)                # (B, n, S, d)
        k = k.permute(0, 2, 1, 3)
        v = v.permute(0, 2, 1, 3)
        if self.impl == "explicit":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
            scores = scores + key_bias[:, None, None, :]
            m = scores.amax(dim=-1, keepdim=True).detach()
            e = torch.exp(scores - m)
            p = e / e.sum(dim=-1, keepdim=True)
            o = torch.matmul(p, v)               # (B, n, S, d)
        elif self.impl == "fast":
            # same math with fewer passes (benchmarks only): bias folded into the
            # GEMM, library softmax
            bias = key_bias[:, None, None, :].expand(B, n, S, S).reshape(B * n, S, S)
            scores = torch.baddbmm(bias, q.reshape(B * n, S, d),
                                   k.reshape(B * n, S, d).transpose(1, 2),
                                   alpha=1.0 / math.sqrt(d))
            p = torch.softmax(scores, dim=-1)
            o = torch.bmm(p, v.reshape(B * n, S, d)).reshape(B, n, S, d)
        else:
            raise ValueError(f"unknown attention impl {self.impl!r}")
        o = o.permute(0, 2, 1, 3).reshape(B, S, D)
        return self.out(o)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, device=None):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False, device=device)
        self.w2 = nn.Linear(hidden, dim, bias=False, device=device)
        self.w3 = nn.Linear(dim, hidden, bias=False, device=device)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, dim, n_heads, ffn_hidden, cond, eps, device=None):
        super().__init__()
        self.attention = Attention(dim, n_heads, eps, device=device)
        self.feed_forward = FeedForward(dim, ffn_hidden, device=device)
        self.attention_norm1 = RMSNorm(dim, eps, device=device)
        self.attention_norm2 = RMSNorm(dim, eps, device=device)
        self.ffn_norm1 = RMSNorm(dim, eps, device=device)
        self.ffn_norm2 = RMSNorm(dim, eps, device=device)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(),
                                              nn.Linear(cond, 4 * dim, bias=True, device=device))

    def forward(self, x, c, cos, sin, key_bias):
        mod = self.adaLN_modulation(c)[:, None, :]          # SiLU(c) inside
        s_a, g_a, s_f, g_f = mod.chunk(4, dim=-1)
        h = self.attention(self.attention_norm1(x) * (1 + s_a), cos, sin, key_bias)
        x = x + torch.tanh(g_a) * self.attention_norm2(h)
        h = self.feed_forward(self.ffn_norm1(x) * (1 + s_f))
        x = x + torch.tanh(g_f) * self.ffn_norm2(h)
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim, cond, out_dim, device=None):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(),
                                              nn.Linear(cond, dim, bias=True, device=device))
        self.linear = nn.Linear(dim, out_dim, bias=True, device=device)

    def forward(self, x, c):
        scale = self.adaLN_modulation(c)[:, None, :]
        y = layer_norm(x, None, None, FINAL_LN_EPS) * (1 + scale)
        return self.linear(y)


# ----------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------

def patchify(x, p):
    """(B,C,h,w) -> (B, N, C*p*p); feature f = c*p*p + i*p + j, token n = y*w' + x."""
    return F.pixel_unshuffle(x, p).flatten(2).transpose(1, 2)


def unpatchify(tokens, p, hp, wp):
    """(B, N, C*p*p) -> (B, C, hp*p, wp*p); inverse of patchify."""
    B, N, P = tokens.shape
    return F.pixel_shuffle(tokens.transpose(1, 2).reshape(B, P, hp, wp), p)


class OboroDiT(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        cfg = normalize_config(cfg)
        self.cfg = cfg
        D, C = cfg["hidden_size"], cfg["cond_size"]
        T, Fh = cfg["text_dim"], cfg["ffn_hidden_size"]
        eps = float(cfg["norm_eps"])
        self.patch = cfg["patch_size"]
        self.latent_channels = cfg["latent_channels"]
        P = self.latent_channels * self.patch ** 2
        self.t_embedder = MLPEmbedder(TIME_FREQ_DIM, C, device=device)
        self.bos_embedder = MLPEmbedder(T, C, device=device)
        self.cap_embedder = nn.Sequential(RMSNorm(T, eps, device=device),
                                          nn.Linear(T, D, bias=True, device=device))
        self.x_embedder = nn.Linear(P, D, bias=True, device=device)
        self.layers = nn.ModuleList([Block(D, n, Fh, C, eps, device=device)
                                     for n in cfg["heads"]])
        self.final_layer = FinalLayer(D, C, P, device=device)

    def set_attention_impl(self, impl):
        """"explicit" (default; plain exp/sum softmax) or "fast" (baddbmm +
        torch.softmax, same result up to rounding; for benchmarks)."""
        if impl not in ("explicit", "fast"):
            raise ValueError(f"unknown attention impl {impl!r}")
        for layer in self.layers:
            layer.attention.impl = impl
        return self

    def forward(self, x, t, txt, txt_mask):
        """x (B,C,h,w), t (B,), txt (B,L,text_dim), txt_mask (B,L) 1 valid / 0 pad
        -> velocity v (B,C,h,w)."""
        dtype = self.x_embedder.weight.dtype
        x = x.to(dtype)
        txt = txt.to(dtype)
        B, Cl, h, w = x.shape
        p = self.patch
        if Cl != self.latent_channels or h % p or w % p:
            raise ValueError(f"latent {tuple(x.shape)} does not fit channels "
                             f"{self.latent_channels} / patch {p}")
        L = txt.shape[1]
        hp, wp = h // p, w // p
        N = hp * wp

        # conditioning c = t_emb + bos_emb; every modulation consumes SiLU(c)
        t_emb = self.t_embedder(timestep_sinusoid(t, dtype))
        bos_emb = self.bos_embedder(txt[:, 0, :])
        c = t_emb + bos_emb

        # joint sequence [text ; image]
        txt_tok = self.cap_embedder(txt)
        img_tok = self.x_embedder(patchify(x, p))
        seq = torch.cat([txt_tok, img_tok], dim=1)

        # positions: text (0,0); image token n = y*w' + x at (row y, col x)
        ys = torch.arange(hp).repeat_interleave(wp)
        xs = torch.arange(wp).repeat(hp)
        rows = torch.cat([torch.zeros(L, dtype=torch.long), ys])
        cols = torch.cat([torch.zeros(L, dtype=torch.long), xs])

        # key mask: -inf on padded text keys, image keys always valid
        valid = torch.cat([txt_mask.to(x.device) > 0.5,
                           torch.ones(B, N, dtype=torch.bool, device=x.device)], dim=1)
        key_bias = torch.zeros(B, L + N, dtype=dtype, device=x.device)
        key_bias = key_bias.masked_fill(~valid, float("-inf"))

        tables = {}
        for layer in self.layers:
            d = layer.attention.head_dim
            if d not in tables:
                ang = rope_angles(rows, cols, d, float(self.cfg["rope_theta"]))
                tables[d] = (torch.cos(ang).to(dtype).to(x.device),
                             torch.sin(ang).to(dtype).to(x.device))
            cos, sin = tables[d]
            seq = layer(seq, c, cos, sin, key_bias)

        out = self.final_layer(seq[:, L:, :], c)
        return unpatchify(out, p, hp, wp)


# ----------------------------------------------------------------------------
# model files
# ----------------------------------------------------------------------------

def model_metadata(cfg):
    return {"oboro.config": json.dumps(normalize_config(cfg)),
            "modelspec.architecture": ARCHITECTURE}


def save_model(path, cfg, state_dict, dtype=torch.float32):
    st_save(path, OrderedDict((k, v.detach().to(dtype)) for k, v in state_dict.items()),
         model_metadata(cfg))


def load_model(path, dtype=torch.float64):
    """Load a model file written per §9 into an OboroDiT of `dtype`."""
    tensors, meta = st_load(path)
    if "oboro.config" not in meta:
        raise ValueError(f"{path}: no oboro.config in __metadata__")
    cfg = json.loads(meta["oboro.config"])
    model = OboroDiT(cfg)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.to(dtype), cfg
