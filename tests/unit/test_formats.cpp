// Low-precision weight formats (ops/weights.h, ops/cpu/qgemm_cpu.h): quantise/dequantise bounds, the kernels
// (AVX-512 and portable) against the double reference on odd shapes, exact in-kernel weight conversion of every
// code, thread-count independence, and the F32 path being the existing SGEMM path bit for bit.
#include "core/dtype.h"
#include "core/error.h"
#include "ops/backend.h"
#include "ops/cpu/qgemm_cpu.h"
#include "ops/reference.h"
#include "ops/weights.h"
#include "op_test_util.h"
#include <gtest/gtest.h>
#include <cmath>
#include <cstring>

namespace oboro {
namespace {

using test::randn;
using test::rel_err;
using test::Vec;

const WFormat kLowFormats[] = {WFormat::BF16, WFormat::F16, WFormat::F8, WFormat::Q8_0};

struct Portable {
  bool saved;
  explicit Portable(bool on) : saved(cpu::qgemm_force_portable(on)) {}
  ~Portable() { cpu::qgemm_force_portable(saved); }
};

Vec run_kernel(const WeightView& w, const Vec& x, const float* b, int M, int K, int N) {
  Vec y((size_t)M * N, -7.f);
  cpu_backend().linear_forward_w(y.data(), x.data(), w, b, M, K, N);
  return y;
}

TEST(Formats, Names) {
  for (WFormat f : {WFormat::F32, WFormat::BF16, WFormat::F16, WFormat::F8, WFormat::Q8_0})
    EXPECT_EQ(wformat_from_name(wformat_name(f)), f);
  EXPECT_EQ(wformat_from_name("F8_E4M3"), WFormat::F8);
  EXPECT_EQ(wformat_from_name("Q8_0"), WFormat::Q8_0);
  try {
    parse_wformat("q4_k", "--type");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("q4_k"), std::string::npos) << m;
    EXPECT_NE(m.find("f32, bf16, f16, f8, q8_0"), std::string::npos) << m;
  }
}

// |w − deq(q(w))| within half a quantisation step of each format.
TEST(Formats, QuantiseRoundTripBounds) {
  const int N = 37, K = 96;
  Vec w = randn((size_t)N * K, 11, 0.05f);
  w[5] = 0.f;
  w[7] = 3.f;  // an outlier
  for (WFormat f : kLowFormats) {
    QuantizedWeight q = quantize_weight(w.data(), N, K, f);
    EXPECT_EQ(q.data.dtype(), wformat_dtype(f));
    Vec d((size_t)N * K);
    dequantize_weight(q.view(), d.data());
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        const size_t i = (size_t)n * K + k;
        const double a = std::fabs((double)w[i]), e = std::fabs((double)w[i] - d[i]);
        double bound = 0;
        switch (f) {
          case WFormat::BF16: bound = a * std::ldexp(1.0, -8); break;   // half ulp: 2^-8 relative
          case WFormat::F16: bound = a * std::ldexp(1.0, -11) + std::ldexp(1.0, -25); break;
          case WFormat::F8: {
            const double s = q.scale.data<float>()[0];
            bound = std::max(a * std::ldexp(1.0, -4), s * std::ldexp(1.0, -10));  // normals / subnormals
            break;
          }
          case WFormat::Q8_0: {
            const double dq = q.scale.data<float>()[(size_t)n * (K / 32) + k / 32];
            bound = dq * 0.5 * (1 + 1e-6);
            break;
          }
          default: break;
        }
        ASSERT_LE(e, bound * (1 + 1e-6) + 1e-30) << wformat_name(f) << " n=" << n << " k=" << k << " w=" << w[i];
      }
    // q8_0: a block's largest magnitude is exactly ±127·d
    if (f == WFormat::Q8_0) {
      EXPECT_EQ(q.data.data<int8_t>()[7], 127);
      EXPECT_FLOAT_EQ(q.scale.data<float>()[0] * 127.f, 3.f);
      EXPECT_EQ(d[5], 0.f);
    }
    if (f == WFormat::F8) { EXPECT_EQ(d[7], 3.f); }  // max|W| maps to 448 exactly
  }
}

TEST(Formats, Q8NeedsKMultipleOf32) {
  Vec w(3 * 33, 1.f);
  try {
    quantize_weight(w.data(), 3, 33, WFormat::Q8_0, "layers.0.w");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("layers.0.w"), std::string::npos) << m;
    EXPECT_NE(m.find("multiple of 32"), std::string::npos) << m;
  }
  // a hand-made view with a bad K is refused by the kernel, not read out of bounds
  std::vector<int8_t> q(3 * 33);
  std::vector<float> s(3);
  WeightView v{WFormat::Q8_0, q.data(), s.data(), 3, 33};
  Vec x(33, 1.f), y(3);
  EXPECT_THROW(cpu_backend().linear_forward_w(y.data(), x.data(), v, nullptr, 1, 33, 3), Error);
}

// Kernels (fast and portable) against the double reference on shapes that are not multiples of the tiles.
TEST(Formats, KernelsMatchReference) {
  struct S { int M, K, N; };
  const S shapes[] = {{1, 32, 1}, {7, 64, 33}, {13, 96, 70}, {250, 160, 45}, {241, 64, 97}, {5, 37, 19}, {12, 1, 31}};
  for (bool portable : {false, true}) {
    if (!portable && !cpu::qgemm_avx512_available()) continue;
    Portable guard(portable);
    for (WFormat f : kLowFormats)
      for (const S& s : shapes) {
        if (f == WFormat::Q8_0 && s.K % 32) continue;
        Vec w = randn((size_t)s.N * s.K, 100 + s.K, 0.3f), x = randn((size_t)s.M * s.K, 200 + s.M), b = randn(s.N, 3);
        QuantizedWeight q = quantize_weight(w.data(), s.N, s.K, f);
        for (bool bias : {false, true}) {
          Vec r((size_t)s.M * s.N);
          ref::linear_w(r.data(), x.data(), q.view(), bias ? b.data() : nullptr, s.M, s.K, s.N);
          Vec y = run_kernel(q.view(), x, bias ? b.data() : nullptr, s.M, s.K, s.N);
          EXPECT_LT(rel_err(y, r), 1e-5) << wformat_name(f) << (portable ? " portable" : " avx512") << " M=" << s.M
                                         << " K=" << s.K << " N=" << s.N << " bias=" << bias;
          double worst = 0;  // elementwise: F32 accumulation error of a K-term sum
          for (size_t i = 0; i < r.size(); ++i) worst = std::max(worst, std::fabs((double)y[i] - r[i]));
          EXPECT_LT(worst, 1e-5 * std::sqrt((double)s.K) * 4) << wformat_name(f) << " M=" << s.M;
        }
      }
  }
}

// AVX-512 and portable paths compute the same thing (q8_0: same integer dots and the same F32 operations).
TEST(Formats, FastAndPortableAgree) {
  if (!cpu::qgemm_avx512_available()) GTEST_SKIP() << "no AVX-512 BF16/VNNI on this CPU";
  const int M = 61, K = 128, N = 45;
  Vec w = randn((size_t)N * K, 5, 0.2f), x = randn((size_t)M * K, 6);
  for (WFormat f : kLowFormats) {
    QuantizedWeight q = quantize_weight(w.data(), N, K, f);
    Vec a = run_kernel(q.view(), x, nullptr, M, K, N), p;
    {
      Portable g(true);
      p = run_kernel(q.view(), x, nullptr, M, K, N);
    }
    if (f == WFormat::Q8_0) EXPECT_TRUE(test::bitwise_equal(a, p)) << "q8_0 fast vs portable";
    else EXPECT_LT(rel_err(a, p), 1e-6) << wformat_name(f);
  }
}

// The kernels read every stored code exactly: with x = e_0 (1 is exact in BF16), y[n] = scale · W[n][0].
TEST(Formats, InKernelConversionExactForEveryCode) {
  for (bool portable : {false, true}) {
    if (!portable && !cpu::qgemm_avx512_available()) continue;
    Portable guard(portable);
    {  // F8 E4M3: all 256 codes, NaN (0x7f, 0xff) stays NaN
      const int N = 256, K = 2;
      std::vector<uint8_t> d((size_t)N * K, 0);
      for (int c = 0; c < 256; ++c) d[(size_t)c * K] = (uint8_t)c;
      const float s = 0.375f;
      WeightView v{WFormat::F8, d.data(), &s, N, K};
      Vec x = {1.f, 0.f};
      Vec y = run_kernel(v, x, nullptr, 1, K, N);
      for (int c = 0; c < 256; ++c) {
        float e = f8e4m3_to_f32((uint8_t)c);
        if (std::isnan(e)) EXPECT_TRUE(std::isnan(y[c])) << "code " << c;
        else EXPECT_EQ(y[c], s * e) << "code " << c;
      }
    }
    for (WFormat f : {WFormat::F16, WFormat::BF16}) {  // every finite 16-bit pattern
      const int N = 65536, K = 1;
      std::vector<uint16_t> d(N);
      for (int c = 0; c < N; ++c) d[c] = (uint16_t)c;
      WeightView v{f, d.data(), nullptr, N, K};
      Vec x = {1.f};
      Vec y = run_kernel(v, x, nullptr, 1, K, N);
      for (int c = 0; c < N; ++c) {
        float e = f == WFormat::F16 ? f16_to_f32((uint16_t)c) : bf16_to_f32((uint16_t)c);
        if (std::isnan(e)) { ASSERT_TRUE(std::isnan(y[c])) << wformat_name(f) << " code " << c; continue; }
        // the AVX-512 BF16 dot product flushes BF16 subnormals (as vdpbf16ps specifies); everything else is exact
        if (f == WFormat::BF16 && !portable && std::fpclassify(e) == FP_SUBNORMAL) continue;
        ASSERT_EQ(y[c], e) << wformat_name(f) << " code " << c;
      }
    }
  }
}

// Activations are rounded to BF16 to nearest, ties to even, inside the kernels (AVX-512: vcvtne2ps2bf16): with a
// weight of exactly 1, y = bf16(x) for ties, values just above/below a tie, K odd and even (the zero pad).
TEST(Formats, ActivationRoundingToBf16IsNearestEven) {
  const uint32_t bits[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf818000u, 0x4049ffffu,
                           0x7f7fffffu /* rounds up to inf */, 0x00000000u, 0x80000000u, 0x3f800000u};
  const int M = (int)(sizeof(bits) / sizeof(bits[0]));
  for (bool portable : {false, true}) {
    if (!portable && !cpu::qgemm_avx512_available()) continue;
    Portable guard(portable);
    for (WFormat f : {WFormat::BF16}) {  // f8 shares the activation path (its scale would add a rounding)
      for (int K : {1, 2, 33}) {
        Vec x((size_t)M * K, 0.f);
        for (int m = 0; m < M; ++m) std::memcpy(&x[(size_t)m * K + (K - 1)], &bits[m], 4);  // last column
        std::vector<float> wf((size_t)K, 0.f);
        wf[K - 1] = 1.f;
        QuantizedWeight q = quantize_weight(wf.data(), 1, K, f);
        Vec y = run_kernel(q.view(), x, nullptr, M, K, 1);
        for (int m = 0; m < M; ++m) {
          float xv;
          std::memcpy(&xv, &bits[m], 4);
          EXPECT_EQ(y[m], bf16_to_f32(f32_to_bf16(xv)))
              << wformat_name(f) << (portable ? " portable" : " avx512") << " K=" << K << " x bits " << std::hex << bits[m];
        }
      }
    }
  }
}

TEST(Formats, ThreadCountIndependent) {
  const int M = 300, K = 96, N = 70;
  Vec w = randn((size_t)N * K, 8, 0.2f), x = randn((size_t)M * K, 9), b = randn(N, 10);
  for (WFormat f : kLowFormats) {
    QuantizedWeight q = quantize_weight(w.data(), N, K, f);
    Vec y1, y2, y3;
    { test::ThreadCount t(1); y1 = run_kernel(q.view(), x, b.data(), M, K, N); }
    { test::ThreadCount t(2); y2 = run_kernel(q.view(), x, b.data(), M, K, N); }
    { test::ThreadCount t(3); y3 = run_kernel(q.view(), x, b.data(), M, K, N); }
    EXPECT_TRUE(test::bitwise_equal(y1, y2)) << wformat_name(f);
    EXPECT_TRUE(test::bitwise_equal(y1, y3)) << wformat_name(f);
  }
}

TEST(Formats, F32ViewIsTheSgemmPath) {
  const int M = 33, K = 70, N = 29;
  Vec w = randn((size_t)N * K, 1), x = randn((size_t)M * K, 2), b = randn(N, 3);
  Vec a((size_t)M * N), c((size_t)M * N);
  cpu_backend().linear_forward(a.data(), x.data(), w.data(), b.data(), M, K, N);
  cpu_backend().linear_forward_w(c.data(), x.data(), f32_view(w.data(), N, K), b.data(), M, K, N);
  EXPECT_TRUE(test::bitwise_equal(a, c));
}

TEST(Formats, RowSlicesOfAFusedWeight) {
  const int D = 64, M = 9;
  Vec w = randn((size_t)3 * D * D, 4, 0.2f), x = randn((size_t)M * D, 5);
  for (WFormat f : kLowFormats) {
    QuantizedWeight q = quantize_weight(w.data(), 3 * D, D, f);
    Vec full = run_kernel(q.view(), x, nullptr, M, D, 3 * D);
    for (int part = 0; part < 3; ++part) {
      Vec y = run_kernel(q.view().rows(part * D, D), x, nullptr, M, D, D);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < D; ++n)
          ASSERT_EQ(y[(size_t)m * D + n], full[(size_t)m * 3 * D + part * D + n]) << wformat_name(f);
    }
  }
}

}  // namespace
}  // namespace oboro
