// FLUX.1 VAE files (spec §8): tensor names (ae.safetensors and diffusers), the weight formats a VAE may be held in,
// the config inferred from a file's tensors, the one walker of every tensor (layout, roles), and load / save / random
// init. The network itself and its execution plan are in vae.cpp.
#include "models/vae.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

namespace oboro {

namespace {

std::string I(int i) { return std::to_string(i); }

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> p;
  size_t b = 0;
  for (;;) {
    size_t e = s.find('.', b);
    p.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return p;
    b = e + 1;
  }
}

std::string join(const std::vector<std::string>& p, size_t from) {
  std::string s;
  for (size_t i = from; i < p.size(); ++i) {
    if (!s.empty()) s += '.';
    s += p[i];
  }
  return s;
}

bool is_uint(const std::string& s) {
  return !s.empty() && s.size() < 6 && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// Attention projections are 1×1 convs in ae.safetensors, (C, C) linears in diffusers.
bool is_attn_proj_weight(const std::string& canon) {
  for (const char* suf : {".q.weight", ".k.weight", ".v.weight", ".proj_out.weight"})
    if (canon.size() > std::strlen(suf) &&
        canon.compare(canon.size() - std::strlen(suf), std::string::npos, suf) == 0 &&
        canon.find(".attn_1.") != std::string::npos)
      return true;
  return false;
}

std::string res_sub(const std::string& s) { return s == "conv_shortcut" ? "nin_shortcut" : s; }
std::string res_sub_diffusers(const std::string& s) { return s == "nin_shortcut" ? "conv_shortcut" : s; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names

std::string vae_canonical_name(const std::string& name, int levels) {
  const auto p = split(name);
  if (p.size() < 3 || (p[0] != "encoder" && p[0] != "decoder")) return name;
  const std::string& part = p[0];
  if (p[1] == "conv_norm_out") return part + ".norm_out." + join(p, 2);
  if (p[1] == "down_blocks" && part == "encoder" && p.size() >= 6 && is_uint(p[2])) {
    if (p[3] == "resnets" && is_uint(p[4]) && p.size() >= 7)
      return "encoder.down." + p[2] + ".block." + p[4] + "." + res_sub(p[5]) + "." + join(p, 6);
    if (p[3] == "downsamplers" && p[4] == "0" && p[5] == "conv")
      return "encoder.down." + p[2] + ".downsample.conv." + join(p, 6);
    return name;
  }
  if (p[1] == "up_blocks" && part == "decoder" && p.size() >= 6 && is_uint(p[2])) {
    const int k = std::stoi(p[2]);
    if (k >= levels) return name;
    const std::string i = I(levels - 1 - k);
    if (p[3] == "resnets" && is_uint(p[4]) && p.size() >= 7)
      return "decoder.up." + i + ".block." + p[4] + "." + res_sub(p[5]) + "." + join(p, 6);
    if (p[3] == "upsamplers" && p[4] == "0" && p[5] == "conv")
      return "decoder.up." + i + ".upsample.conv." + join(p, 6);
    return name;
  }
  if (p[1] == "mid_block" && p.size() >= 5) {
    if (p[2] == "resnets" && (p[3] == "0" || p[3] == "1") && p.size() >= 6)
      return part + ".mid.block_" + (p[3] == "0" ? "1" : "2") + "." + res_sub(p[4]) + "." + join(p, 5);
    if (p[2] == "attentions" && p[3] == "0") {
      const std::string pre = part + ".mid.attn_1.";
      const std::string& m = p[4];
      if (m == "group_norm") return pre + "norm." + join(p, 5);
      if (m == "to_q" || m == "query") return pre + "q." + join(p, 5);
      if (m == "to_k" || m == "key") return pre + "k." + join(p, 5);
      if (m == "to_v" || m == "value") return pre + "v." + join(p, 5);
      if (m == "proj_attn") return pre + "proj_out." + join(p, 5);
      if (m == "to_out" && p.size() >= 7 && p[5] == "0") return pre + "proj_out." + join(p, 6);
    }
    return name;
  }
  return name;
}

std::string vae_diffusers_name(const std::string& name, int levels) {
  const auto p = split(name);
  if (p.size() < 3 || (p[0] != "encoder" && p[0] != "decoder")) return name;
  const std::string& part = p[0];
  if (p[1] == "norm_out") return part + ".conv_norm_out." + join(p, 2);
  if (p[1] == "down" && p.size() >= 6) {
    if (p[3] == "block" && p.size() >= 7)
      return "encoder.down_blocks." + p[2] + ".resnets." + p[4] + "." + res_sub_diffusers(p[5]) + "." + join(p, 6);
    if (p[3] == "downsample") return "encoder.down_blocks." + p[2] + ".downsamplers.0.conv." + join(p, 5);
  }
  if (p[1] == "up" && p.size() >= 6 && is_uint(p[2])) {
    const std::string k = I(levels - 1 - std::stoi(p[2]));
    if (p[3] == "block" && p.size() >= 7)
      return "decoder.up_blocks." + k + ".resnets." + p[4] + "." + res_sub_diffusers(p[5]) + "." + join(p, 6);
    if (p[3] == "upsample") return "decoder.up_blocks." + k + ".upsamplers.0.conv." + join(p, 5);
  }
  if (p[1] == "mid" && p.size() >= 5) {
    if (p[2] == "block_1" || p[2] == "block_2")
      return part + ".mid_block.resnets." + (p[2] == "block_1" ? "0" : "1") + "." + res_sub_diffusers(p[3]) + "." +
             join(p, 4);
    if (p[2] == "attn_1") {
      const std::string pre = part + ".mid_block.attentions.0.";
      const std::string& m = p[3];
      if (m == "norm") return pre + "group_norm." + join(p, 4);
      if (m == "q" || m == "k" || m == "v") return pre + "to_" + m + "." + join(p, 4);
      if (m == "proj_out") return pre + "to_out.0." + join(p, 4);
    }
  }
  return name;
}

// ---------------------------------------------------------------------------------------------
// Weight formats

void check_vae_wformat(WFormat f, const std::string& what) {
  if (f == WFormat::F32 || f == WFormat::BF16 || f == WFormat::F16) return;
  fail(what, ": the VAE cannot hold its weights as ", wformat_name(f), " — its convolutions support f32, bf16 and "
       "f16 (q8_0 needs Ci·kh·kw divisible by 32, which the RGB and 16-channel conv_in are not; one f8 scale per "
       "tensor is too coarse for an image decoder); use bf16 to halve the VAE's weights");
}

WFormat parse_vae_wformat(const std::string& s, const std::string& what) {
  if (s.empty()) return WFormat::F32;
  const WFormat f = parse_wformat(s, what);
  check_vae_wformat(f, what);
  return f;
}

bool vae_quantizable(const std::string& name, const Shape& shape) {
  // The Role::Weight tensors of vae_tensors: its conv weights, the only tensors of rank >= 2 (check_role).
  return shape.size() == 4 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
}

// ---------------------------------------------------------------------------------------------
// Config

VaeConfig VaeConfig::flux() { return VaeConfig{}; }

std::string VaeConfig::describe() const {
  std::string m;
  for (size_t i = 0; i < ch_mult.size(); ++i) {
    if (i) m += ',';
    m += I(ch_mult[i]);
  }
  return str("ch ", ch, ", ch_mult [", m, "], res blocks ", enc_blocks, " (encoder) / ", dec_blocks,
             " (decoder), z ", z_channels, has_encoder ? "" : ", no encoder", has_decoder ? "" : ", no decoder");
}

void VaeConfig::validate(const std::string& where) const {
  auto bad = [&](const auto&... a) { fail(where, ": invalid VAE config (", describe(), "): ", a...); };
  if (!has_encoder && !has_decoder) bad("neither an encoder nor a decoder");
  if (ch <= 0 || z_channels <= 0 || in_channels <= 0 || out_channels <= 0) bad("channel counts must be positive");
  if (ch_mult.empty() || ch_mult.size() > 8) bad("1 to 8 resolution levels expected, got ", ch_mult.size());
  for (int m : ch_mult)
    if (m <= 0) bad("ch_mult entries must be positive");
  if ((has_encoder && enc_blocks <= 0) || (has_decoder && dec_blocks <= 0)) bad("every level needs a ResnetBlock");
  if (groups <= 0) bad("GroupNorm groups must be positive");
  auto gn_ok = [&](int c) {
    if (c % groups)
      bad("GroupNorm(", groups, ") needs channel counts divisible by ", groups, ", but a level has ", c, " channels");
  };
  gn_ok(ch);
  for (int m : ch_mult) gn_ok(ch * m);
}

VaeConfig VaeConfig::infer(const std::map<std::string, Shape>& shapes, const std::string& where) {
  auto has = [&](const std::string& n) { return shapes.count(n) > 0; };
  auto need = [&](const std::string& n, size_t ndim) -> const Shape& {
    auto it = shapes.find(n);
    if (it == shapes.end())
      fail(where, ": tensor ", n, " is missing — cannot infer the VAE config (spec §8 lists the ae.safetensors names; "
                  "diffusers AutoencoderKL names are mapped onto them)");
    if (it->second.size() != ndim)
      fail(where, ": tensor ", n, " has shape ", shape_str(it->second), ", expected ", ndim, " dimensions");
    return it->second;
  };
  VaeConfig c;
  c.has_encoder = c.has_decoder = false;
  for (const auto& [n, s] : shapes) {
    if (starts_with(n, "encoder.")) c.has_encoder = true;
    if (starts_with(n, "decoder.")) c.has_decoder = true;
  }
  if (!c.has_encoder && !c.has_decoder)
    fail(where, ": no encoder.* or decoder.* tensors — this is not a VAE file (spec §8 expects FLUX.1's "
                "ae.safetensors or a diffusers AutoencoderKL)");
  const std::string part = c.has_encoder ? "encoder" : "decoder";
  const std::string lvl = c.has_encoder ? "encoder.down." : "decoder.up.";
  if (c.has_encoder) {
    const Shape& ci = need("encoder.conv_in.weight", 4);
    c.ch = (int)ci[0];
    c.in_channels = (int)ci[1];
  } else {
    c.ch = (int)need("decoder.conv_out.weight", 4)[1];
  }
  int L = 0;
  while (has(lvl + I(L) + ".block.0.conv1.weight")) ++L;
  if (L == 0) need(lvl + "0.block.0.conv1.weight", 4);
  c.ch_mult.assign(L, 0);
  for (int i = 0; i < L; ++i) {
    const std::string n = lvl + I(i) + ".block.0.conv1.weight";
    const int64_t co = need(n, 4)[0];
    if (c.ch <= 0 || co % c.ch)
      fail(where, ": tensor ", n, " has ", co, " output channels, not a multiple of ch = ", c.ch, " (from ", part,
           ".conv_", c.has_encoder ? "in" : "out", ")");
    c.ch_mult[i] = (int)(co / c.ch);
  }
  if (c.has_encoder && c.has_decoder) {
    int Ld = 0;
    while (has("decoder.up." + I(Ld) + ".block.0.conv1.weight")) ++Ld;
    if (Ld != L)
      fail(where, ": the encoder has ", L, " resolution levels (encoder.down.*) but the decoder ", Ld,
           " (decoder.up.*) — the file mixes two models or is incomplete");
  }
  c.enc_blocks = c.dec_blocks = 0;
  while (has("encoder.down.0.block." + I(c.enc_blocks) + ".conv1.weight")) ++c.enc_blocks;
  while (has("decoder.up.0.block." + I(c.dec_blocks) + ".conv1.weight")) ++c.dec_blocks;
  if (c.has_decoder) {
    c.z_channels = (int)need("decoder.conv_in.weight", 4)[1];
    c.out_channels = (int)need("decoder.conv_out.weight", 4)[0];
  } else {
    c.z_channels = (int)(need("encoder.conv_out.weight", 4)[0] / 2);
  }
  if (c.has_encoder) {
    const int64_t co = need("encoder.conv_out.weight", 4)[0];
    if (co != 2 * c.z_channels)
      fail(where, ": tensor encoder.conv_out.weight has ", co, " output channels, expected 2·z = ", 2 * c.z_channels,
           " (mean and log-variance; z from decoder.conv_in)");
  }
  c.validate(where);
  return c;
}

void vae_tensors(const VaeConfig& c, const std::function<void(const std::string&, const Shape&, Role)>& fn) {
  auto add = [&](const std::string& n, const Shape& s, Role r) {
    check_role(r, s, n);
    fn(n, s, r);
  };
  auto conv = [&](const std::string& n, int co, int ci, int k) {
    add(n + ".weight", {co, ci, k, k}, Role::Weight);
    add(n + ".bias", {co}, Role::Bias);
  };
  auto norm = [&](const std::string& n, int ch) {
    add(n + ".weight", {ch}, Role::Norm);
    add(n + ".bias", {ch}, Role::Bias);
  };
  auto res = [&](const std::string& p, int ci, int co) {
    norm(p + "norm1", ci);
    conv(p + "conv1", co, ci, 3);
    norm(p + "norm2", co);
    conv(p + "conv2", co, co, 3);
    if (ci != co) conv(p + "nin_shortcut", co, ci, 1);
  };
  auto mid = [&](const std::string& p, int C) {
    res(p + "mid.block_1.", C, C);
    norm(p + "mid.attn_1.norm", C);
    for (const char* m : {"q", "k", "v", "proj_out"}) conv(p + "mid.attn_1." + m, C, C, 1);
    res(p + "mid.block_2.", C, C);
  };
  const int nL = c.levels(), top = c.ch * c.ch_mult.back();
  if (c.has_encoder) {
    conv("encoder.conv_in", c.ch, c.in_channels, 3);
    int cin = c.ch;
    for (int i = 0; i < nL; ++i) {
      const int co = c.ch * c.ch_mult[i];
      for (int j = 0; j < c.enc_blocks; ++j) {
        res("encoder.down." + I(i) + ".block." + I(j) + ".", cin, co);
        cin = co;
      }
      if (i != nL - 1) conv("encoder.down." + I(i) + ".downsample.conv", cin, cin, 3);
    }
    mid("encoder.", top);
    norm("encoder.norm_out", top);
    conv("encoder.conv_out", 2 * c.z_channels, top, 3);
  }
  if (c.has_decoder) {
    conv("decoder.conv_in", top, c.z_channels, 3);
    mid("decoder.", top);
    int cin = top;
    for (int i = nL - 1; i >= 0; --i) {
      const int co = c.ch * c.ch_mult[i];
      for (int j = 0; j < c.dec_blocks; ++j) {
        res("decoder.up." + I(i) + ".block." + I(j) + ".", cin, co);
        cin = co;
      }
      if (i != 0) conv("decoder.up." + I(i) + ".upsample.conv", cin, cin, 3);
    }
    norm("decoder.norm_out", c.ch);
    conv("decoder.conv_out", c.out_channels, c.ch, 3);
  }
}

ParamLayout vae_param_layout(const VaeConfig& c) {
  ParamLayout L;
  vae_tensors(c, [&](const std::string& n, const Shape& s, Role) { L.add(n, s); });
  return L;
}

int64_t VaeConfig::param_count() const {
  const ParamLayout layout = vae_param_layout(*this);
  int64_t n = 0;
  for (const auto& v : layout.views()) n += (int64_t)v.numel();
  return n;
}

std::unique_ptr<Vae> Vae::load(const std::string& path, Backend& be, WFormat type) {
  TensorSource src = TensorSource::open(path);
  const std::vector<std::string> names = src.names();
  int levels = 0;  // diffusers decoder up_blocks (for their reversed order)
  for (const auto& n : names) {
    auto p = split(n);
    if (p.size() > 3 && p[0] == "decoder" && p[1] == "up_blocks" && is_uint(p[2]))
      levels = std::max(levels, std::stoi(p[2]) + 1);
  }
  std::map<std::string, std::string> file_of;  // §8 name → name in the file
  std::map<std::string, Shape> shapes;
  for (const auto& n : names) {
    const std::string canon = vae_canonical_name(n, levels);
    auto [it, fresh] = file_of.emplace(canon, n);
    if (!fresh)
      fail(src.path(), ": tensors ", it->second, " and ", n, " both map to the VAE tensor ", canon,
           " — the file mixes the ae.safetensors and diffusers layouts");
    Shape s = src.info(n).shape;
    if (is_attn_proj_weight(canon) && s.size() == 2) s = {s[0], s[1], 1, 1};  // diffusers linear → 1×1 conv
    shapes[canon] = s;
  }
  const VaeConfig cfg = VaeConfig::infer(shapes, src.path());
  auto model = std::make_unique<Vae>(cfg, be, type);
  const ParamLayout& layout = model->full_layout_;
  const bool diffusers =
      levels > 0 || std::any_of(names.begin(), names.end(), [](const std::string& n) {
        return n.find("down_blocks.") != std::string::npos || n.find("mid_block.") != std::string::npos;
      });

  std::vector<std::string> unknown;
  bool quant = false;
  for (const auto& [canon, n] : file_of)
    if (!layout.find(canon)) {
      unknown.push_back(n == canon ? n : str(n, " (", canon, ")"));
      if (n.find("quant_conv") != std::string::npos) quant = true;
    }
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 5; ++i) {
      if (i) list += ", ";
      list += unknown[i];
    }
    if (unknown.size() > 5) list += str(", ... (", unknown.size(), " in all)");
    fail(src.path(), ": unknown tensor(s) for the FLUX.1 VAE (", cfg.describe(), "): ", list,
         quant ? " — quant_conv/post_quant_conv belong to Stable Diffusion-style VAEs; the FLUX.1 VAE has none "
                 "(spec §8): use FLUX.1's ae.safetensors"
               : " — expected the ae.safetensors names of spec §8 or a diffusers AutoencoderKL layout");
  }
  for (const auto& v : layout.views()) {
    auto it = file_of.find(v.name);
    if (it == file_of.end()) {
      const std::string alt = vae_diffusers_name(v.name, cfg.levels());
      fail(src.path(), ": tensor ", v.name, diffusers && alt != v.name ? str(" (diffusers: ", alt, ")") : "",
           " is missing (the VAE with ", cfg.describe(), " expects shape ", shape_str(v.shape),
           ") — the file is incomplete or not a FLUX.1 VAE");
    }
    const TensorInfo& info = src.info(it->second);
    if (shapes.at(v.name) != v.shape)
      fail(src.path(), ": tensor ", it->second, " has shape ", shape_str(info.shape), " but the VAE with ",
           cfg.describe(), " expects ", shape_str(v.shape), " — the file is not a consistent FLUX.1-style VAE");
    if (!dtype_is_float(info.dtype))
      fail(src.path(), ": tensor ", it->second, " has dtype ", dtype_name(info.dtype),
           "; VAE weights must be F32, F16 or BF16");
    Tensor t = src.tensor_f32(it->second);
    if (const ParamView* mine = model->layout_.find(v.name))
      be.upload(model->params_ + mine->offset, t.f32(), v.numel());
    else
      model->qw_[v.name] = quantize_weight(t.f32(), (int)v.shape[0], (int)(v.numel() / v.shape[0]), type, v.name);
  }
  return model;
}

void Vae::init_random(uint64_t seed) {
  std::vector<float> host;
  uint64_t stream = 0;
  vae_tensors(cfg_, [&](const std::string& name, const Shape& shape, Role role) {
    const ParamView& v = full_layout_.at(name);
    host.assign(v.numel(), 0.f);
    if (role == Role::Weight) {  // conv weight (O, I, kh, kw)
      const double fan_in = (double)v.shape[1] * v.shape[2] * v.shape[3];
      fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, (float)(1.0 / std::sqrt(fan_in)));
    } else if (role == Role::Norm) {  // GroupNorm γ
      fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 1.f, 0.1f);
    } else {  // biases, GroupNorm β
      fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, 0.1f);
    }
    ++stream;
    if (const ParamView* mine = layout_.find(v.name))
      be_.upload(params_ + mine->offset, host.data(), host.size());
    else
      qw_[v.name] = quantize_weight(host.data(), (int)v.shape[0], (int)(v.numel() / v.shape[0]), wfmt_, v.name);
  });
}

void Vae::save(const std::string& path) const {
  if (wfmt_ != WFormat::F32)
    fail("saving a VAE held as ", wformat_name(wfmt_), " is not supported: the low-precision VAE is converted at "
         "load time (--vae-type) from the F32/BF16 ae.safetensors");
  auto host = download_params(layout_, params_, be_);
  SafetensorsWriter wr;
  for (auto& [n, t] : host) wr.add(n, t);
  wr.write(path);
}

}  // namespace oboro
