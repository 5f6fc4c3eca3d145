// The BF16 attention forward (AttnPrecision::BF16, cpu::attention_forward_bf16): BF16 Q·Kᵀ and P·V with F32
// accumulation and F32 softmax statistics, used by the DiT for inference with low-precision weights.
//
// Error bounds (u = 2^-9 ≈ 1.95e-3, the unit roundoff of BF16's 8-bit significand with nearest-even rounding):
//   - against ref::attention (double) run on the same BF16-rounded inputs (Q·scale, K, V rounded the way the kernel
//     rounds them): what remains is the rounding of the probabilities P to BF16 (plus F32 accumulation and the exp
//     polynomial, ~1e-7). Each weight p_j gets a relative error δ_j, |δ_j| ≤ u, and the row is normalised by the sum
//     of the rounded weights, so o_i changes by Σ_j w_j (δ_j − δ̄)(v_j − o_i): at most 2u·Σ_j w_j|v_j − o_i|, and
//     for independent δ_j about u/√3 ≈ 1.1e-3 of the spread of V (the rms of uniform rounding errors). With random
//     V the spread and |o_i| are of the same order, so we bound the relative (Frobenius) error by 2u ≈ 3.9e-3;
//     measured values are ~1e-3. The lse differs by log(Σ p̃ / Σ p), |Δ| ≤ u.
//   - against the F32 kernel on the unrounded inputs: the rounding of Q and K (score errors of about u·|q||k|/√3)
//     and of V (about u/√3 relative) add to the above: ~2.5e-3 expected, bounded by 1e-2.
//   - the portable scalar path against the vdpbf16ps kernel: the same arithmetic in the same order (pairs odd then
//     even, exp16's operations, the same rounding), except for the order in which a row's probabilities are
//     summed; bounded by 1e-5.
// Thread-count independence is bitwise.
#include "core/threads.h"
#include "models/dit.h"
#include "ops/backend.h"
#include "ops/cpu/attention_cpu.h"
#include "ops/profiling_backend.h"
#include "ops/reference.h"
#include "core/dtype.h"
#include "attention_test_cases.h"
#include "op_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

using namespace oboro;
using namespace oboro::test;

namespace {

constexpr double kU = 1.0 / 512;           // BF16 unit roundoff (2^-9)
constexpr double kTolRounded = 2 * kU;     // vs ref on the rounded inputs (see the top of the file)
constexpr double kTolF32 = 1e-2;           // vs the F32 kernel on the original inputs
constexpr double kTolPortable = 1e-5;      // portable scalar path vs the AVX-512 kernel
const float kNaN = std::numeric_limits<float>::quiet_NaN();

using attn::Case;
using attn::Data;
using attn::make;

enum class Path { Bf16, Bf16Portable, F32 };

void run(const Data& d, Vec& o, Vec& lse, Path p) {
  o.assign(d.n(), kNaN);
  lse.assign((size_t)d.c.B * d.c.H * d.c.S, kNaN);
  const auto f = p == Path::Bf16 ? cpu::attention_forward_bf16
                 : p == Path::Bf16Portable ? cpu::attention_forward_bf16_portable
                                           : cpu::attention_forward_tiled;
  f(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), d.kv(), d.c.B, d.c.S, d.c.H, d.c.dh, d.scale(), d.rb());
}

float round_bf16(float x) {
  if (std::fabs(x) < std::numeric_limits<float>::min()) x = 0.f;  // the kernel flushes subnormals (vdpbf16ps does)
  return bf16_to_f32(f32_to_bf16(x));
}

// ref::attention (double) on the inputs the BF16 kernel sees: Q·scale, K, V rounded to BF16 (scale 1 in the ref).
void ref_rounded(const Data& d, Vec& o) {
  Vec qr(d.q), kr(d.k), vr(d.v);
  for (auto& x : qr) x = round_bf16(x * d.scale());
  for (auto& x : kr) x = round_bf16(x);
  for (auto& x : vr) x = round_bf16(x);
  o.assign(d.n(), 0.f);
  ref::attention(o.data(), qr.data(), kr.data(), vr.data(), d.kv(), d.c.B, d.c.S, d.c.H, d.c.dh, 1.f, d.rb());
}

// Reference lse (double) of the rounded inputs: log Σ_j exp(q̃·k̃ + rel) over valid keys; −inf when none.
Vec ref_lse_rounded(const Data& d) {
  const Case& c = d.c;
  const int D = c.H * c.dh;
  Vec out((size_t)c.B * c.H * c.S);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int i = 0; i < c.S; ++i) {
        std::vector<double> s;
        for (int j = 0; j < c.S; ++j) {
          if (d.kv() && d.valid[(size_t)b * c.S + j] == 0.f) continue;
          double acc = 0;
          for (int e = 0; e < c.dh; ++e) {
            const size_t qi = ((size_t)b * c.S + i) * D + (size_t)h * c.dh + e;
            const size_t kj = ((size_t)b * c.S + j) * D + (size_t)h * c.dh + e;
            acc += (double)round_bf16(d.q[qi] * d.scale()) * (double)round_bf16(d.k[kj]);
          }
          if (d.rb()) acc += d.rel[(size_t)h * (2 * c.S - 1) + (j - i + c.S - 1)];
          s.push_back(acc);
        }
        double m = -INFINITY, sum = 0;
        for (double x : s) m = std::max(m, x);
        for (double x : s) sum += std::exp(x - m);
        out[((size_t)b * c.H + h) * c.S + i] = s.empty() ? -INFINITY : (float)(m + std::log(sum));
      }
  return out;
}

double lse_diff(const Vec& a, const Vec& b) {  // max |Δ| / max(1, |b|); −inf must match −inf
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i]) || std::isnan(a[i])) {
      if (!(a[i] == b[i])) return INFINITY;
      continue;
    }
    m = std::max(m, std::fabs((double)a[i] - b[i]) / std::max(1.0, std::fabs((double)b[i])));
  }
  return m;
}

std::string where(const Case& c) {
  return "B=" + std::to_string(c.B) + " S=" + std::to_string(c.S) + " H=" + std::to_string(c.H) +
         " dh=" + std::to_string(c.dh) + " mask=" + std::to_string(c.mask) + " rel=" + std::to_string(c.rel);
}

// Random shapes: S not a multiple of the 32-query / 64-key tiles, odd and non-multiple-of-16 head dims (tails of
// the pairs and of the V column vectors), batch > 1, every mask kind, with and without the relative bias.
TEST(AttentionBf16, MatchesReferenceOnRoundedInputs) {
  std::printf("attention bf16 path: %s\n", cpu::attention_bf16_available() ? "AVX-512 BF16 (vdpbf16ps)" : "portable");
  const int dhs[] = {1, 3, 4, 7, 24, 33, 64, 96, 130};
  const int Ss[] = {1, 5, 33, 64, 97, 131, 200};
  double worst_ref = 0, worst_f32 = 0, worst_port = 0, worst_lse = 0;
  int n = 0;
  for (int dh : dhs)
    for (int S : Ss)
      for (int mask : {0, 1, 2, 3})
        for (bool rel : {false, true}) {
          if ((n++ % 4) != 0 && !(S == 131 && mask == 2)) continue;  // a deterministic quarter + the tile masks
          const Case c{2, S, dh >= 96 ? 2 : 3, dh, mask, rel};
          const Data d = make(c, 17000 + 31 * S + dh + 5 * mask + rel);
          Vec o, lse, op, lsep, of, lsef, oref;
          run(d, o, lse, Path::Bf16);
          run(d, op, lsep, Path::Bf16Portable);
          run(d, of, lsef, Path::F32);
          ref_rounded(d, oref);
          const Vec lref = ref_lse_rounded(d);
          const double er = rel_err(o, oref), ef = rel_err(o, of), ep = rel_err(op, o), el = lse_diff(lse, lref);
          EXPECT_LE(er, kTolRounded) << "bf16 vs ref on rounded inputs " << where(c);
          EXPECT_LE(rel_err(op, oref), kTolRounded) << "portable vs ref on rounded inputs " << where(c);
          EXPECT_LE(ef, kTolF32) << "bf16 vs F32 kernel " << where(c);
          EXPECT_LE(ep, kTolPortable) << "portable vs AVX-512 bf16 " << where(c);
          EXPECT_LE(el, kU) << "lse vs reference " << where(c);
          EXPECT_LE(lse_diff(lsep, lse), kTolPortable) << "lse portable vs AVX-512 " << where(c);
          for (size_t i = 0; i < o.size(); ++i) ASSERT_FALSE(std::isnan(o[i])) << where(c);
          worst_ref = std::max(worst_ref, er);
          worst_f32 = std::max(worst_f32, ef);
          worst_port = std::max(worst_port, ep);
          worst_lse = std::max(worst_lse, el);
        }
  std::printf("worst rel err: vs ref(rounded) %.3g, vs F32 kernel %.3g, portable vs fast %.3g; lse %.3g\n", worst_ref,
              worst_f32, worst_port, worst_lse);
}

// The DiT's head widths at a realistic length (S = 301, batch 2, a masked text tail in batch 1).
TEST(AttentionBf16, DitHeadWidths) {
  for (int dh : {32, 64, 96, 192}) {
    const Case c{2, 301, 2, dh, 1, false};
    const Data d = make(c, 19000 + dh);
    Vec o, lse, of, lsef, oref;
    run(d, o, lse, Path::Bf16);
    run(d, of, lsef, Path::F32);
    ref_rounded(d, oref);
    const double er = rel_err(o, oref), ef = rel_err(o, of);
    std::printf("  dh %3d: rel err vs ref(rounded) %.3g, vs F32 kernel %.3g\n", dh, er, ef);
    EXPECT_LE(er, kTolRounded) << where(c);
    EXPECT_LE(ef, kTolF32) << where(c);
  }
}

TEST(AttentionBf16, IndependentOfThreadCount) {
  const Case c{2, 150, 3, 40, 1, true};
  const Data d = make(c, 19100);
  for (Path p : {Path::Bf16, Path::Bf16Portable}) {
    Vec o1, l1, o2, l2;
    {
      ThreadCount tc(1);
      run(d, o1, l1, p);
    }
    {
      ThreadCount tc(2);
      run(d, o2, l2, p);
    }
    EXPECT_TRUE(bitwise_equal(o1, o2)) << (p == Path::Bf16 ? "avx512" : "portable");
    EXPECT_TRUE(bitwise_equal(l1, l2)) << (p == Path::Bf16 ? "avx512" : "portable");
  }
}

// attention_force_generic(true) routes the BF16 forward to its portable path.
TEST(AttentionBf16, ForceGenericRoutesToPortable) {
  const bool was = cpu::attention_force_generic(true);
  const Case c{1, 70, 2, 24, 0, false};
  const Data d = make(c, 19200);
  Vec o, lse, op, lsep;
  run(d, o, lse, Path::Bf16);
  run(d, op, lsep, Path::Bf16Portable);
  EXPECT_TRUE(bitwise_equal(o, op));
  cpu::attention_force_generic(was);
}

// The backend seam: the default precision is the F32 kernel (bitwise), BF16 is the BF16 kernel (bitwise), and the
// profiling decorator forwards the precision.
TEST(AttentionBf16, BackendSeamPrecision) {
  const Case c{2, 77, 2, 32, 1, false};
  const Data d = make(c, 19300);
  Vec of, lf, ob, lb;
  run(d, of, lf, Path::F32);
  run(d, ob, lb, Path::Bf16);
  ASSERT_FALSE(bitwise_equal(of, ob));
  ProfilingBackend prof(cpu_backend());
  for (Backend* be : {&cpu_backend(), static_cast<Backend*>(&prof)}) {
    Vec o(d.n()), lse((size_t)c.B * c.H * c.S);
    be->attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), d.kv(), c.B, c.S, c.H, c.dh,
                          d.scale());
    EXPECT_TRUE(bitwise_equal(o, of)) << be->name() << " default";
    EXPECT_TRUE(bitwise_equal(lse, lf)) << be->name() << " default";
    be->attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), d.kv(), c.B, c.S, c.H, c.dh,
                          d.scale(), nullptr, AttnPrecision::F32);
    EXPECT_TRUE(bitwise_equal(o, of)) << be->name() << " F32";
    be->attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), d.kv(), c.B, c.S, c.H, c.dh,
                          d.scale(), nullptr, AttnPrecision::BF16);
    EXPECT_TRUE(bitwise_equal(o, ob)) << be->name() << " BF16";
    EXPECT_TRUE(bitwise_equal(lse, lb)) << be->name() << " BF16";
  }
}

DiTConfig tiny_dit() {
  DiTConfig c = DiTConfig::preset("tiny", 64);
  c.latent_channels = 4;
  return c;
}

Vec dit_velocity(DiT& m, int B, int L, int h, int w) {
  const DiTConfig& c = m.config();
  Vec x = randn((size_t)B * c.latent_channels * h * w, 1), txt = randn((size_t)B * L * c.text_dim, 2);
  Vec t(B, 0.4f), mask((size_t)B * L, 1.f), v(x.size());
  mask[(size_t)B * L - 1] = 0.f;  // a masked text key in the last batch row
  m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
  return v;
}

// Which precision the DiT asks for: BF16 only for inference with low-precision weights.
TEST(AttentionBf16, DiTPrecisionRule) {
  DiT f32(tiny_dit(), cpu_backend());
  f32.init_random_all(3);
  EXPECT_EQ(f32.attention_precision(false), AttnPrecision::F32);
  EXPECT_EQ(f32.attention_precision(true), AttnPrecision::F32);
  for (WFormat f : {WFormat::BF16, WFormat::F16, WFormat::F8, WFormat::Q8_0}) {
    auto m = f32.converted(f);
    EXPECT_EQ(m->attention_precision(false), AttnPrecision::BF16) << wformat_name(f);
    EXPECT_EQ(m->attention_precision(true), AttnPrecision::F32) << wformat_name(f);
  }
}

// A DiT forward with bf16 weights (so BF16 attention) against (a) the same weights widened to F32 (F32 attention):
// the attention's own contribution, and (b) the F32 model: weights and attention together. Random weights in every
// tensor (init_random_all) are a worst case for the tiny model (see FormatModels.DiTVelocityErrorPerFormat).
TEST(AttentionBf16, DiTVelocityCloseToF32) {
  DiT ref(tiny_dit(), cpu_backend());
  ref.init_random_all(3);
  auto bf = ref.converted(WFormat::BF16);
  auto deq = bf->converted(WFormat::F32);  // the bf16 weights, exactly, as an F32 model
  ASSERT_EQ(bf->attention_precision(false), AttnPrecision::BF16);
  ASSERT_EQ(deq->attention_precision(false), AttnPrecision::F32);
  const int B = 2, L = 5, h = 8, w = 12;
  const Vec v_ref = dit_velocity(ref, B, L, h, w), v_bf = dit_velocity(*bf, B, L, h, w),
            v_deq = dit_velocity(*deq, B, L, h, w);
  const double attn_only = rel_err(v_bf, v_deq), total = rel_err(v_bf, v_ref), weights_only = rel_err(v_deq, v_ref);
  std::printf("  DiT velocity rel err: BF16 attention alone %.3e; bf16 weights alone %.3e; both %.3e\n", attn_only,
              weights_only, total);
  EXPECT_GT(attn_only, 0.0) << "BF16 attention identical to F32 hides a bug";
  EXPECT_LT(attn_only, 6e-3);  // measured 3.6e-3 (QK LayerNorm keeps the scores large, so Q/K rounding shows)
  EXPECT_LT(total, 2e-2);  // FormatModels.DiTVelocityErrorPerFormat's bf16 bound (random weights everywhere)
}

}  // namespace
