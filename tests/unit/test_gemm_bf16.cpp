// BF16 training GEMM (ops/cpu/gemm_bf16_cpu.h) and the backend's MatmulPrecision seam: the AVX-512 and portable
// kernels against the F64 reference of the same rounding on odd shapes (every transpose, K across the K blocks,
// beta 0 / 1 / other), thread-count independence, the three Linear GEMMs in BF16 against their rounded reference,
// and the scope restoring F32 (bitwise the SGEMM path again).
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16_cpu.h"
#include "ops/cpu/qgemm_cpu.h"
#include "op_test_util.h"
#include <gtest/gtest.h>

namespace oboro {
namespace {

using test::randn;
using test::rel_err;
using test::Vec;

struct Portable {
  bool saved;
  explicit Portable(bool on) : saved(cpu::qgemm_force_portable(on)) {}
  ~Portable() { cpu::qgemm_force_portable(saved); }
};

struct Case {
  int M, N, K;
};
// Odd edges everywhere; K = 1101 spans three K blocks (512 pairs each) with an odd tail; N = 70 a partial panel.
const Case kCases[] = {{1, 1, 1}, {13, 33, 7}, {37, 70, 66}, {251, 45, 1101}, {25, 130, 31}};

Vec run(bool portable, bool ta, bool tb, const Case& c, float beta, const Vec& a, const Vec& b, const Vec& c0,
        int pad, bool reference = false) {
  const int lda = (ta ? c.M : c.K) + pad, ldb = (tb ? c.K : c.N) + pad, ldc = c.N + pad;
  Vec C(c0);
  C.resize((size_t)c.M * ldc, 0.f);
  Portable p(portable);
  if (reference) cpu::gemm_bf16_reference(ta, tb, c.M, c.N, c.K, a.data(), lda, b.data(), ldb, beta, C.data(), ldc);
  else cpu::gemm_bf16(ta, tb, c.M, c.N, c.K, a.data(), lda, b.data(), ldb, beta, C.data(), ldc);
  return C;
}

TEST(GemmBf16, MatchesTheRoundedReference) {
  const int pad = 3;  // leading dimensions larger than the rows
  for (const Case& c : kCases)
    for (int t = 0; t < 4; ++t)
      for (float beta : {0.f, 1.f, 0.5f}) {
        const bool ta = t & 1, tb = t & 2;
        const size_t na = (size_t)(ta ? c.K : c.M) * ((ta ? c.M : c.K) + pad);
        const size_t nb = (size_t)(tb ? c.N : c.K) * ((tb ? c.K : c.N) + pad);
        Vec a = randn(na, 1000 + c.M), b = randn(nb, 2000 + c.N), c0 = randn((size_t)c.M * (c.N + pad), 3000 + c.K);
        const Vec ref = run(false, ta, tb, c, beta, a, b, c0, pad, true);
        for (bool portable : {false, true}) {
          if (!portable && !cpu::qgemm_avx512_available()) continue;
          const Vec got = run(portable, ta, tb, c, beta, a, b, c0, pad);
          EXPECT_LE(rel_err(got, ref), 2e-6) << c.M << "x" << c.N << "x" << c.K << " ta=" << ta << " tb=" << tb
                                             << " beta=" << beta << (portable ? " portable" : " avx512");
          // Entries beyond N in each row (the leading-dimension pad) are never written.
          for (int m = 0; m < c.M; ++m)
            for (int j = c.N; j < c.N + pad; ++j)
              ASSERT_EQ(got[(size_t)m * (c.N + pad) + j], c0[(size_t)m * (c.N + pad) + j]);
        }
      }
}

// The GEMM really rounds its operands: vs the F32 product of the unrounded values the error is BF16-sized
// (about 2^-9 relative per operand), far above F32 rounding.
TEST(GemmBf16, RoundsOperandsToBf16) {
  const int M = 64, N = 48, K = 256;
  Vec a = randn((size_t)M * K, 5), b = randn((size_t)N * K, 6), c((size_t)M * N), f32((size_t)M * N);
  cpu::gemm_bf16(false, true, M, N, K, a.data(), K, b.data(), K, 0.f, c.data(), N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += (double)a[(size_t)m * K + k] * b[(size_t)n * K + k];
      f32[(size_t)m * N + n] = (float)s;
    }
  const double e = rel_err(c, f32);
  EXPECT_GT(e, 1e-4);
  EXPECT_LT(e, 1e-2);
}

TEST(GemmBf16, SameBitsForAnyThreadCount) {
  const int M = 300, N = 200, K = 1500;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    Vec a = randn((size_t)M * K, 7), b = randn((size_t)N * K, 8);
    Vec base;
    for (int threads : {1, 2, 3}) {
      test::ThreadCount tc(threads);
      Vec c((size_t)M * N, 0.25f);
      cpu::gemm_bf16(ta, tb, M, N, K, a.data(), ta ? M : K, b.data(), tb ? K : N, 1.f, c.data(), N);
      if (base.empty()) base = c;
      else EXPECT_TRUE(test::bitwise_equal(c, base)) << threads << " threads, ta=" << ta << " tb=" << tb;
    }
  }
}

// The backend's Linear in BF16: y = bf16(x)·bf16(w)ᵀ + b; dx += bf16(dy)·bf16(w); dw += bf16(dy)ᵀ·bf16(x); db in F32.
// Leaving the scope restores the F32 SGEMM path bit for bit.
TEST(GemmBf16, BackendLinearInBf16AndBack) {
  Backend& be = cpu_backend();
  const int M = 45, K = 70, N = 38;
  Vec x = randn((size_t)M * K, 11), w = randn((size_t)N * K, 12, 0.2f), b = randn(N, 13), dy = randn((size_t)M * N, 14);
  Vec y_f32((size_t)M * N);
  be.linear_forward(y_f32.data(), x.data(), w.data(), b.data(), M, K, N);
  {
    MatmulPrecisionScope scope(be, MatmulPrecision::BF16);
    EXPECT_EQ(be.matmul_precision(), MatmulPrecision::BF16);
    Vec y((size_t)M * N), y_ref((size_t)M * N);
    be.linear_forward(y.data(), x.data(), w.data(), b.data(), M, K, N);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) y_ref[(size_t)m * N + n] = b[n];
    cpu::gemm_bf16_reference(false, true, M, N, K, x.data(), K, w.data(), K, 1.f, y_ref.data(), N);
    EXPECT_LE(rel_err(y, y_ref), 2e-6);
    EXPECT_GT(rel_err(y, y_f32), 1e-5);  // not the F32 path

    Vec dx = randn((size_t)M * K, 15), dw = randn((size_t)N * K, 16), db = randn(N, 17);
    Vec dx_ref = dx, dw_ref = dw, db_ref = db;
    be.linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, K, N);
    cpu::gemm_bf16_reference(false, false, M, K, N, dy.data(), N, w.data(), K, 1.f, dx_ref.data(), K);
    cpu::gemm_bf16_reference(true, false, N, K, M, dy.data(), N, x.data(), K, 1.f, dw_ref.data(), K);
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int m = 0; m < M; ++m) s += dy[(size_t)m * N + n];
      db_ref[n] += (float)s;
    }
    EXPECT_LE(rel_err(dx, dx_ref), 2e-6);
    EXPECT_LE(rel_err(dw, dw_ref), 2e-6);
    EXPECT_LE(rel_err(db, db_ref), 1e-6);  // the bias gradient stays F32
  }
  EXPECT_EQ(be.matmul_precision(), MatmulPrecision::F32);
  Vec y_again((size_t)M * N);
  be.linear_forward(y_again.data(), x.data(), w.data(), b.data(), M, K, N);
  EXPECT_TRUE(test::bitwise_equal(y_again, y_f32));
}

}  // namespace
}  // namespace oboro
