// Winograd F(2×2, 3×3) for BF16 conv weights (ops/cpu/winograd_cpu.h):
//  - the fast kernel against its naive reference (the same BF16 rounding of U and V, F64 sums): only F32 summation
//    differs;
//  - against the naive F64 convolution with the same BF16 weights and the F32 input, and against the F32 model
//    (unrounded weights), next to the direct (im2row) bf16 path's own errors, on odd shapes: Ci / Co not multiples
//    of 16 / 32, odd H / W (edge tiles), up2, accumulate, bias / no bias, B = 2, Co above one GEMM block;
//  - bitwise independence of the thread count and the band size; the dispatch rules and conv_force_direct.
#include "core/dtype.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "ops/cpu/conv_cpu.h"
#include "ops/cpu/qgemm_cpu.h"
#include "ops/cpu/winograd_cpu.h"
#include "ops/reference_image.h"
#include "conv_test_util.h"
#include "op_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

using namespace oboro;
using namespace oboro::test;

namespace {

Conv2dShape conv3(int B, int Ci, int H, int W, int Co, bool up2) {
  Conv2dShape s;
  s.B = B; s.Ci = Ci; s.H = H; s.W = W; s.Co = Co; s.kh = s.kw = 3;
  s.pad_t = s.pad_b = s.pad_l = s.pad_r = 1; s.up2 = up2;
  return s;
}
using namespace test::conv;  // in_n, out_n, w_n, k_of, Case (conv_test_util.h)

std::vector<Case> cases() {
  return {
      {"B2 5->7 9x11", conv3(2, 5, 9, 11, 7, false), true},
      {"3->33 7x13 no bias", conv3(1, 3, 7, 13, 33, false), false},
      {"17->20 1x1 image", conv3(1, 17, 1, 1, 20, false), true},
      {"1->1 2x3", conv3(1, 1, 2, 3, 1, false), true},
      {"40->50 11x35 (2 groups/row)", conv3(1, 40, 11, 35, 50, false), true},
      {"64->250 6x70 (2 Co blocks)", conv3(1, 64, 6, 70, 250, false), true},
      {"128->3 13x9 (conv_out-like)", conv3(1, 128, 13, 9, 3, false), true},
      {"up2 B2 4->6 5x7", conv3(2, 4, 5, 7, 6, true), true},
      {"up2 9->13 3x17 no bias", conv3(1, 9, 3, 17, 13, true), false},
      {"up2 31->24 8x20", conv3(1, 31, 8, 20, 24, true), true},
  };
}

struct Data {
  Vec x, w, b, y0;
};
Data data_for(const Conv2dShape& s, uint64_t seed) {
  return {randn(in_n(s), seed), randn((size_t)s.Co * k_of(s), seed + 1, 1.f / std::sqrt((float)k_of(s))),
          randn(s.Co, seed + 2, 0.1f), randn(out_n(s), seed + 3)};
}


// Forces the direct path for a scope.
struct ForceDirect {
  bool was;
  ForceDirect() : was(cpu::conv_force_direct(true)) {}
  ~ForceDirect() { cpu::conv_force_direct(was); }
};

// y through conv2d_forward_w (y starts as y0 when accumulating, garbage otherwise).
Vec run_w(const Conv2dShape& s, const Data& d, const QuantizedWeight& q, bool bias, bool acc,
          size_t budget = cpu::kConvColBudget) {
  Vec y = acc ? d.y0 : Vec(out_n(s), 123.f);
  cpu::conv2d_forward_w(y.data(), d.x.data(), q.view(), bias ? d.b.data() : nullptr, s, acc, budget);
  return y;
}

// F64 convolution of (x, w) + b (+ y0), and the magnitude A = |w|·|x| (+|b|, +|y0|) errors are scaled by.
void reference(const Conv2dShape& s, const Vec& x, const Vec& w, const Data& d, bool bias, bool acc, Vec& r, Vec& A) {
  r.assign(out_n(s), 0.f);
  A.assign(out_n(s), 0.f);
  ref::conv2d(r.data(), x.data(), w.data(), bias ? d.b.data() : nullptr, s);
  const Vec ab = absv(d.b);
  ref::conv2d(A.data(), absv(x).data(), absv(w).data(), bias ? ab.data() : nullptr, s);
  if (acc)
    for (size_t i = 0; i < r.size(); ++i) {
      r[i] += d.y0[i];
      A[i] += std::fabs(d.y0[i]);
    }
}

double worst_scaled(const Vec& y, const Vec& r, const Vec& A) {
  double m = 0;
  for (size_t i = 0; i < y.size(); ++i) m = std::max(m, std::fabs((double)y[i] - r[i]) / std::max(1e-30, (double)A[i]));
  return m;
}

bool have_winograd() { return cpu::winograd_available(); }

// Fast kernel vs its reference: the same BF16 U and V, so only F32 rounding differs — the Ci-term sums of the GEMM
// (γ_Ci of Σ|U||V|), the output transform and the bias / accumulate adds (≤ 8 more terms): γ_(Ci+8) of the
// transform-domain magnitude Σ_pos |a_pos|·Σ_ci |U||V|, which the transforms make a few times A (Σ|w||x|). Bound
// 8·γ_(Ci+8)·A; measured ≤ 0.15·γ_(Ci+8)·A on these cases (≤ 1.1e-7).
double f32_bound(int Ci) {
  const double u = std::ldexp(1.0, -24), n = Ci + 8;
  return 8 * n * u / (1 - n * u);
}

// Against the naive convolution with the same BF16 weights and the F32 input: Winograd rounds U = G g Gᵀ and
// V = Bᵀ d B (not g and d) to BF16, relative error ≤ u' = 2⁻⁸ each, so each product U·V is off by ≤ 2u' + u'² of
// |U||V|, and the transform-domain magnitude is a few times A. The direct path rounds only x (≤ u'·A).
// Measured on these cases: worst |err|/A ≤ 1.05e-2 (1 input channel: the fewest terms to average the rounding),
// rel L2 ≤ 6.1e-3 (≤ 4.2e-3 from 3 input channels on), 2.2-4× the direct path's worst / 1.4-2.6× its rel L2 against
// the same reference. Bounds: 0.04 worst (4× the measured), rel L2 1e-2; against the F32 model (unrounded weights,
// which both paths share) Winograd's rel L2 within 3× the direct path's (measured ≤ 1.8×).
constexpr double kWinoScaledBound = 0.04;
constexpr double kWinoRelBound = 1e-2;

TEST(Winograd, MatchesReferencesOnOddShapes) {
  if (!have_winograd()) GTEST_SKIP() << "no AVX-512 BF16: conv2d_forward_w uses the direct path";
  for (const auto& c : cases())
    for (bool acc : {false, true}) {
      const Conv2dShape& s = c.s;
      const Data d = data_for(s, 101);
      const QuantizedWeight q = quantize_weight(d.w.data(), s.Co, k_of(s), WFormat::BF16, "test weight");
      ASSERT_TRUE(cpu::conv_w_uses_winograd(s, q.view())) << c.name;
      const Vec y = run_w(s, d, q, c.bias, acc);
      Vec yd;
      {
        ForceDirect fd;
        yd = run_w(s, d, q, c.bias, acc);
      }
      // 1. vs the reference of the same arithmetic.
      Vec yr = acc ? d.y0 : Vec(out_n(s), 123.f);
      cpu::conv2d_winograd_reference(yr.data(), d.x.data(), q.view(), c.bias ? d.b.data() : nullptr, s, acc);
      // 2. vs the F64 conv with the stored BF16 weights (F32 input); 3. vs the F32 model (unrounded weights).
      Vec r, A, r32, A32;
      reference(s, d.x, bf16_round(d.w), d, c.bias, acc, r, A);
      reference(s, d.x, d.w, d, c.bias, acc, r32, A32);
      const double e_ref = worst_scaled(y, yr, A), e_w = worst_scaled(y, r, A), e_d = worst_scaled(yd, r, A);
      const double l_w = rel_err(y, r), l_d = rel_err(yd, r), l32_w = rel_err(y, r32), l32_d = rel_err(yd, r32);
      std::printf("[ winograd ] %-30s%s |err|/A vs own ref %.1e (bound %.1e); vs bf16-weight conv: wino %.2e, "
                  "direct %.2e (bound %.2e); rel L2 vs bf16-weight conv: wino %.2e direct %.2e; vs f32: wino %.2e "
                  "direct %.2e\n",
                  c.name, acc ? " acc" : "    ", e_ref, f32_bound(s.Ci), e_w, e_d, kWinoScaledBound, l_w, l_d, l32_w,
                  l32_d);
      EXPECT_LE(e_ref, f32_bound(s.Ci)) << c.name << (acc ? " accumulate" : "");
      EXPECT_LE(e_w, kWinoScaledBound) << c.name << (acc ? " accumulate" : "");
      EXPECT_LE(l_w, kWinoRelBound) << c.name << (acc ? " accumulate" : "");
      // The direct path's error vs the F32 model is dominated by the weight rounding both paths share: Winograd's
      // extra rounding of U and V keeps it within 3× of it.
      EXPECT_LE(l32_w, 3 * l32_d) << c.name << (acc ? " accumulate" : "");
    }
}

// Every M element is one F32 sum over Ci in a fixed order and the transforms are element-wise: bitwise the same for
// any thread count and band size (budget 1 = one tile row per band).
TEST(Winograd, ThreadCountAndBandIndependence) {
  if (!have_winograd()) GTEST_SKIP() << "no AVX-512 BF16";
  for (bool up2 : {false, true}) {
    const Conv2dShape s = conv3(2, 33, up2 ? 9 : 19, up2 ? 17 : 37, 45, up2);
    const Data d = data_for(s, 201);
    const QuantizedWeight q = quantize_weight(d.w.data(), s.Co, k_of(s), WFormat::BF16);
    auto run = [&](int threads, size_t budget) {
      ThreadCount tc(threads);
      return run_w(s, d, q, true, true, budget);
    };
    const Vec y1 = run(1, cpu::kConvColBudget);
    EXPECT_GT(cpu::winograd_band_tile_rows(s, cpu::kConvColBudget), 1);
    EXPECT_EQ(cpu::winograd_band_tile_rows(s, 1), 1);
    EXPECT_TRUE(bitwise_equal(y1, run(2, cpu::kConvColBudget))) << "1 vs 2 threads, up2 " << up2;
    EXPECT_TRUE(bitwise_equal(y1, run(3, cpu::kConvColBudget))) << "1 vs 3 threads, up2 " << up2;
    EXPECT_TRUE(bitwise_equal(y1, run(2, 1))) << "one tile row per band, up2 " << up2;
    const size_t three_rows = cpu::winograd_scratch_bytes(s, 1) * 3 / sizeof(float);  // ≥ 3 rows' V + M (+U)
    EXPECT_GE(cpu::winograd_band_tile_rows(s, three_rows), 3);
    EXPECT_TRUE(bitwise_equal(y1, run(2, three_rows))) << "3+ tile rows per band, up2 " << up2;
  }
}

TEST(Winograd, DispatchAndForceDirect) {
  const Conv2dShape s = conv3(1, 8, 6, 7, 12, false);
  const Data d = data_for(s, 301);
  const QuantizedWeight q = quantize_weight(d.w.data(), s.Co, k_of(s), WFormat::BF16);
  EXPECT_TRUE(cpu::winograd_eligible(s, q.view()));
  // Not eligible: another format, stride 2, asymmetric padding, 1×1, 3×2.
  const QuantizedWeight q16 = quantize_weight(d.w.data(), s.Co, k_of(s), WFormat::F16);
  EXPECT_FALSE(cpu::winograd_eligible(s, q16.view()));
  Conv2dShape t = s;
  t.sh = t.sw = 2;
  EXPECT_FALSE(cpu::winograd_eligible(t, q.view()));
  t = s;
  t.pad_t = t.pad_l = 0;
  EXPECT_FALSE(cpu::winograd_eligible(t, q.view()));
  t = s;
  t.kh = t.kw = 1;
  t.pad_t = t.pad_b = t.pad_l = t.pad_r = 0;
  EXPECT_FALSE(cpu::winograd_eligible(t, quantize_weight(d.w.data(), s.Co, s.Ci, WFormat::BF16).view()));
  if (!have_winograd()) GTEST_SKIP() << "no AVX-512 BF16";
  EXPECT_TRUE(cpu::conv_w_uses_winograd(s, q.view()));
  Vec a(out_n(s)), b(out_n(s));
  cpu::conv2d_forward_w(a.data(), d.x.data(), q.view(), d.b.data(), s, false);
  cpu::conv2d_winograd_bf16(b.data(), d.x.data(), q.view(), d.b.data(), s, false, cpu::kConvColBudget);
  EXPECT_TRUE(bitwise_equal(a, b));
  {
    ForceDirect fd;
    EXPECT_FALSE(cpu::conv_w_uses_winograd(s, q.view()));
    cpu::conv2d_forward_w(b.data(), d.x.data(), q.view(), d.b.data(), s, false);
    EXPECT_FALSE(bitwise_equal(a, b));  // the im2row path rounds x, not V: different values
  }
  // The portable switch (no AVX-512 kernels) also means the direct path.
  const bool was = cpu::qgemm_force_portable(true);
  EXPECT_FALSE(cpu::conv_w_uses_winograd(s, q.view()));
  cpu::qgemm_force_portable(was);
  EXPECT_TRUE(cpu::conv_w_uses_winograd(s, q.view()));
}

// Scratch: U for the call plus V and M of one band, the band within the budget unless a single tile row is larger
// (and within ~4 MiB when that still leaves the GEMM ≥ 256 tiles).
TEST(Winograd, ScratchWithinBudget) {
  for (bool up2 : {false, true}) {
    const Conv2dShape s = conv3(1, 512, up2 ? 52 : 104, up2 ? 92 : 184, 512, up2);  // FLUX VAE level-2 sizes
    const size_t u_bytes = (size_t)(up2 ? 9 : 16) * s.Co * s.Ci * 2;
    EXPECT_LE(cpu::winograd_scratch_bytes(s, cpu::kConvColBudget), u_bytes + cpu::kConvColBudget * sizeof(float));
    const int rows = cpu::winograd_band_tile_rows(s, cpu::kConvColBudget);
    EXPECT_GE(rows * 96, 256) << up2;  // 92 (or 2·46) tile columns padded to 96
    EXPECT_EQ(cpu::winograd_band_tile_rows(s, 1), 1);
    EXPECT_LE(cpu::winograd_scratch_bytes(s, 1), u_bytes + (size_t)(up2 ? 9 : 16) * 96 * (256 * 4 + 512 * 4)) << up2;
  }
}

// A small VAE (the real structure, reduced width) decoded with bf16 conv weights through Winograd and through the
// direct path, against the F32 model: PSNR (peak = the F32 image's range, random weights).
TEST(Winograd, SmallVaeDecodePsnr) {
  if (!have_winograd()) GTEST_SKIP() << "no AVX-512 BF16";
  VaeConfig c;
  c.ch = 32;
  c.ch_mult = {1, 2, 2};
  c.enc_blocks = 1;
  c.dec_blocks = 2;
  c.z_channels = 4;
  Vae f32(c, cpu_backend());
  f32.init_random(5);
  const int s = c.stride(), h = 10, w = 14;
  const Vec lat = randn((size_t)4 * h * w, 61);
  Vec ref((size_t)3 * h * s * w * s), wino(ref.size()), direct(ref.size());
  f32.decode(ref.data(), lat.data(), 1, h, w);
  auto bf = f32.converted(WFormat::BF16);
  bf->decode(wino.data(), lat.data(), 1, h, w);
  {
    ForceDirect fd;
    bf->decode(direct.data(), lat.data(), 1, h, w);
  }
  auto psnr = [&](const Vec& a) {
    double mse = 0, lo = 1e30, hi = -1e30;
    for (size_t i = 0; i < ref.size(); ++i) {
      mse += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
      lo = std::min(lo, (double)ref[i]);
      hi = std::max(hi, (double)ref[i]);
    }
    return 10 * std::log10((hi - lo) * (hi - lo) / std::max(mse / (double)ref.size(), 1e-300));
  };
  const double pw = psnr(wino), pd = psnr(direct);
  std::printf("[ winograd ] small VAE bf16 decode vs f32: Winograd PSNR %.1f dB (rel L2 %.2e), direct %.1f dB (rel L2 "
              "%.2e)\n", pw, rel_err(wino, ref), pd, rel_err(direct, ref));
  EXPECT_GE(pw, 35.0);            // VaeBf16.SmallVaeDecodeEncodePsnr's bf16 floor
  EXPECT_GE(pw, pd - 6.0);        // at most a factor 2 in RMS error over the direct path
  EXPECT_LE(rel_err(wino, ref), 2e-2);
}

}  // namespace
