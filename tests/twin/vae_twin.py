"""PyTorch reference ("twin") of the FLUX.1 VAE, written from docs/spec.md section 8.

Plain functional code over a state dict with the ae.safetensors names (no diffusers package):
GroupNorm(32, eps 1e-6), swish, ResnetBlock = x' + conv2(swish(GN(conv1(swish(GN(x)))))) with a 1x1
nin_shortcut when the channels change, AttnBlock = x + proj_out(softmax(q k^T / sqrt(C)) v) over all
positions (one head, 1x1 q/k/v), Downsample = pad (0,1,0,1) + conv3 stride 2, Upsample = nearest x2 + conv3.
The config is inferred from the tensor names and shapes. Runs in float64 (reference) or float32.

    cfg = make_config(ch=32, ch_mult=[1, 2, 4, 4])
    sd = random_state_dict(cfg, seed=0)
    save_ae(path, sd); save_diffusers(path2, sd, cfg)
    vae = Twin(load_state_dict(path), dtype=torch.float64)
    latent = vae.encode(image)        # 0.3611 * (mean - 0.1159)
    image = vae.decode(latent)        # decoder(latent / 0.3611 + 0.1159)
"""

import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402

SCALE = 0.3611
SHIFT = 0.1159
GROUPS = 32
EPS = 1e-6


def make_config(ch=128, ch_mult=(1, 2, 4, 4), enc_blocks=2, dec_blocks=3, z=16, in_ch=3, out_ch=3):
    return dict(ch=ch, ch_mult=list(ch_mult), enc_blocks=enc_blocks, dec_blocks=dec_blocks, z=z,
                in_ch=in_ch, out_ch=out_ch)


# ----------------------------------------------------------------------------
# names and shapes (spec section 8)
# ----------------------------------------------------------------------------

def param_shapes(cfg):
    s = OrderedDict()
    ch, mult, z = cfg["ch"], cfg["ch_mult"], cfg["z"]
    L = len(mult)
    top = ch * mult[-1]

    def conv(n, co, ci, k):
        s[n + ".weight"] = (co, ci, k, k)
        s[n + ".bias"] = (co,)

    def norm(n, c):
        s[n + ".weight"] = (c,)
        s[n + ".bias"] = (c,)

    def res(p, ci, co):
        norm(p + "norm1", ci)
        conv(p + "conv1", co, ci, 3)
        norm(p + "norm2", co)
        conv(p + "conv2", co, co, 3)
        if ci != co:
            conv(p + "nin_shortcut", co, ci, 1)

    def mid(p, c):
        res(p + "mid.block_1.", c, c)
        norm(p + "mid.attn_1.norm", c)
        for m in ("q", "k", "v", "proj_out"):
            conv(p + "mid.attn_1." + m, c, c, 1)
        res(p + "mid.block_2.", c, c)

    conv("encoder.conv_in", ch, cfg["in_ch"], 3)
    cin = ch
    for i in range(L):
        co = ch * mult[i]
        for j in range(cfg["enc_blocks"]):
            res(f"encoder.down.{i}.block.{j}.", cin, co)
            cin = co
        if i != L - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder.", top)
    norm("encoder.norm_out", top)
    conv("encoder.conv_out", 2 * z, top, 3)

    conv("decoder.conv_in", top, z, 3)
    mid("decoder.", top)
    cin = top
    for i in reversed(range(L)):
        co = ch * mult[i]
        for j in range(cfg["dec_blocks"]):
            res(f"decoder.up.{i}.block.{j}.", cin, co)
            cin = co
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", ch)
    conv("decoder.conv_out", cfg["out_ch"], ch, 3)
    return s


def random_state_dict(cfg, seed=0):
    """Conv weights N(0, 1/fan_in); biases and GroupNorm beta N(0, 0.1^2); GroupNorm gamma N(1, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for n, shp in param_shapes(cfg).items():
        if len(shp) == 4:
            fan_in = shp[1] * shp[2] * shp[3]
            sd[n] = torch.randn(shp, generator=g) / fan_in ** 0.5
        elif n.endswith(".weight"):
            sd[n] = 1.0 + 0.1 * torch.randn(shp, generator=g)
        else:
            sd[n] = 0.1 * torch.randn(shp, generator=g)
    return sd


def diffusers_name(name, levels):
    """The diffusers AutoencoderKL name of an ae.safetensors name (written independently of the C++ mapping)."""
    p = name.split(".")
    part = p[0]
    sub = {"nin_shortcut": "conv_shortcut"}
    if p[1] == "norm_out":
        return f"{part}.conv_norm_out.{p[2]}"
    if p[1] == "down":
        i = p[2]
        if p[3] == "block":
            return f"encoder.down_blocks.{i}.resnets.{p[4]}.{sub.get(p[5], p[5])}.{p[6]}"
        return f"encoder.down_blocks.{i}.downsamplers.0.conv.{p[5]}"
    if p[1] == "up":
        k = levels - 1 - int(p[2])
        if p[3] == "block":
            return f"decoder.up_blocks.{k}.resnets.{p[4]}.{sub.get(p[5], p[5])}.{p[6]}"
        return f"decoder.up_blocks.{k}.upsamplers.0.conv.{p[5]}"
    if p[1] == "mid":
        if p[2] in ("block_1", "block_2"):
            r = "0" if p[2] == "block_1" else "1"
            return f"{part}.mid_block.resnets.{r}.{sub.get(p[3], p[3])}.{p[4]}"
        m = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}[p[3]]
        return f"{part}.mid_block.attentions.0.{m}.{p[4]}"
    return name


def to_diffusers(sd, cfg):
    """Same tensors under diffusers names; attention projections as (C, C) linear weights."""
    L = len(cfg["ch_mult"])
    out = OrderedDict()
    for n, t in sd.items():
        d = diffusers_name(n, L)
        if ".attentions.0.to_" in d and d.endswith(".weight") and t.dim() == 4:
            t = t.reshape(t.shape[0], t.shape[1])
        out[d] = t
    return out


def save_ae(path, sd, dtype=torch.float32):
    st.save(path, OrderedDict((n, t.to(dtype)) for n, t in sd.items()))


def save_diffusers(path, sd, cfg, dtype=torch.float32):
    st.save(path, OrderedDict((n, t.to(dtype)) for n, t in to_diffusers(sd, cfg).items()))


def load_state_dict(path):
    tensors, _ = st.load(path)
    return tensors


def infer_config(sd):
    ch = sd["encoder.conv_in.weight"].shape[0]
    L = 0
    while f"encoder.down.{L}.block.0.conv1.weight" in sd:
        L += 1
    mult = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(L)]
    eb = 0
    while f"encoder.down.0.block.{eb}.conv1.weight" in sd:
        eb += 1
    db = 0
    while f"decoder.up.0.block.{db}.conv1.weight" in sd:
        db += 1
    return make_config(ch=ch, ch_mult=mult, enc_blocks=eb, dec_blocks=db, z=sd["decoder.conv_in.weight"].shape[1],
                       in_ch=sd["encoder.conv_in.weight"].shape[1], out_ch=sd["decoder.conv_out.weight"].shape[0])


# ----------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------

class Twin:
    def __init__(self, sd, dtype=torch.float64):
        self.cfg = infer_config(sd)
        self.w = {n: t.to(dtype) for n, t in sd.items()}
        self.dtype = dtype

    def gn(self, n, x):
        return F.group_norm(x, GROUPS, self.w[n + ".weight"], self.w[n + ".bias"], eps=EPS)

    def conv(self, n, x, padding=1, stride=1):
        return F.conv2d(x, self.w[n + ".weight"], self.w[n + ".bias"], stride=stride, padding=padding)

    def res(self, p, x):
        h = self.conv(p + "conv1", F.silu(self.gn(p + "norm1", x)))
        h = self.conv(p + "conv2", F.silu(self.gn(p + "norm2", h)))
        if p + "nin_shortcut.weight" in self.w:
            x = self.conv(p + "nin_shortcut", x, padding=0)
        return x + h

    def attn(self, p, x):
        h = self.gn(p + "norm", x)
        q = self.conv(p + "q", h, padding=0)
        k = self.conv(p + "k", h, padding=0)
        v = self.conv(p + "v", h, padding=0)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)      # (b, S, c)
        k = k.reshape(b, c, hh * ww)                       # (b, c, S)
        v = v.reshape(b, c, hh * ww).permute(0, 2, 1)      # (b, S, c)
        a = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
        o = torch.bmm(a, v).permute(0, 2, 1).reshape(b, c, hh, ww)
        return x + self.conv(p + "proj_out", o, padding=0)

    def mid(self, p, x):
        x = self.res(p + "mid.block_1.", x)
        x = self.attn(p + "mid.attn_1.", x)
        return self.res(p + "mid.block_2.", x)

    def encoder_mean(self, x):
        c = self.cfg
        L = len(c["ch_mult"])
        h = self.conv("encoder.conv_in", x.to(self.dtype))
        for i in range(L):
            for j in range(c["enc_blocks"]):
                h = self.res(f"encoder.down.{i}.block.{j}.", h)
            if i != L - 1:
                h = self.conv(f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), padding=0, stride=2)
        h = self.mid("encoder.", h)
        h = self.conv("encoder.conv_out", F.silu(self.gn("encoder.norm_out", h)))
        return h[:, :c["z"]]

    def decoder(self, z):
        c = self.cfg
        L = len(c["ch_mult"])
        h = self.conv("decoder.conv_in", z.to(self.dtype))
        h = self.mid("decoder.", h)
        for i in reversed(range(L)):
            for j in range(c["dec_blocks"]):
                h = self.res(f"decoder.up.{i}.block.{j}.", h)
            if i != 0:
                h = self.conv(f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv("decoder.conv_out", F.silu(self.gn("decoder.norm_out", h)))

    def encode(self, image):
        return SCALE * (self.encoder_mean(image) - SHIFT)

    def decode(self, latent):
        return self.decoder(latent.to(self.dtype) / SCALE + SHIFT)
