// FLUX.1 VAE (spec §8). Structure (ldm / FLUX `AutoEncoder`):
//   ResnetBlock(x) = nin_shortcut(x) (1×1, only when channels change) + conv2(swish(GN2(conv1(swish(GN1(x))))))
//   AttnBlock(x)   = x + proj_out(softmax(q kᵀ/√C) v), q, k, v = 1×1 convs of GN(x), one head over all positions
//   Downsample     = pad (0,1,0,1) + conv3 stride 2;  Upsample = nearest ×2 + conv3 (fused: the conv reads x at ⌊i/2⌋)
//   Encoder: conv_in; level i: enc_blocks ResnetBlocks (+ Downsample unless last); mid (block_1, attn_1, block_2);
//            swish(norm_out); conv_out → 2z channels, of which only the first z (the mean) are computed.
//   Decoder: conv_in; mid; level i = L−1 … 0: dec_blocks ResnetBlocks (+ Upsample unless i = 0); swish(norm_out);
//            conv_out.
// Execution: one image at a time, activations in three rotating buffers (x, a = swish(GN(·)), c = conv output;
// the shortcut/residual is accumulated into c), every buffer sized by a dry run of the same code at that size.
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

constexpr size_t kIm2colBytes = size_t(16) << 20;  // the CPU backend's im2col budget per conv call

// Winograd's scratch for a BF16 3×3 stride-1 pad-1 conv (ops/cpu/winograd_cpu.cpp, winograd_scratch_bytes): U
// (positions × Co × Ci rounded up to even, BF16; 9 positions with up2, else 16) for the call, plus V (BF16, panels of
// 32 tiles) and M (F32) for a band of tile rows: within the budget, and within 2²⁰ floats unless that leaves fewer
// than 256 tiles; tile columns are padded to a multiple of 16.
size_t winograd_scratch_bytes(const Conv2dShape& s) {
  const size_t np = s.up2 ? 9 : 16, Kp = (size_t)(s.Ci + 1) / 2 * 2, K2 = Kp / 2, Co = (size_t)s.Co;
  const size_t nty = ((size_t)s.out_h() + 1) / 2, ntxp = ((size_t)(s.out_w() + 1) / 2 + 15) / 16 * 16;
  auto v = [&](size_t nb) { return np * ((nb * ntxp + 31) / 32) * K2 * 64; };  // BF16 values
  auto m = [&](size_t nb) { return np * Co * nb * ntxp; };                     // floats
  const size_t per_row = v(1) / 2 + m(1);
  const size_t cached = std::max<size_t>((size_t(1) << 20) / per_row, (256 + ntxp - 1) / ntxp);
  const size_t nb = std::clamp<size_t>(std::min(kIm2colBytes / sizeof(float) / per_row, cached), 1,
                                       std::max<size_t>(1, nty));
  return np * Co * Kp * sizeof(uint16_t) + v(nb) * sizeof(uint16_t) + m(nb) * sizeof(float);
}

// Scratch the CPU backend holds for one convolution (ops/cpu/conv_cpu.cpp, mirrored here: model code does not
// include backend kernels). F32: the im2col tile (none for a 1×1 stride-1 unpadded conv); a low-precision weight:
// the im2row tile rows(n, K) and output tile (n, Co) within the same budget, plus linear_w's BF16 copy of rows; a
// BF16 3×3 stride-1 pad-1 conv may run Winograd instead (on AVX-512 BF16 CPUs): the larger of the two.
size_t conv_scratch_bytes(const Conv2dShape& s, WFormat fmt) {
  const size_t K = (size_t)s.Ci * s.kh * s.kw, Wo = (size_t)s.out_w(), Ho = (size_t)s.out_h();
  if (fmt == WFormat::F32) {
    if (s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && !s.up2 && s.pad_t + s.pad_b + s.pad_l + s.pad_r == 0)
      return 0;
    const size_t per_row = K * Wo * sizeof(float);
    return std::min<size_t>(per_row * Ho, std::max(per_row, kIm2colBytes));
  }
  const size_t per_row = (K + s.Co) * Wo;
  const size_t rt = std::clamp<size_t>(kIm2colBytes / sizeof(float) / std::max<size_t>(1, per_row), 1, std::max<size_t>(1, Ho));
  const size_t n = rt * Wo;
  size_t b = n * (K + s.Co) * sizeof(float);
  if (fmt == WFormat::BF16 || fmt == WFormat::F8) b += n * ((K + 1) / 2 * 2) * sizeof(uint16_t);
  if (fmt == WFormat::BF16 && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.pad_t == 1 && s.pad_b == 1 &&
      s.pad_l == 1 && s.pad_r == 1)
    b = std::max(b, winograd_scratch_bytes(s));
  return b;
}

std::string I(int i) { return std::to_string(i); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Execution plan and one pass

struct Vae::Plan {
  Backend* be;
  bool encoder = false;
  int h = 0, w = 0;                 // latent size
  size_t slot_elems[3] = {0, 0, 0};  // each rotating buffer's largest tensor
  size_t att_elems = 0;             // S·C of the mid attention
  size_t att_rows = 0;              // S
  size_t col_bytes = 0;             // largest im2col buffer (inside the backend)
  double flops = 0;
  float* buf[3] = {nullptr, nullptr, nullptr};
  float *t = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *lse = nullptr;
  std::vector<Buffer> owned;

  explicit Plan(Backend* b) : be(b) {}  // b null: a dry plan that only counts
  size_t bytes() const {
    return (slot_elems[0] + slot_elems[1] + slot_elems[2] + 5 * att_elems + att_rows) * sizeof(float) + col_bytes;
  }
  float* take(size_t n) {
    owned.push_back(be->alloc(n, DType::F32, "vae.activations"));
    return owned.back().f32();
  }
  void allocate() {
    for (int i = 0; i < 3; ++i) buf[i] = take(slot_elems[i]);
    if (att_elems) {
      t = take(att_elems);
      q = take(att_elems);
      k = take(att_elems);
      v = take(att_elems);
      o = take(att_elems);
      lse = take(att_rows);
    }
  }
};

// Runs the network on the plan's buffers, or (dry) only records the sizes and FLOPs it would need.
struct Vae::Pass {
  Backend* be;  // null in a dry pass
  const VaeConfig& c;
  const ParamLayout& L;
  const float* P;
  Plan& pl;
  bool dry;
  WFormat fmt = WFormat::F32;                                   // conv / attention weight format
  const std::map<std::string, QuantizedWeight>* qw = nullptr;  // their storage when fmt ≠ F32

  const float* W(const std::string& n) const { return dry ? nullptr : P + L.at(n).offset; }
  WeightView WV(const std::string& n) const { return qw->at(n).view(); }
  float* buf(int slot) const { return dry ? nullptr : pl.buf[slot]; }
  static int next(int s) { return (s + 1) % 3; }
  void need(int slot, size_t n) { pl.slot_elems[slot] = std::max(pl.slot_elems[slot], n); }

  // dst = conv(src) (+= when acc) over a Ci×H×W input; H, W become the output size.
  void conv(int dst, int src, const std::string& n, int Ci, int Co, int& H, int& Wd, int k, int stride, int pt, int pb,
            int pl_, int pr, bool up2, bool acc) {
    Conv2dShape s;
    s.B = 1; s.Ci = Ci; s.H = H; s.W = Wd; s.Co = Co; s.kh = s.kw = k; s.sh = s.sw = stride;
    s.pad_t = pt; s.pad_b = pb; s.pad_l = pl_; s.pad_r = pr; s.up2 = up2;
    const int Ho = s.out_h(), Wo = s.out_w();
    if (dry) {
      const size_t K = (size_t)Ci * k * k;
      pl.flops += 2.0 * Co * (double)K * Ho * Wo;
      need(dst, (size_t)Co * Ho * Wo);
      pl.col_bytes = std::max(pl.col_bytes, conv_scratch_bytes(s, fmt));
    } else if (fmt == WFormat::F32) {
      be->conv2d_forward(buf(dst), buf(src), W(n + ".weight"), W(n + ".bias"), s, acc);
    } else {  // the weight viewed as (Co_stored, Ci·k·k); the encoder's conv_out uses its first Co rows
      be->conv2d_forward_w(buf(dst), buf(src), WV(n + ".weight").rows(0, Co), W(n + ".bias"), s, acc);
    }
    H = Ho;
    Wd = Wo;
  }
  void conv3(int dst, int src, const std::string& n, int Ci, int Co, int H, int Wd, bool acc = false) {
    conv(dst, src, n, Ci, Co, H, Wd, 3, 1, 1, 1, 1, 1, false, acc);
  }
  void gn(int dst, int src, const std::string& n, int C, int HW, bool silu) {
    if (dry) need(dst, (size_t)C * HW);
    else be->groupnorm_forward(buf(dst), buf(src), W(n + ".weight"), W(n + ".bias"), 1, C, HW, c.groups, c.eps, silu);
  }

  // x in slot sx (Ci, H, W) → returns the slot of the output (Co, H, W). With a nin_shortcut, the shortcut is
  // computed first so x can be normalised in place: three tensors (x: Ci, shortcut+output: Co, h: Co) instead of
  // four; conv2 then accumulates onto the shortcut.
  int resblock(int sx, const std::string& p, int Ci, int Co, int H, int Wd) {
    const int s1 = next(sx), s2 = next(s1), HW = H * Wd;
    if (Ci != Co) {
      int h1 = H, w1 = Wd;
      conv(s1, sx, p + "nin_shortcut", Ci, Co, h1, w1, 1, 1, 0, 0, 0, 0, false, false);
      gn(sx, sx, p + "norm1", Ci, HW, true);
      conv3(s2, sx, p + "conv1", Ci, Co, H, Wd);
      gn(s2, s2, p + "norm2", Co, HW, true);
      conv3(s1, s2, p + "conv2", Co, Co, H, Wd, true);
      return s1;
    }
    gn(s1, sx, p + "norm1", Ci, HW, true);
    conv3(s2, s1, p + "conv1", Ci, Co, H, Wd);
    gn(s2, s2, p + "norm2", Co, HW, true);
    conv3(s1, s2, p + "conv2", Co, Co, H, Wd);
    if (!dry) be->add_inplace(buf(s1), buf(sx), (size_t)Co * HW);
    return s1;
  }

  int attn(int sx, const std::string& p, int C, int H, int Wd) {
    const int S = H * Wd, sa = next(sx);
    const size_t SC = (size_t)S * C;
    gn(sa, sx, p + "norm", C, S, false);
    if (dry) {
      pl.att_elems = std::max(pl.att_elems, SC);
      pl.att_rows = std::max(pl.att_rows, (size_t)S);
      pl.flops += 4.0 * (double)S * S * C + 4 * 2.0 * (double)S * C * C;
      if (fmt == WFormat::BF16 || fmt == WFormat::F8)  // linear_w's BF16 copy of the (S, C) input
        pl.col_bytes = std::max(pl.col_bytes, (size_t)S * ((C + 1) / 2 * 2) * sizeof(uint16_t));
      return sa;
    }
    // The projections are (C, C, 1, 1) tensors: as Linear weights (N, K) = (C, C).
    auto lin = [&](float* y, const float* x, const std::string& w) {
      if (fmt == WFormat::F32) be->linear_forward(y, x, W(p + w + ".weight"), W(p + w + ".bias"), S, C, C);
      else be->linear_forward_w(y, x, WV(p + w + ".weight"), W(p + w + ".bias"), S, C, C);
    };
    be->transpose_forward(pl.t, buf(sa), 1, C, S);  // (C, S) → (S, C)
    lin(pl.q, pl.t, "q");
    lin(pl.k, pl.t, "k");
    lin(pl.v, pl.t, "v");
    be->attention_forward(pl.o, pl.lse, pl.q, pl.k, pl.v, nullptr, 1, S, 1, C, (float)(1.0 / std::sqrt((double)C)));
    lin(pl.q, pl.o, "proj_out");
    be->transpose_forward(buf(sa), pl.q, 1, S, C);  // (S, C) → (C, S)
    be->add_inplace(buf(sa), buf(sx), SC);
    return sa;
  }

  int mid(int cur, const std::string& p, int C, int H, int Wd) {
    cur = resblock(cur, p + "mid.block_1.", C, C, H, Wd);
    cur = attn(cur, p + "mid.attn_1.", C, H, Wd);
    return resblock(cur, p + "mid.block_2.", C, C, H, Wd);
  }

  // Input (in_channels, H, W) in slot 0 → slot holding the mean (z, H/stride, W/stride).
  int encoder(int H, int Wd) {
    const int nL = c.levels();
    need(0, (size_t)c.in_channels * H * Wd);
    conv3(1, 0, "encoder.conv_in", c.in_channels, c.ch, H, Wd);
    int cur = 1, C = c.ch;
    for (int i = 0; i < nL; ++i) {
      const int co = c.ch * c.ch_mult[i];
      for (int j = 0; j < c.enc_blocks; ++j) {
        cur = resblock(cur, "encoder.down." + I(i) + ".block." + I(j) + ".", C, co, H, Wd);
        C = co;
      }
      if (i != nL - 1) {
        const int dst = next(cur);
        conv(dst, cur, "encoder.down." + I(i) + ".downsample.conv", C, C, H, Wd, 3, 2, 0, 1, 0, 1, false, false);
        cur = dst;
      }
    }
    cur = mid(cur, "encoder.", C, H, Wd);
    gn(cur, cur, "encoder.norm_out", C, H * Wd, true);
    // conv_out has 2z output channels (mean, log-variance); its first z weight rows and biases give the mean.
    const int out = next(cur);
    conv(out, cur, "encoder.conv_out", C, c.z_channels, H, Wd, 3, 1, 1, 1, 1, 1, false, false);
    return out;
  }

  // Input (z, h, w) in slot 0 → slot holding the image (out_channels, h·stride, w·stride).
  int decoder(int H, int Wd) {
    const int nL = c.levels(), top = c.ch * c.ch_mult.back();
    need(0, (size_t)c.z_channels * H * Wd);
    conv3(1, 0, "decoder.conv_in", c.z_channels, top, H, Wd);
    int cur = mid(1, "decoder.", top, H, Wd), C = top;
    for (int i = nL - 1; i >= 0; --i) {
      const int co = c.ch * c.ch_mult[i];
      for (int j = 0; j < c.dec_blocks; ++j) {
        cur = resblock(cur, "decoder.up." + I(i) + ".block." + I(j) + ".", C, co, H, Wd);
        C = co;
      }
      if (i != 0) {
        const int dst = next(cur);
        conv(dst, cur, "decoder.up." + I(i) + ".upsample.conv", C, C, H, Wd, 3, 1, 1, 1, 1, 1, true, false);
        cur = dst;
      }
    }
    gn(cur, cur, "decoder.norm_out", C, H * Wd, true);
    const int out = next(cur);
    conv3(out, cur, "decoder.conv_out", C, c.out_channels, H, Wd);
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Vae

Vae::Vae(const VaeConfig& cfg, Backend& be, WFormat weights) : cfg_(cfg), be_(be), wfmt_(weights) {
  cfg_.validate("VAE config");
  check_vae_wformat(wfmt_, "VAE weight format");
  full_layout_ = vae_param_layout(cfg_);
  if (wfmt_ == WFormat::F32) {
    layout_ = full_layout_;
  } else {  // the conv weights are held in wfmt_
    vae_tensors(cfg_, [&](const std::string& n, const Shape& s, Role r) {
      if (r != Role::Weight) layout_.add(n, s);
    });
  }
  params_buf_ = be_.alloc(layout_.total(), DType::F32, "vae.params");
  params_ = params_buf_.f32();
}

size_t Vae::weight_bytes() const {
  size_t b = layout_.total() * sizeof(float);
  for (const auto& [n, q] : qw_) b += q.bytes();
  return b;
}

std::unique_ptr<Vae> Vae::converted(WFormat fmt) const {
  auto m = std::make_unique<Vae>(cfg_, be_, fmt);
  convert_weights_to(be_, full_layout_, layout_, params_, qw_, m->layout_, m->params_, m->qw_, fmt);
  return m;
}

Vae::~Vae() {
  plan_.reset();
}

void Vae::release_activations() { plan_.reset(); }

Vae::Plan& Vae::plan(bool encoder, int h, int w) {
  if (plan_ && plan_->encoder == encoder && plan_->h == h && plan_->w == w) return *plan_;
  plan_.reset();
  for (auto& [n, q] : qw_) q.bind(be_);
  auto p = std::make_unique<Plan>(&be_);
  p->encoder = encoder;
  p->h = h;
  p->w = w;
  Pass dry{nullptr, cfg_, layout_, params_, *p, true, wfmt_, &qw_};
  const int s = cfg_.stride();
  if (encoder) dry.encoder(h * s, w * s);
  else dry.decoder(h, w);
  p->allocate();
  peak_act_bytes_ = std::max(peak_act_bytes_, p->bytes());
  plan_ = std::move(p);
  return *plan_;
}

size_t Vae::activation_bytes(const VaeConfig& cfg, bool encoder, int h, int w, WFormat fmt) {
  Plan p(nullptr);  // dry: nothing is allocated
  ParamLayout none;
  Pass dry{nullptr, cfg, none, nullptr, p, true, fmt, nullptr};
  if (encoder) dry.encoder(h * cfg.stride(), w * cfg.stride());
  else dry.decoder(h, w);
  return p.bytes();
}

double Vae::pass_flops(const VaeConfig& cfg, bool encoder, int h, int w) {
  Plan p(nullptr);  // dry: nothing is allocated
  ParamLayout none;
  Pass dry{nullptr, cfg, none, nullptr, p, true};
  if (encoder) dry.encoder(h * cfg.stride(), w * cfg.stride());
  else dry.decoder(h, w);
  return p.flops;
}

void Vae::run_encoder(float* mean, const float* image, int H, int W) {
  const int s = cfg_.stride(), h = H / s, w = W / s;
  Plan& p = plan(true, h, w);
  be_.upload(p.buf[0], image, (size_t)cfg_.in_channels * H * W);
  Pass run{&be_, cfg_, layout_, params_, p, false, wfmt_, &qw_};
  const int slot = run.encoder(H, W);
  be_.download(mean, p.buf[slot], (size_t)cfg_.z_channels * h * w);
  flops_ += p.flops;
}

void Vae::run_decoder(float* image, const float* zin, int h, int w) {
  const int s = cfg_.stride();
  Plan& p = plan(false, h, w);
  be_.upload(p.buf[0], zin, (size_t)cfg_.z_channels * h * w);
  Pass run{&be_, cfg_, layout_, params_, p, false, wfmt_, &qw_};
  const int slot = run.decoder(h, w);
  be_.download(image, p.buf[slot], (size_t)cfg_.out_channels * h * s * w * s);
  flops_ += p.flops;
}

namespace {

// Tile origins along an axis of n latent pixels: tiles of T (or one tile of n ≤ T), neighbours overlapping by at
// least O, spread evenly so the last tile ends at n.
std::vector<int> tile_origins(int n, int T, int O) {
  if (n <= T) return {0};
  const int count = (n - O + (T - O) - 1) / (T - O);  // ⌈(n − O)/(T − O)⌉ ≥ 2
  std::vector<int> pos(count);
  for (int k = 0; k < count; ++k) pos[k] = (int)(((int64_t)k * (n - T) + (count - 1) / 2) / (count - 1));
  return pos;
}

// Blend weight of tile k along one axis at local output coordinate u ∈ [0, len): a linear ramp (u + ½)/ov over the
// overlap with the previous tile, the mirror ramp over the overlap with the next one, 1 elsewhere.
std::vector<double> axis_weights(const std::vector<int>& pos, int k, int T, int unit) {
  const int len = T * unit;
  const int rise = k > 0 ? (pos[k - 1] + T - pos[k]) * unit : 0;
  const int fall = k + 1 < (int)pos.size() ? (pos[k] + T - pos[k + 1]) * unit : 0;
  std::vector<double> wv(len, 1.0);
  for (int u = 0; u < len; ++u) {
    double v = 1.0;
    if (rise > 0) v = std::min(v, (u + 0.5) / rise);
    if (fall > 0) v = std::min(v, (len - u - 0.5) / fall);
    wv[u] = v;
  }
  return wv;
}

}  // namespace

bool Vae::would_tile(const VaeConfig& cfg, bool encoder, int h, int w, const VaeRunOptions& o, WFormat fmt) {
  if (o.tiling == VaeRunOptions::Tiling::Off) return false;
  if (h <= o.tile && w <= o.tile) return false;  // one tile = the untiled pass
  if (o.tiling == VaeRunOptions::Tiling::On) return true;
  return activation_bytes(cfg, encoder, h, w, fmt) > o.auto_tile_bytes;
}

// Encoder: in = image (Cin, h·s, w·s), out = mean (z, h, w); decoder: in = z (z, h, w), out = image.
void Vae::tiled(bool encoder, float* out, const float* in, int h, int w, const VaeRunOptions& o) {
  const int s = cfg_.stride();
  const int T = o.tile, O = o.overlap;
  const int th = std::min(T, h), tw = std::min(T, w);
  const auto py = tile_origins(h, T, O), px = tile_origins(w, T, O);
  const int Cin = encoder ? cfg_.in_channels : cfg_.z_channels;
  const int Cout = encoder ? cfg_.z_channels : cfg_.out_channels;
  const int iu = encoder ? s : 1, ou = encoder ? 1 : s;          // pixels per latent pixel, in and out
  const int IH = h * iu, IW = w * iu, OH = h * ou, OW = w * ou;  // full input / output sizes
  const int tih = th * iu, tiw = tw * iu, toh = th * ou, tow = tw * ou;
  std::vector<float> tin((size_t)Cin * tih * tiw), tout((size_t)Cout * toh * tow);
  std::vector<double> acc((size_t)Cout * OH * OW, 0.0), wy_sum(OH, 0.0), wx_sum(OW, 0.0);
  for (size_t ky = 0; ky < py.size(); ++ky) {
    const auto wy = axis_weights(py, (int)ky, th, ou);
    for (int u = 0; u < toh; ++u) wy_sum[py[ky] * ou + u] += wy[u];
  }
  for (size_t kx = 0; kx < px.size(); ++kx) {
    const auto wx = axis_weights(px, (int)kx, tw, ou);
    for (int u = 0; u < tow; ++u) wx_sum[px[kx] * ou + u] += wx[u];
  }
  for (size_t ky = 0; ky < py.size(); ++ky) {
    const auto wy = axis_weights(py, (int)ky, th, ou);
    for (size_t kx = 0; kx < px.size(); ++kx) {
      const auto wx = axis_weights(px, (int)kx, tw, ou);
      const int y0 = py[ky] * iu, x0 = px[kx] * iu;
      for (int c = 0; c < Cin; ++c)
        for (int y = 0; y < tih; ++y)
          std::memcpy(&tin[((size_t)c * tih + y) * tiw], in + ((size_t)c * IH + y0 + y) * IW + x0, tiw * sizeof(float));
      if (encoder) run_encoder(tout.data(), tin.data(), tih, tiw);
      else run_decoder(tout.data(), tin.data(), th, tw);
      const int oy0 = py[ky] * ou, ox0 = px[kx] * ou;
      for (int c = 0; c < Cout; ++c)
        for (int y = 0; y < toh; ++y) {
          double* dst = &acc[((size_t)c * OH + oy0 + y) * OW + ox0];
          const float* src = &tout[((size_t)c * toh + y) * tow];
          for (int x = 0; x < tow; ++x) dst[x] += wy[y] * wx[x] * src[x];
        }
    }
  }
  for (int c = 0; c < Cout; ++c)
    for (int y = 0; y < OH; ++y)
      for (int x = 0; x < OW; ++x) {
        const size_t i = ((size_t)c * OH + y) * OW + x;
        out[i] = (float)(acc[i] / (wy_sum[y] * wx_sum[x]));
      }
}

namespace {
void check_opts(const VaeRunOptions& o) {
  if (o.tile < 1) fail("VAE tile size must be at least 1 latent pixel, got ", o.tile);
  if (o.overlap < 0 || o.overlap >= o.tile)
    fail("VAE tile overlap must be in [0, tile) = [0, ", o.tile, "), got ", o.overlap);
}
}  // namespace

void Vae::encode(float* latent, const float* image, int B, int H, int W, const VaeRunOptions& o) {
  if (!cfg_.has_encoder) fail("this VAE file has no encoder (encoder.* tensors): it can decode but not encode images");
  const int s = cfg_.stride();
  if (B < 1 || H < s || W < s || H % s || W % s)
    fail("VAE encode: image size ", W, "x", H, " must be a positive multiple of ", s, " in both dimensions");
  check_opts(o);
  const int h = H / s, w = W / s;
  const size_t in_n = (size_t)cfg_.in_channels * H * W, out_n = (size_t)cfg_.z_channels * h * w;
  const bool tile = would_tile(true, h, w, o);
  for (int b = 0; b < B; ++b) {
    float* lat = latent + b * out_n;
    if (tile) tiled(true, lat, image + b * in_n, h, w, o);
    else run_encoder(lat, image + b * in_n, H, W);
    for (size_t i = 0; i < out_n; ++i) lat[i] = cfg_.scale * (lat[i] - cfg_.shift);
  }
}

void Vae::decode(float* image, const float* latent, int B, int h, int w, const VaeRunOptions& o) {
  if (!cfg_.has_decoder) fail("this VAE file has no decoder (decoder.* tensors): it can encode but not decode");
  if (B < 1 || h < 1 || w < 1) fail("VAE decode: empty latent (B=", B, ", ", w, "x", h, ")");
  check_opts(o);
  const int s = cfg_.stride();
  const size_t in_n = (size_t)cfg_.z_channels * h * w, out_n = (size_t)cfg_.out_channels * h * s * w * s;
  const bool tile = would_tile(false, h, w, o);
  std::vector<float> z(in_n);
  for (int b = 0; b < B; ++b) {
    const float* lat = latent + b * in_n;
    for (size_t i = 0; i < in_n; ++i) z[i] = lat[i] / cfg_.scale + cfg_.shift;
    if (tile) tiled(false, image + b * out_n, z.data(), h, w, o);
    else run_decoder(image + b * out_n, z.data(), h, w);
  }
}

}  // namespace oboro
