// BF16 GEMM (see gemm_bf16_cpu.h). Layout of the work:
//   1. op(A) is packed once into BF16 rows (M, Kp), K pairs contiguous (Kp = K rounded up to even, zero padded);
//   2. op(B) is packed once into panels of 32 columns, [panel][K2][32][2] (the vdpbf16ps pair layout);
//   3. tasks = (chunk of rows) × (group of panels) over the thread pool; a task walks K in blocks of kKC2 pairs
//      and a 12×32 micro-kernel keeps its outputs in registers over one block, adding into C after the first.
// Packing is O(MK + KN) against the O(MNK) product, parallel over rows / panels.
#include "ops/cpu/gemm_bf16_cpu.h"
#include "ops/cpu/qgemm_cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/threads.h"
#include <cblas.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 intrinsic header false positive
#include <immintrin.h>
#define OBORO_GEMM_BF16_X86 1
#endif

namespace oboro::cpu {
namespace {

constexpr int NR = 32;      // columns per panel
constexpr int MR = 12;      // micro-kernel rows
constexpr int kKC2 = 512;   // K pairs per block: a panel block is 64 KiB, a 240-row A block 480 KiB (L2)
constexpr int kMC = 240;    // rows per task

inline float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

#if OBORO_GEMM_BF16_X86
#define OBORO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

// op(A) rows [r0, r1) → Ap (rows of Kp bf16). Not transposed: each row is contiguous in A.
OBORO_AVX512 void pack_a_rows(const float* A, int lda, int K, int Kp, uint16_t* Ap, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* a = A + (size_t)r * lda;
    uint16_t* o = Ap + (size_t)r * Kp;
    int k = 0;
    for (; k + 32 <= K; k += 32)
      _mm512_storeu_si512(o + k, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(a + k)));
    if (k < Kp) {
      const int rem = K - k, pad = Kp - k;  // rem < 32 values, pad ≤ 32 including the zero pad
      const __mmask16 m0 = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
      const __mmask16 m1 = rem > 16 ? (__mmask16)((1u << (rem - 16)) - 1) : (__mmask16)0;
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, a + k + 16), _mm512_maskz_loadu_ps(m0, a + k));
      _mm512_mask_storeu_epi16(o + k, (__mmask32)(pad >= 32 ? 0xFFFFFFFFu : ((1u << pad) - 1)), (__m512i)v);
    }
  }
}

// Panel p of op(B) when B is K×N row-major (not transposed): pairs interleave rows 2k2 and 2k2+1.
OBORO_AVX512 void pack_b_panel_rows(const float* B, int ldb, int K, int N, int K2, int p, uint16_t* out) {
  const int n0 = p * NR, nc = std::min(NR, N - n0);
  const __mmask16 m0 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
  const __mmask16 m1 = nc >= 32 ? (__mmask16)0xFFFF : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : (__mmask16)0;
  // lo/hi halves of the interleave: element 2j = row0[j], 2j+1 = row1[j] (row1 is the second source, +32).
  alignas(64) uint16_t idx_lo[32], idx_hi[32];
  for (int j = 0; j < 16; ++j) {
    idx_lo[2 * j] = (uint16_t)j, idx_lo[2 * j + 1] = (uint16_t)(32 + j);
    idx_hi[2 * j] = (uint16_t)(16 + j), idx_hi[2 * j + 1] = (uint16_t)(48 + j);
  }
  const __m512i ilo = _mm512_load_si512(idx_lo), ihi = _mm512_load_si512(idx_hi);
  for (int k2 = 0; k2 < K2; ++k2) {
    const int k = 2 * k2;
    const float* r0 = B + (size_t)k * ldb + n0;
    const __m512i v0 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, r0 + 16), _mm512_maskz_loadu_ps(m0, r0));
    __m512i v1 = _mm512_setzero_si512();
    if (k + 1 < K) {
      const float* r1 = r0 + ldb;
      v1 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, r1 + 16), _mm512_maskz_loadu_ps(m0, r1));
    }
    uint16_t* o = out + (size_t)k2 * 64;
    _mm512_storeu_si512(o, _mm512_permutex2var_epi16(v0, ilo, v1));
    _mm512_storeu_si512(o + 32, _mm512_permutex2var_epi16(v0, ihi, v1));
  }
}

// op(A) rows [16·b0, 16·b1) when A is stored K×M (transposed): blocks of 32 k × 16 rows, each 16-wide source
// segment rounded with one conversion; the 32 source lines stay in L1 while 16 packed rows get 64-byte runs.
OBORO_AVX512 void pack_a_transposed(const float* A, int lda, int K, int Kp, int M, uint16_t* ap, int64_t b0,
                                    int64_t b1) {
  alignas(64) uint16_t t[32][16];
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int r0 = (int)blk * 16, nr = std::min(16, M - r0);
    const __mmask16 rm = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    for (int k0 = 0; k0 < Kp; k0 += 32) {
      const int nk = std::min(32, Kp - k0);
      for (int kk = 0; kk < nk; ++kk) {
        const int k = k0 + kk;
        const __m512 v = k < K ? _mm512_maskz_loadu_ps(rm, A + (size_t)k * lda + r0) : _mm512_setzero_ps();
        _mm256_store_si256((__m256i*)t[kk], (__m256i)_mm512_cvtneps_pbh(v));
      }
      for (int r = 0; r < nr; ++r) {
        uint16_t* o = ap + (size_t)(r0 + r) * Kp + k0;
        for (int kk = 0; kk < nk; ++kk) o[kk] = t[kk][r];
      }
    }
  }
}

// Panel p of op(B) when B is stored N×K (op(B) = Bᵀ, the Linear weight in the forward): the panel's 32 rows are
// rounded row by row (vector), then their K pairs (32-bit units) are transposed into [K2][32] in blocks of 16.
OBORO_AVX512 void pack_b_panel_cols(const float* B, int ldb, int K, int Kp, int N, int p, uint16_t* rows,
                                    uint16_t* out) {
  const int n0 = p * NR, nc = std::min(NR, N - n0);
  for (int j = 0; j < NR; ++j) {
    if (j < nc) pack_a_rows(B + (size_t)(n0 + j) * ldb, ldb, K, Kp, rows + (size_t)j * Kp, 0, 1);
    else std::memset(rows + (size_t)j * Kp, 0, (size_t)Kp * 2);
  }
  const int K2 = Kp / 2;
  uint32_t* o32 = reinterpret_cast<uint32_t*>(out);
  for (int k20 = 0; k20 < K2; k20 += 16) {
    const int n2 = std::min(16, K2 - k20);
    for (int j = 0; j < NR; ++j) {
      const uint16_t* r = rows + (size_t)j * Kp + 2 * (size_t)k20;
      for (int q = 0; q < n2; ++q) {
        uint32_t v;
        std::memcpy(&v, r + 2 * q, 4);
        o32[(size_t)(k20 + q) * NR + j] = v;
      }
    }
  }
}

// C tile (rows ≤ MR, ncols ≤ 32): C = acc (first block with beta 0) or C += acc.
template <int R>
OBORO_AVX512 void ukr(const uint16_t* A, size_t lda, const uint16_t* B, int K2, float* C, size_t ldc, int ncols,
                      bool add) {
  __m512 acc[R][2];
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k2 = 0; k2 < K2; ++k2) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(B + (size_t)k2 * 64);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(B + (size_t)k2 * 64 + 32);
    for (int i = 0; i < R; ++i) {
      uint32_t a32;
      std::memcpy(&a32, A + i * lda + 2 * (size_t)k2, 4);
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)a32);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
  }
  const __mmask16 k0 = ncols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << ncols) - 1);
  const __mmask16 k1 = ncols >= 32 ? (__mmask16)0xFFFF : ncols > 16 ? (__mmask16)((1u << (ncols - 16)) - 1) : 0;
  for (int i = 0; i < R; ++i) {
    float* c = C + (size_t)i * ldc;
    __m512 c0 = acc[i][0], c1 = acc[i][1];
    if (add) {
      c0 = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, c), c0);
      c1 = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, c + 16), c1);
    }
    _mm512_mask_storeu_ps(c, k0, c0);
    _mm512_mask_storeu_ps(c + 16, k1, c1);
  }
}

template <int R>
OBORO_AVX512 void ukr_rows(int rows, const uint16_t* A, size_t lda, const uint16_t* B, int K2, float* C, size_t ldc,
                           int ncols, bool add) {
  if constexpr (R > 0) {
    if (rows == R) return ukr<R>(A, lda, B, K2, C, ldc, ncols, add);
    return ukr_rows<R - 1>(rows, A, lda, B, K2, C, ldc, ncols, add);
  }
}

void gemm_fast(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float beta,
               float* C, int ldc) {
  const int Kp = (K + 1) / 2 * 2, K2 = Kp / 2;
  const int n_panels = (N + NR - 1) / NR;
  thread_local std::vector<uint16_t> Ap, Bp;  // the caller's buffers; the workers read them by reference
  Ap.resize((size_t)M * Kp);
  Bp.resize((size_t)n_panels * K2 * 64);
  uint16_t* ap = Ap.data();
  uint16_t* bp = Bp.data();
  if (!ta) {
    parallel_for(M, [&](int64_t r0, int64_t r1) { pack_a_rows(A, lda, K, Kp, ap, r0, r1); }, 16);
  } else {  // A stored K×M: row m of op(A) is column m of A; walk A's rows in order for contiguous reads
    parallel_for((M + 15) / 16, [&](int64_t b0, int64_t b1) { pack_a_transposed(A, lda, K, Kp, M, ap, b0, b1); }, 1);
  }
  if (!tb) {
    parallel_for(n_panels, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) pack_b_panel_rows(B, ldb, K, N, K2, (int)p, bp + (size_t)p * K2 * 64);
    }, 1);
  } else {  // B stored N×K: column n of op(B) is row n of B, pairs are consecutive values of that row
    parallel_for(n_panels, [&](int64_t p0, int64_t p1) {
      std::vector<uint16_t> rows((size_t)NR * Kp);
      for (int64_t p = p0; p < p1; ++p) pack_b_panel_cols(B, ldb, K, Kp, N, (int)p, rows.data(), bp + (size_t)p * K2 * 64);
    }, 1);
  }
  if (beta != 0.f && beta != 1.f)
    parallel_for(M, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int n = 0; n < N; ++n) C[(size_t)r * ldc + n] *= beta;
    }, 16);
  const bool first_adds = beta != 0.f;
  const int m_chunks = (M + kMC - 1) / kMC;
  const int G = std::clamp(n_panels / (4 * num_threads()), 1, 8);
  const int n_groups = (n_panels + G - 1) / G;
  parallel_for((int64_t)m_chunks * n_groups, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int g = (int)(t / m_chunks), m0 = (int)(t % m_chunks) * kMC, m1 = std::min(M, m0 + kMC);
      for (int kb = 0; kb < K2; kb += kKC2) {
        const int kc2 = std::min(kKC2, K2 - kb);
        const bool add = kb > 0 || first_adds;
        for (int pp = 0; pp < G; ++pp) {
          const int p = g * G + pp;
          if (p >= n_panels) break;
          const int n0 = p * NR, nc = std::min(NR, N - n0);
          const uint16_t* bpanel = bp + (size_t)p * K2 * 64 + (size_t)kb * 64;
          for (int m = m0; m < m1; m += MR) {
            const int rows = std::min(MR, m1 - m);
            ukr_rows<MR>(rows, ap + (size_t)m * Kp + 2 * (size_t)kb, (size_t)Kp, bpanel, kc2, C + (size_t)m * ldc + n0,
                         (size_t)ldc, nc, add);
          }
        }
      }
    }
  }, 1);
}
#endif  // OBORO_GEMM_BF16_X86

// Portable: the rounded operands through an F32 GEMM (same values, F32 sums in OpenBLAS's order).
void gemm_portable(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float beta,
                   float* C, int ldc) {
  std::vector<float> a((size_t)M * K), b((size_t)K * N);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) a[(size_t)m * K + k] = bf16_round(ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]);
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) b[(size_t)k * N + n] = bf16_round(tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, a.data(), K, b.data(), N, beta, C, ldc);
}

}  // namespace

void gemm_bf16(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float beta,
               float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // empty sum: C = beta·C
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) C[(size_t)m * ldc + n] = beta == 0.f ? 0.f : beta * C[(size_t)m * ldc + n];
    return;
  }
#if OBORO_GEMM_BF16_X86
  if (qgemm_avx512_available() && !qgemm_portable_forced())
    return gemm_fast(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
#endif
  gemm_portable(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

bool gemm_bf16_packed_available() {
#if OBORO_GEMM_BF16_X86
  return qgemm_avx512_available();
#else
  return false;
#endif
}

void gemm_bf16_packed(int M, int N, int K2, const uint16_t* A, size_t lda, const uint16_t* B, float* C, size_t ldc,
                      bool add) {
#if OBORO_GEMM_BF16_X86
  if (!gemm_bf16_packed_available()) fail("internal error: gemm_bf16_packed needs an AVX-512 BF16 CPU");
  const int n_panels = (N + NR - 1) / NR;
  for (int kb = 0; kb < K2; kb += kKC2) {  // gemm_fast's order: K blocks outermost, panels, rows of MR
    const int kc2 = std::min(kKC2, K2 - kb);
    const bool a = kb > 0 || add;
    for (int p = 0; p < n_panels; ++p) {
      const int n0 = p * NR, nc = std::min(NR, N - n0);
      const uint16_t* bpanel = B + (size_t)p * K2 * 64 + (size_t)kb * 64;
      for (int m = 0; m < M; m += MR)
        ukr_rows<MR>(std::min(MR, M - m), A + (size_t)m * lda + 2 * (size_t)kb, lda, bpanel, kc2, C + (size_t)m * ldc + n0,
                     ldc, nc, a);
    }
  }
#else
  (void)M, (void)N, (void)K2, (void)A, (void)lda, (void)B, (void)C, (void)ldc, (void)add;
  fail("internal error: gemm_bf16_packed needs an AVX-512 BF16 CPU");
#endif
}

void gemm_bf16_reference(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                         float beta, float* C, int ldc) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k)
        s += (double)bf16_round(ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]) *
             (double)bf16_round(tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
      float& c = C[(size_t)m * ldc + n];
      c = (float)((beta == 0.f ? 0.0 : (double)beta * c) + s);
    }
}

}  // namespace oboro::cpu
