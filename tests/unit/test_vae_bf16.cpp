// The VAE in low precision (docs/formats.md, "VAE weight formats"):
//  - Backend::conv2d_forward_w with a BF16 weight against the F32 convolution of the BF16-rounded weight and input
//    (tight: the same exact products, only the F32 summation differs) and against the plain F32 convolution
//    (loose: the BF16 rounding of both operands), for 3×3 pad 1, stride 2 with the Downsample's asymmetric pad,
//    1×1 (direct and strided), the fused ×2 upsampling, bias / no bias, accumulate; F16 weights; thread-count,
//    tile-size and portable-vs-AVX-512 behaviour; the ProfilingBackend row; the default implementation's refusal;
//  - a small VAE (real structure, reduced width) decoded and encoded with bf16 / f16 conv weights vs F32 (PSNR),
//    loaded from a file with a type, its weight bytes and memory plan, and the refusal of f8 / q8_0.
#include "test_util.h"
#include "core/dtype.h"
#include "core/error.h"
#include "flow/memory_plan.h"
#include "io/safetensors.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "ops/cpu/conv_cpu.h"
#include "ops/cpu/qgemm_cpu.h"
#include "ops/profiling_backend.h"
#include "ops/reference_image.h"
#include "conv_test_util.h"
#include "op_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

using namespace oboro;
using namespace oboro::test;

namespace {

Backend& be() { return cpu_backend(); }

Conv2dShape shape(int B, int Ci, int H, int W, int Co, int kh, int kw, int sh, int sw, int pt, int pb, int pl, int pr,
                  bool up2 = false) {
  Conv2dShape s;
  s.B = B; s.Ci = Ci; s.H = H; s.W = W; s.Co = Co; s.kh = kh; s.kw = kw; s.sh = sh; s.sw = sw;
  s.pad_t = pt; s.pad_b = pb; s.pad_l = pl; s.pad_r = pr; s.up2 = up2;
  return s;
}
using namespace test::conv;  // in_n, out_n, w_n, k_of, Case (conv_test_util.h)

std::vector<Case> cases() {
  return {
      {"3x3 pad1", shape(2, 5, 9, 11, 7, 3, 3, 1, 1, 1, 1, 1, 1), true},
      {"3x3 pad1 no bias, Co 40", shape(1, 16, 10, 13, 40, 3, 3, 1, 1, 1, 1, 1, 1), false},
      {"downsample pad(0,1,0,1) s2 even", shape(1, 6, 8, 10, 6, 3, 3, 2, 2, 0, 1, 0, 1), true},
      {"downsample pad(0,1,0,1) s2 odd", shape(2, 3, 9, 7, 4, 3, 3, 2, 2, 0, 1, 0, 1), true},
      {"1x1 direct", shape(2, 8, 5, 6, 12, 1, 1, 1, 1, 0, 0, 0, 0), false},
      {"1x1 direct bias, Ci 64", shape(1, 64, 5, 6, 33, 1, 1, 1, 1, 0, 0, 0, 0), true},
      {"1x1 stride2", shape(1, 4, 7, 9, 5, 1, 1, 2, 2, 0, 0, 0, 0), true},
      {"3x2 stride(2,1) pads(2,0,1,3)", shape(2, 3, 7, 6, 4, 3, 2, 2, 1, 2, 0, 1, 3), true},
      {"up2 3x3 pad1", shape(2, 4, 5, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, true), true},
      {"up2 3x3 stride2 pad(0,1,0,1)", shape(1, 3, 4, 5, 2, 3, 3, 2, 2, 0, 1, 0, 1, true), true},
      {"wide K 64->32 3x3", shape(1, 64, 12, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1), true},
  };
}


// Worst case of |y − r| / A over the outputs, A = the reference of |w|·|x| (+|b|): the error relative to the sum of
// the magnitudes of the terms, which is what rounding bounds are stated in.
double worst_scaled(const Vec& y, const Vec& r, const Vec& A) {
  double m = 0;
  for (size_t i = 0; i < y.size(); ++i) m = std::max(m, std::fabs((double)y[i] - r[i]) / std::max(1e-30, (double)A[i]));
  return m;
}

struct Data {
  Vec x, w, b, y0;
};
Data data_for(const Conv2dShape& s, uint64_t seed) {
  return {randn(in_n(s), seed), randn(w_n(s), seed + 1, 1.f / std::sqrt((float)k_of(s))), randn(s.Co, seed + 2, 0.1f),
          randn(out_n(s), seed + 3)};
}

// The convolution through conv2d_forward_w with w stored in `fmt`; y starts as y0 (accumulate) or garbage.
Vec conv_w(Backend& b, const Conv2dShape& s, const Data& d, WFormat fmt, bool bias, bool accumulate) {
  const QuantizedWeight q = quantize_weight(d.w.data(), s.Co, k_of(s), fmt, "test weight");
  Vec y = accumulate ? d.y0 : Vec(out_n(s), 123.f);
  b.conv2d_forward_w(y.data(), d.x.data(), q.view(), bias ? d.b.data() : nullptr, s, accumulate);
  return y;
}

// Reference in double: conv of (x, w) + b (+ y0 when accumulating), and the magnitude sum A.
void reference(const Conv2dShape& s, const Vec& x, const Vec& w, const Data& d, bool bias, bool accumulate, Vec& r,
               Vec& A) {
  r.assign(out_n(s), 0.f);
  A.assign(out_n(s), 0.f);
  ref::conv2d(r.data(), x.data(), w.data(), bias ? d.b.data() : nullptr, s);
  const Vec ab = absv(d.b);
  ref::conv2d(A.data(), absv(x).data(), absv(w).data(), bias ? ab.data() : nullptr, s);
  if (accumulate)
    for (size_t i = 0; i < r.size(); ++i) {
      r[i] += d.y0[i];
      A[i] += std::fabs(d.y0[i]);
    }
}

// BF16 kernels: products of BF16 values are exact in F32 (8 + 8 significand bits ≤ 24), so against the reference
// on the BF16-rounded operands the only error is the F32 accumulation (K products, the bias, the accumulated y):
// |y − r| ≤ γ_{K+2}·A with γ_n = n·u/(1 − n·u), u = 2⁻²⁴. Against the unrounded operands each product also carries
// the rounding of both factors, |w'x' − wx| ≤ (2u' + u'²)|wx|, u' = 2⁻⁸ (BF16 unit roundoff): ≤ 0.0079·A in all.
double tight_bound(int K) {
  const double u = std::ldexp(1.0, -24), n = K + 2;
  return n * u / (1 - n * u);
}
constexpr double kLooseBound = 2 * 0.00390625 + 0.00390625 * 0.00390625 + 1e-4;

// These bounds are the direct (im2row) path's: the 3×3 stride-1 pad-1 cases would otherwise go through Winograd,
// which rounds transformed values instead (tests/unit/test_winograd.cpp).
struct ForceDirect {
  bool was;
  ForceDirect() : was(cpu::conv_force_direct(true)) {}
  ~ForceDirect() { cpu::conv_force_direct(was); }
};

TEST(VaeBf16, ConvMatchesRoundedReferenceTightly) {
  ForceDirect direct;
  for (const auto& c : cases())
    for (bool acc : {false, true}) {
      const Conv2dShape& s = c.s;
      const Data d = data_for(s, 11);
      const Vec y = conv_w(be(), s, d, WFormat::BF16, c.bias, acc);
      Vec r, A, r32, A32;
      reference(s, bf16_round(d.x), bf16_round(d.w), d, c.bias, acc, r, A);
      reference(s, d.x, d.w, d, c.bias, acc, r32, A32);
      const double tight = worst_scaled(y, r, A), loose = worst_scaled(y, r32, A32);
      std::printf("[ vae bf16 ] %-32s%s |err|/A: vs rounded %.2e (bound %.2e), vs f32 %.2e (bound %.2e); rel L2 vs "
                  "f32 %.2e\n", c.name, acc ? " acc" : "    ", tight, tight_bound(k_of(s)), loose, kLooseBound,
                  rel_err(y, r32));
      EXPECT_LE(tight, tight_bound(k_of(s))) << c.name << (acc ? " accumulate" : "");
      EXPECT_LE(loose, kLooseBound) << c.name << (acc ? " accumulate" : "");
      EXPECT_LE(rel_err(y, r32), 1e-2) << c.name;
    }
}

// F16 weights: F32 activations times the widened F16 weight (exact), F32 accumulation: tight against the reference
// on the F16-rounded weight and the unrounded input.
TEST(VaeBf16, ConvF16Weights) {
  for (const auto& c : cases()) {
    const Conv2dShape& s = c.s;
    const Data d = data_for(s, 21);
    const Vec y = conv_w(be(), s, d, WFormat::F16, c.bias, false);
    Vec w16(d.w.size());
    for (size_t i = 0; i < w16.size(); ++i) w16[i] = f16_to_f32(f32_to_f16(d.w[i]));
    Vec r, A;
    reference(s, d.x, w16, d, c.bias, false, r, A);
    EXPECT_LE(worst_scaled(y, r, A), tight_bound(k_of(s))) << c.name;
  }
}

// An F32 view is conv2d_forward itself (bitwise).
TEST(VaeBf16, F32ViewIsConv2dForward) {
  const Conv2dShape s = shape(1, 6, 8, 10, 6, 3, 3, 2, 2, 0, 1, 0, 1);
  const Data d = data_for(s, 31);
  Vec a(out_n(s)), b(out_n(s));
  be().conv2d_forward(a.data(), d.x.data(), d.w.data(), d.b.data(), s, false);
  be().conv2d_forward_w(b.data(), d.x.data(), f32_view(d.w.data(), s.Co, k_of(s)), d.b.data(), s, false);
  EXPECT_TRUE(bitwise_equal(a, b));
}

TEST(VaeBf16, ThreadCountTileSizeAndKernelIndependence) {
  ForceDirect direct;  // the im2row path's tiles (Winograd's bands: test_winograd.cpp)
  const Conv2dShape s = shape(1, 32, 20, 36, 48, 3, 3, 1, 1, 1, 1, 1, 1, true);
  const Data d = data_for(s, 41);
  const QuantizedWeight q = quantize_weight(d.w.data(), s.Co, k_of(s), WFormat::BF16);
  auto run = [&](int threads, size_t budget) {
    ThreadCount tc(threads);
    Vec y(out_n(s));
    cpu::conv2d_forward_w(y.data(), d.x.data(), q.view(), d.b.data(), s, false, budget);
    return y;
  };
  const Vec y1 = run(1, cpu::kConvColBudget), y2 = run(2, cpu::kConvColBudget);
  EXPECT_TRUE(bitwise_equal(y1, y2)) << "1 vs 2 threads";
  EXPECT_TRUE(bitwise_equal(y1, run(3, cpu::kConvColBudget))) << "1 vs 3 threads";
  // Every output element is one dot product over the whole K whatever the tile: bitwise the same for any budget.
  EXPECT_TRUE(bitwise_equal(y1, run(2, 1))) << "one output row per tile";
  EXPECT_TRUE(bitwise_equal(y1, run(2, (size_t)(k_of(s) + s.Co) * s.out_w() * 5))) << "5 rows per tile";
  EXPECT_EQ(cpu::conv2d_w_tile_rows(s, 1), 1);
  // The portable kernel: the same products, its own summation order — within the tight bound, thread-independent.
  const bool was = cpu::qgemm_force_portable(true);
  const Vec p1 = run(1, cpu::kConvColBudget), p2 = run(2, 1);
  cpu::qgemm_force_portable(was);
  EXPECT_TRUE(bitwise_equal(p1, p2));
  Vec r, A;
  reference(s, bf16_round(d.x), bf16_round(d.w), d, true, false, r, A);
  EXPECT_LE(worst_scaled(p1, r, A), tight_bound(k_of(s)));
  EXPECT_LE(worst_scaled(y1, r, A), tight_bound(k_of(s)));
}

TEST(VaeBf16, ProfilingCountsAndDefaultRefuses) {
  const Conv2dShape s = shape(1, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1);
  const Data d = data_for(s, 51);
  ProfilingBackend prof(be());
  const Vec y = conv_w(prof, s, d, WFormat::BF16, true, false);
  EXPECT_TRUE(bitwise_equal(y, conv_w(be(), s, d, WFormat::BF16, true, false)));
  bool found = false;
  for (const auto& st : prof.stats())
    if (st.op == "conv2d_forward_w.bf16") {
      found = true;
      EXPECT_EQ(st.calls, 1);
      EXPECT_DOUBLE_EQ(st.flops, ProfilingBackend::conv2d_flops(s));
    }
  EXPECT_TRUE(found);
  // The base implementation (a backend without the override) refuses a BF16 weight with one error.
  const QuantizedWeight q = quantize_weight(d.w.data(), s.Co, k_of(s), WFormat::BF16);
  Vec out(out_n(s));
  const std::string e = error_of([&] { prof.Backend::conv2d_forward_w(out.data(), d.x.data(), q.view(), nullptr, s, false); });
  EXPECT_NE(e.find("no convolution kernel for bf16"), std::string::npos) << e;
  EXPECT_NE(e.find("--vae-type f32"), std::string::npos) << e;
}

// ---------------------------------------------------------------------------------------------
// The VAE

VaeConfig small_cfg() {
  VaeConfig c;  // the real structure (3 levels: down/upsampling, nin_shortcuts, mid attention), reduced width
  c.ch = 32;
  c.ch_mult = {1, 2, 2};
  c.enc_blocks = 1;
  c.dec_blocks = 2;
  c.z_channels = 4;
  return c;
}

// PSNR of `a` against the reference `r`, the peak being r's range (max − min): random-weight images are not in [-1, 1].
double psnr(const Vec& a, const Vec& r) {
  double mse = 0, lo = 1e30, hi = -1e30;
  for (size_t i = 0; i < r.size(); ++i) {
    const double d = (double)a[i] - r[i];
    mse += d * d;
    lo = std::min(lo, (double)r[i]);
    hi = std::max(hi, (double)r[i]);
  }
  mse /= (double)r.size();
  return 10 * std::log10((hi - lo) * (hi - lo) / std::max(mse, 1e-300));
}

Vec smooth_image(int H, int W) {
  Vec img((size_t)3 * H * W);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        img[((size_t)c * H + y) * W + x] = 0.8f * std::sin(0.21f * x + 0.13f * y * (c + 1) + c);
  return img;
}

TEST(VaeBf16, SmallVaeDecodeEncodePsnr) {
  Vae f32(small_cfg(), be());
  f32.init_random(5);
  const int s = f32.config().stride(), h = 10, w = 14, H = h * s, W = w * s;
  const Vec lat = randn((size_t)4 * h * w, 61);
  const Vec img = smooth_image(H, W);
  Vec ref_img((size_t)3 * H * W), ref_lat(lat.size());
  f32.decode(ref_img.data(), lat.data(), 1, h, w);
  f32.encode(ref_lat.data(), img.data(), 1, H, W);
  for (WFormat fmt : {WFormat::BF16, WFormat::F16}) {
    auto q = f32.converted(fmt);
    EXPECT_EQ(q->weight_format(), fmt);
    // init_random in a format draws the same values and converts them: the same model.
    Vae direct(small_cfg(), be(), fmt);
    direct.init_random(5);
    Vec di((size_t)3 * H * W), dl(lat.size()), qi(di.size()), ql(dl.size());
    q->decode(qi.data(), lat.data(), 1, h, w);
    q->encode(ql.data(), img.data(), 1, H, W);
    direct.decode(di.data(), lat.data(), 1, h, w);
    direct.encode(dl.data(), img.data(), 1, H, W);
    EXPECT_TRUE(bitwise_equal(qi, di)) << wformat_name(fmt);
    EXPECT_TRUE(bitwise_equal(ql, dl)) << wformat_name(fmt);
    const double pd = psnr(qi, ref_img), pe = psnr(ql, ref_lat);
    std::printf("[ vae bf16 ] small VAE (%s) %s vs f32: decode PSNR %.1f dB (rel L2 %.2e), encode PSNR %.1f dB "
                "(rel L2 %.2e); weights %zu vs %zu bytes\n", f32.config().describe().c_str(), wformat_name(fmt), pd,
                rel_err(qi, ref_img), pe, rel_err(ql, ref_lat), q->weight_bytes(), f32.weight_bytes());
    EXPECT_GE(pd, fmt == WFormat::BF16 ? 35.0 : 50.0) << wformat_name(fmt);
    EXPECT_GE(pe, fmt == WFormat::BF16 ? 35.0 : 50.0) << wformat_name(fmt);
    EXPECT_LE(rel_err(qi, ref_img), fmt == WFormat::BF16 ? 2e-2 : 1e-3);
    EXPECT_LE(rel_err(ql, ref_lat), fmt == WFormat::BF16 ? 2e-2 : 1e-3);
    // The conv weights are ~all of the parameters: about half the bytes.
    EXPECT_LT(q->weight_bytes(), f32.weight_bytes() * 0.52);
    EXPECT_GT(q->weight_bytes(), f32.weight_bytes() * 0.5);
  }
  // Back to F32 from bf16 is the bf16-rounded model; F32 → F32 is the same model, bitwise.
  auto same = f32.converted(WFormat::F32);
  Vec si(ref_img.size());
  same->decode(si.data(), lat.data(), 1, h, w);
  EXPECT_TRUE(bitwise_equal(si, ref_img));
}

TEST(VaeBf16, LoadWithTypeAndMemoryPlan) {
  Vae f32(small_cfg(), be());
  f32.init_random(7);
  const std::string path = (process_tmpdir("oboro_vae_bf16") / "ae.safetensors").string();
  f32.save(path);
  auto loaded = Vae::load(path, be(), WFormat::BF16);
  auto conv = f32.converted(WFormat::BF16);
  const int h = 6, w = 8, s = f32.config().stride();
  const Vec lat = randn((size_t)4 * h * w, 71);
  Vec a((size_t)3 * h * s * w * s), b(a.size());
  loaded->decode(a.data(), lat.data(), 1, h, w);
  conv->decode(b.data(), lat.data(), 1, h, w);
  EXPECT_TRUE(bitwise_equal(a, b));
  EXPECT_EQ(loaded->weight_bytes(), conv->weight_bytes());
  // The memory plan counts the conv weights in their format (the F32 rest with the layout's alignment).
  const WeightInfo wi32 = vae_weight_info(path), wi16 = vae_weight_info(path, WFormat::BF16);
  EXPECT_EQ(wi32.resident_bytes, f32.weight_bytes());
  EXPECT_NEAR((double)wi16.resident_bytes, (double)loaded->weight_bytes(), 0.01 * loaded->weight_bytes());
  EXPECT_LT(wi16.resident_bytes, wi32.resident_bytes * 0.52);
  // Activations: the bf16 plan holds the im2row tile, output tile and BF16 copy instead of the im2col tile.
  EXPECT_GT(Vae::activation_bytes(small_cfg(), false, h, w, WFormat::BF16), 0u);
  EXPECT_EQ(loaded->activation_bytes(false, h, w), Vae::activation_bytes(small_cfg(), false, h, w, WFormat::BF16));
  // A low-precision VAE is not saved (it is converted while loading).
  EXPECT_NE(error_of([&] { loaded->save(path + ".x"); }).find("not supported"), std::string::npos);
}

TEST(VaeBf16, UnsupportedTypesAreRefused) {
  for (WFormat f : {WFormat::F8, WFormat::Q8_0}) {
    const std::string e = error_of([&] { Vae v(small_cfg(), be(), f); });
    EXPECT_NE(e.find(std::string("as ") + wformat_name(f)), std::string::npos) << e;
    EXPECT_NE(e.find("f32, bf16 and f16"), std::string::npos) << e;
  }
  EXPECT_NE(error_of([] { parse_vae_wformat("q8_0", "--vae-type"); }).find("--vae-type"), std::string::npos);
  EXPECT_NE(error_of([] { parse_vae_wformat("int4", "--vae-type"); }).find("unknown weight type"), std::string::npos);
  EXPECT_EQ(parse_vae_wformat("", "--vae-type"), WFormat::F32);
  EXPECT_EQ(parse_vae_wformat("bf16", "--vae-type"), WFormat::BF16);
  EXPECT_EQ(parse_vae_wformat("f16", "--vae-type"), WFormat::F16);
}

}  // namespace
