"""PyTorch reference ("twin") of the oboro T5 v1.1 encoder, written from
docs/spec.md section 7.

Plain, explicit code (no transformers package): RMSNorm without mean subtraction,
attention WITHOUT 1/sqrt(d_kv) scaling plus a bucketed relative-position bias that lives
in block 0 and is shared by every layer, gated-GELU (tanh) FFN wo(gelu(wi_0 x) * wi_1 x),
no biases, no embedding scaling, final RMSNorm.  Runs in float64 (reference) or float32.

    cfg = make_config(vocab_size=100, d_model=64, d_kv=16, num_heads=4, d_ff=96, num_layers=3)
    sd = random_state_dict(cfg, seed=0)
    save_model("t5.safetensors", cfg, sd)              # oboro layout: config in metadata
    save_sharded("dir", cfg, sd, shards=2)             # HF layout: shards + index + config.json
    model, cfg = load_model("dir", dtype=torch.float64)
    hidden = model(ids, mask)                          # (B, L, d_model)
"""

import json
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402

ARCHITECTURE = "t5-v1.1-encoder"
SHARED = "shared.weight"
EMBED_ALIAS = "encoder.embed_tokens.weight"
REL_BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
FINAL_NORM = "encoder.final_layer_norm.weight"

_DEFAULTS = {"relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
             "layer_norm_epsilon": 1e-6}
_REQUIRED = ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers")


# ----------------------------------------------------------------------------
# configuration and names
# ----------------------------------------------------------------------------

def make_config(**kw):
    """Config dict with Hugging Face T5Config field names (defaults as spec section 7)."""
    cfg = dict(_DEFAULTS)
    cfg.update(kw)
    for k in _REQUIRED:
        if k not in cfg:
            raise ValueError(f"T5 config lacks {k!r}")
        cfg[k] = int(cfg[k])
    cfg["relative_attention_num_buckets"] = int(cfg["relative_attention_num_buckets"])
    cfg["relative_attention_max_distance"] = int(cfg["relative_attention_max_distance"])
    cfg["layer_norm_epsilon"] = float(cfg["layer_norm_epsilon"])
    return cfg


def block(i):
    return f"encoder.block.{i}."


def param_shapes(cfg):
    """OrderedDict name -> shape of every encoder tensor (HF T5EncoderModel names)."""
    V, D, F = cfg["vocab_size"], cfg["d_model"], cfg["d_ff"]
    H, I = cfg["num_heads"], cfg["num_heads"] * cfg["d_kv"]
    s = OrderedDict()
    s[SHARED] = (V, D)
    for i in range(cfg["num_layers"]):
        p = block(i)
        s[p + "layer.0.SelfAttention.q.weight"] = (I, D)
        s[p + "layer.0.SelfAttention.k.weight"] = (I, D)
        s[p + "layer.0.SelfAttention.v.weight"] = (I, D)
        s[p + "layer.0.SelfAttention.o.weight"] = (D, I)
        if i == 0:
            s[REL_BIAS] = (cfg["relative_attention_num_buckets"], H)
        s[p + "layer.0.layer_norm.weight"] = (D,)
        s[p + "layer.1.DenseReluDense.wi_0.weight"] = (F, D)
        s[p + "layer.1.DenseReluDense.wi_1.weight"] = (F, D)
        s[p + "layer.1.DenseReluDense.wo.weight"] = (D, F)
        s[p + "layer.1.layer_norm.weight"] = (D,)
    s[FINAL_NORM] = (D,)
    return s


def random_state_dict(cfg, seed=0, dtype=torch.float32):
    """Every tensor random and non-trivial: norms 1 + 0.1 N, embedding N(0,1), bias table N(0,1),
    matrices N(0,1)/sqrt(fan_in)."""
    gen = torch.Generator().manual_seed(int(seed))
    sd = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        t = torch.empty(shape, dtype=torch.float32)
        t.normal_(0.0, 1.0, generator=gen)
        if len(shape) == 1:
            t.mul_(0.1).add_(1.0)
        elif name not in (SHARED, REL_BIAS):
            t.mul_(1.0 / math.sqrt(shape[1]))
        sd[name] = t.to(dtype)
    return sd


# ----------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------

def relative_bucket(n, num_buckets=32, max_distance=128):
    """Spec section 7 bucket of n = j - i (bidirectional); for 32/128:
    b = 16 if n > 0 else 0; a = |n|; a < 8 -> b + a; else b + min(15, 8 + floor(ln(a/8)/ln(16)*8)).
    General form: half = num_buckets/2 and exact = half/2 in place of 16 and 8, max_distance/exact in
    place of 16 inside the logarithm, (half - exact) as the multiplier; computed in double precision."""
    half = num_buckets // 2
    exact = half // 2
    b = half if n > 0 else 0
    a = abs(n)
    if a < exact:
        return b + a
    large = exact + int(math.log(a / exact) / math.log(max_distance / exact) * (half - exact))
    return b + min(large, half - 1)


def position_bias(table, L, num_buckets, max_distance):
    """table (num_buckets, H) -> additive bias (H, L, L): bias[h, i, j] = table[bucket(j - i), h]."""
    idx = torch.tensor([[relative_bucket(j - i, num_buckets, max_distance) for j in range(L)]
                        for i in range(L)], dtype=torch.long)
    return table[idx].permute(2, 0, 1)


def rms_norm(x, weight, eps):
    """weight * x / sqrt(mean(x^2) + eps): no mean subtraction, no bias."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class Norm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class SelfAttention(nn.Module):
    def __init__(self, cfg, has_bias_table):
        super().__init__()
        D, I = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"]
        self.q = nn.Linear(D, I, bias=False)
        self.k = nn.Linear(D, I, bias=False)
        self.v = nn.Linear(D, I, bias=False)
        self.o = nn.Linear(I, D, bias=False)
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(cfg["relative_attention_num_buckets"], cfg["num_heads"])


class AttnLayer(nn.Module):
    def __init__(self, cfg, has_bias_table):
        super().__init__()
        self.SelfAttention = SelfAttention(cfg, has_bias_table)
        self.layer_norm = Norm(cfg["d_model"])


class DenseReluDense(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, F = cfg["d_model"], cfg["d_ff"]
        self.wi_0 = nn.Linear(D, F, bias=False)
        self.wi_1 = nn.Linear(D, F, bias=False)
        self.wo = nn.Linear(F, D, bias=False)


class FFLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.DenseReluDense = DenseReluDense(cfg)
        self.layer_norm = Norm(cfg["d_model"])


class Block(nn.Module):
    def __init__(self, cfg, first):
        super().__init__()
        self.layer = nn.ModuleList([AttnLayer(cfg, first), FFLayer(cfg)])


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.block = nn.ModuleList([Block(cfg, i == 0) for i in range(cfg["num_layers"])])
        self.final_layer_norm = Norm(cfg["d_model"])


class T5EncoderTwin(nn.Module):
    """Parameter names equal the HF T5EncoderModel keys of spec section 7."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = make_config(**cfg)
        self.shared = nn.Embedding(self.cfg["vocab_size"], self.cfg["d_model"])
        self.encoder = Encoder(self.cfg)

    def forward(self, ids, mask):
        """ids (B, L) integer token ids, mask (B, L) (key valid iff mask != 0) -> (B, L, d_model)."""
        cfg = self.cfg
        H, dk, eps = cfg["num_heads"], cfg["d_kv"], cfg["layer_norm_epsilon"]
        ids = ids.long()
        B, L = ids.shape
        if int(ids.min()) < 0 or int(ids.max()) >= cfg["vocab_size"]:
            raise ValueError("token id out of range")
        x = self.shared.weight[ids]
        dtype = x.dtype
        key_bias = torch.zeros(B, L, dtype=dtype).masked_fill(mask == 0, float("-inf"))
        table = self.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
        bias = position_bias(table, L, cfg["relative_attention_num_buckets"],
                             cfg["relative_attention_max_distance"])          # (H, L, L)
        bias = bias[None] + key_bias[:, None, None, :]                        # (B, H, L, L)
        for blk in self.encoder.block:
            att, ff = blk.layer[0], blk.layer[1]
            sa = att.SelfAttention
            n = rms_norm(x, att.layer_norm.weight, eps)
            q = (n @ sa.q.weight.t()).reshape(B, L, H, dk).permute(0, 2, 1, 3)
            k = (n @ sa.k.weight.t()).reshape(B, L, H, dk).permute(0, 2, 1, 3)
            v = (n @ sa.v.weight.t()).reshape(B, L, H, dk).permute(0, 2, 1, 3)
            scores = q @ k.transpose(-1, -2) + bias                           # no 1/sqrt(d_kv)
            m = scores.amax(dim=-1, keepdim=True).detach()
            e = torch.exp(scores - m)
            p = e / e.sum(dim=-1, keepdim=True)
            o = (p @ v).permute(0, 2, 1, 3).reshape(B, L, H * dk)
            x = x + o @ sa.o.weight.t()
            d = ff.DenseReluDense
            n = rms_norm(x, ff.layer_norm.weight, eps)
            g = gelu_tanh(n @ d.wi_0.weight.t()) * (n @ d.wi_1.weight.t())
            x = x + g @ d.wo.weight.t()
        return rms_norm(x, self.encoder.final_layer_norm.weight, eps)


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------

def save_model(path, cfg, sd, extra=None):
    """One file in the oboro layout: config in `oboro.t5_config` metadata."""
    meta = {"oboro.t5_config": json.dumps(make_config(**cfg)), "modelspec.architecture": ARCHITECTURE}
    tensors = OrderedDict(sd)
    if extra:
        tensors.update(extra)
    st.save(path, tensors, meta)


def save_sharded(directory, cfg, sd, shards=2, config_json=True, embed_name=SHARED, extra=None):
    """HF layout: model-0000N-of-0000M.safetensors (no oboro metadata) + model.safetensors.index.json
    (+ config.json with the HF field names)."""
    os.makedirs(directory, exist_ok=True)
    tensors = OrderedDict((embed_name if n == SHARED else n, t) for n, t in sd.items())
    if extra:
        tensors.update(extra)
    names = list(tensors)
    per = (len(names) + shards - 1) // shards
    weight_map, total = {}, 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = OrderedDict((n, tensors[n]) for n in names[s * per:(s + 1) * per])
        st.save(os.path.join(directory, fname), part, {"format": "pt"})
        for n, t in part.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if config_json:
        c = dict(make_config(**cfg))
        c.update({"architectures": ["T5EncoderModel"], "model_type": "t5", "feed_forward_proj": "gated-gelu"})
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(c, f, indent=2)


def _read_tensors(path):
    """(tensors, metadata, directory) for a .safetensors file, an index.json or a directory."""
    if os.path.isdir(path):
        idx = [f for f in os.listdir(path) if f.endswith(".safetensors.index.json")]
        single = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        path = os.path.join(path, idx[0] if idx else single[0])
    directory = os.path.dirname(os.path.abspath(path))
    if path.endswith(".json"):
        with open(path) as f:
            index = json.load(f)
        tensors, meta = {}, {}
        for fname in sorted(set(index["weight_map"].values())):
            t, m = st.load(os.path.join(directory, fname))
            tensors.update(t)
            meta = meta or m
        return tensors, meta, directory
    t, m = st.load(path)
    return t, m, directory


def infer_config(tensors, directory):
    """Spec section 7: config from shapes; config.json beside the file may set the max distance and eps."""
    emb = tensors[SHARED] if SHARED in tensors else tensors[EMBED_ALIAS]
    layers = 0
    while block(layers) + "layer.0.SelfAttention.q.weight" in tensors:
        layers += 1
    nb, H = tensors[REL_BIAS].shape
    cfg = dict(vocab_size=emb.shape[0], d_model=emb.shape[1], num_layers=layers, num_heads=H,
               d_kv=tensors[block(0) + "layer.0.SelfAttention.q.weight"].shape[0] // H,
               d_ff=tensors[block(0) + "layer.1.DenseReluDense.wi_0.weight"].shape[0],
               relative_attention_num_buckets=nb)
    cj = os.path.join(directory, "config.json")
    if os.path.isfile(cj):
        with open(cj) as f:
            j = json.load(f)
        for k in ("relative_attention_max_distance", "layer_norm_epsilon"):
            if k in j:
                cfg[k] = j[k]
    return make_config(**cfg)


def load_model(path, dtype=torch.float64):
    """(model, cfg) from a file / index / directory; decoder.* and lm_head.* are ignored."""
    tensors, meta, directory = _read_tensors(path)
    if "oboro.t5_config" in meta:
        cfg = make_config(**json.loads(meta["oboro.t5_config"]))
    else:
        cfg = infer_config(tensors, directory)
    if SHARED not in tensors and EMBED_ALIAS in tensors:
        tensors[SHARED] = tensors[EMBED_ALIAS]
    sd = OrderedDict((n, tensors[n].float()) for n in param_shapes(cfg))
    model = T5EncoderTwin(cfg)
    model.load_state_dict(sd, strict=True)
    return model.to(dtype), cfg
