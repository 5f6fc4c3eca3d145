// Low-precision Linear kernels (see qgemm_cpu.h). Layout of the work:
//   1. the activations are prepared once per call (BF16 pairs, or int8 blocks + scales for q8_0);
//   2. tasks = (panel of 32 weight rows = 32 output columns) × (chunk of MC activation rows), split over the pool;
//      a thread converts its panel of the stored weight into the micro-kernel's layout once (weights are read in
//      their stored format, one 32-row tile at a time, never upcast as a whole) and reuses it for its chunks;
//   3. micro-kernels keep an MR × 32 tile of outputs in registers over the whole K.
#include "ops/cpu/qgemm_cpu.h"
#include "core/error.h"
#include "core/threads.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>
#if defined(__x86_64__)
// GCC 12's _mm512_cvtepi32_ps passes _mm512_undefined_ps() and trips -Wmaybe-uninitialized (a header false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define OBORO_QGEMM_X86 1
#endif

namespace oboro::cpu {
namespace {

constexpr int NR = 32;    // output columns per panel (2 × 16 lanes)
constexpr int MC = 240;   // most activation rows per task (a multiple of every micro-kernel height)
constexpr int MR_F = 12;  // micro-kernel rows, float accumulating kernels (bf16, f8, f16)
constexpr int MR_Q = 6;   // micro-kernel rows, q8_0

std::atomic<bool> g_force_portable{false};
std::atomic<uint64_t> g_call{0};

bool detect_avx512() {
#if OBORO_QGEMM_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// Exact conversion tables.
struct Tables {
  uint16_t f8_bf16[256];
  float f8_f32[256];
  std::vector<float> f16_f32;
  Tables() : f16_f32(65536) {
    for (int c = 0; c < 256; ++c) {
      f8_f32[c] = f8e4m3_to_f32((uint8_t)c);
      f8_bf16[c] = f32_to_bf16(f8_f32[c]);  // exact: E4M3 has 3 mantissa bits, BF16 7
    }
    for (int c = 0; c < 65536; ++c) f16_f32[c] = f16_to_f32((uint16_t)c);
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

// Per-thread packed weight panel, reused while the same (call, panel) repeats.
struct Panel {
  uint64_t call = 0;
  int n0 = -1;
  std::vector<uint16_t> b16;  // fast bf16/f8: [K2][32][2]
  std::vector<float> f;       // fast f16: [K][32]; portable bf16/f8/f16: [K][32]
  std::vector<int8_t> q;      // fast q8: [nb][8][32][4]; portable q8: [nb][32][32]
  std::vector<float> d;       // q8 scales [nb][32]
  std::vector<int32_t> corr;  // fast q8: 128·Σ q per (block, column)
};

// Prepared activations (owned by the calling thread, read by the workers).
struct Acts {
  std::vector<uint16_t> b16;  // (M, Kp) bf16, Kp = K rounded up to even, zero padded
  std::vector<float> f;       // portable bf16/f8: (M, K) x rounded to bf16, as float
  std::vector<uint8_t> u8;    // fast q8: q + 128
  std::vector<int8_t> q;      // portable q8
  std::vector<float> d;       // q8 (M, K/32)
};

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Panel packing: rows n0..n0+31 of W (zero beyond N).

void pack_fast(const WeightView& w, int n0, Panel& P) {
  const int K = w.K, N = w.N, ncols = std::min(NR, N - n0);
  const Tables& T = tables();
  if (w.fmt == WFormat::BF16 || w.fmt == WFormat::F8) {
    const int K2 = (K + 1) / 2;
    P.b16.assign((size_t)K2 * NR * 2, 0);
    for (int c = 0; c < ncols; ++c) {
      const size_t row = (size_t)(n0 + c) * K;
      uint16_t* o = P.b16.data() + (size_t)c * 2;
      if (w.fmt == WFormat::BF16) {
        const uint16_t* r = static_cast<const uint16_t*>(w.data) + row;
        for (int k = 0; k < K; ++k) o[(size_t)(k >> 1) * NR * 2 + (k & 1)] = r[k];
      } else {
        const uint8_t* r = static_cast<const uint8_t*>(w.data) + row;
        for (int k = 0; k < K; ++k) o[(size_t)(k >> 1) * NR * 2 + (k & 1)] = T.f8_bf16[r[k]];
      }
    }
  } else if (w.fmt == WFormat::F16) {
    P.f.assign((size_t)K * NR, 0.f);
    for (int c = 0; c < ncols; ++c) {
      const uint16_t* r = static_cast<const uint16_t*>(w.data) + (size_t)(n0 + c) * K;
      for (int k = 0; k < K; ++k) P.f[(size_t)k * NR + c] = T.f16_f32[r[k]];
    }
  } else {  // Q8_0
    const int nb = K / kQ8Block;
    P.q.assign((size_t)nb * 8 * NR * 4, 0);
    P.d.assign((size_t)nb * NR, 0.f);
    P.corr.assign((size_t)nb * NR, 0);
    for (int c = 0; c < ncols; ++c) {
      const int8_t* r = static_cast<const int8_t*>(w.data) + (size_t)(n0 + c) * K;
      const float* ds = w.scale + (size_t)(n0 + c) * nb;
      for (int b = 0; b < nb; ++b) {
        int32_t s = 0;
        for (int g = 0; g < 8; ++g)
          for (int j = 0; j < 4; ++j) {
            int8_t v = r[b * kQ8Block + g * 4 + j];
            P.q[(((size_t)b * 8 + g) * NR + c) * 4 + j] = v;
            s += v;
          }
        P.d[(size_t)b * NR + c] = ds[b];
        P.corr[(size_t)b * NR + c] = 128 * s;
      }
    }
  }
}

void pack_portable(const WeightView& w, int n0, Panel& P) {
  const int K = w.K, N = w.N, ncols = std::min(NR, N - n0);
  const Tables& T = tables();
  if (w.fmt == WFormat::Q8_0) {
    const int nb = K / kQ8Block;
    P.q.assign((size_t)nb * NR * kQ8Block, 0);
    P.d.assign((size_t)nb * NR, 0.f);
    for (int c = 0; c < ncols; ++c) {
      const int8_t* r = static_cast<const int8_t*>(w.data) + (size_t)(n0 + c) * K;
      for (int b = 0; b < nb; ++b) {
        std::memcpy(&P.q[((size_t)b * NR + c) * kQ8Block], r + (size_t)b * kQ8Block, kQ8Block);
        P.d[(size_t)b * NR + c] = w.scale[(size_t)(n0 + c) * nb + b];
      }
    }
    return;
  }
  P.f.assign((size_t)K * NR, 0.f);
  for (int c = 0; c < ncols; ++c) {
    const size_t row = (size_t)(n0 + c) * K;
    for (int k = 0; k < K; ++k) {
      float v;
      if (w.fmt == WFormat::BF16) v = bf16_to_f32(static_cast<const uint16_t*>(w.data)[row + k]);
      else if (w.fmt == WFormat::F16) v = T.f16_f32[static_cast<const uint16_t*>(w.data)[row + k]];
      else v = T.f8_f32[static_cast<const uint8_t*>(w.data)[row + k]];
      P.f[(size_t)k * NR + c] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Portable compute: rows [m0, m1) of one panel.

void compute_portable(const WeightView& w, const Acts& A, const float* x, const Panel& P, float alpha,
                      const float* bias, float* y, int m0, int m1, int n0, int K, int N) {
  const int ncols = std::min(NR, N - n0);
  float acc[NR];
  for (int m = m0; m < m1; ++m) {
    std::fill(acc, acc + NR, 0.f);
    if (w.fmt == WFormat::Q8_0) {
      const int nb = K / kQ8Block;
      const int8_t* xq = A.q.data() + (size_t)m * K;
      const float* xd = A.d.data() + (size_t)m * nb;
      for (int b = 0; b < nb; ++b) {
        const int8_t* xb = xq + (size_t)b * kQ8Block;
        for (int c = 0; c < NR; ++c) {
          const int8_t* wb = &P.q[((size_t)b * NR + c) * kQ8Block];
          int32_t s = 0;
          for (int i = 0; i < kQ8Block; ++i) s += (int32_t)xb[i] * (int32_t)wb[i];
          acc[c] = std::fma((float)s, P.d[(size_t)b * NR + c] * xd[b], acc[c]);
        }
      }
    } else {
      const float* xr = w.fmt == WFormat::F16 ? x + (size_t)m * K : A.f.data() + (size_t)m * K;
      for (int k = 0; k < K; ++k) {
        const float xv = xr[k];
        const float* wp = &P.f[(size_t)k * NR];
        for (int c = 0; c < NR; ++c) acc[c] += xv * wp[c];
      }
    }
    float* yr = y + (size_t)m * N + n0;
    for (int c = 0; c < ncols; ++c) yr[c] = std::fma(alpha, acc[c], bias ? bias[n0 + c] : 0.f);
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 micro-kernels.
#if OBORO_QGEMM_X86
#define OBORO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,fma")))

struct Out {
  float* y;
  size_t ldy;
  const float* bias;  // already offset to the panel, or null
  int ncols;
  float alpha;
};

OBORO_AVX512 inline void masks(int ncols, __mmask16& k0, __mmask16& k1) {
  k0 = ncols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << ncols) - 1);
  k1 = ncols >= 32 ? (__mmask16)0xFFFF : ncols > 16 ? (__mmask16)((1u << (ncols - 16)) - 1) : (__mmask16)0;
}

template <int MR>
OBORO_AVX512 void store_tile(const __m512 (&acc)[MR][2], const Out& o) {
  __mmask16 k0, k1;
  masks(o.ncols, k0, k1);
  const __m512 b0 = o.bias ? _mm512_maskz_loadu_ps(k0, o.bias) : _mm512_setzero_ps();
  const __m512 b1 = o.bias ? _mm512_maskz_loadu_ps(k1, o.bias + 16) : _mm512_setzero_ps();
  const __m512 al = _mm512_set1_ps(o.alpha);
  for (int i = 0; i < MR; ++i) {
    float* yr = o.y + (size_t)i * o.ldy;
    _mm512_mask_storeu_ps(yr, k0, _mm512_fmadd_ps(al, acc[i][0], b0));
    _mm512_mask_storeu_ps(yr + 16, k1, _mm512_fmadd_ps(al, acc[i][1], b1));
  }
}

// BF16 pairs: A (MR rows, stride lda in uint16, K2 pairs), B panel [K2][32][2].
template <int MR>
OBORO_AVX512 void ukr_bf16(const uint16_t* A, size_t lda, const uint16_t* B, int K2, const Out& o) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k2 = 0; k2 < K2; ++k2) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(B + (size_t)k2 * 64);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(B + (size_t)k2 * 64 + 32);
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)load_u32(A + i * lda + 2 * (size_t)k2));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
  }
  store_tile<MR>(acc, o);
}

// F32: A (MR rows, stride lda floats), B panel [K][32].
template <int MR>
OBORO_AVX512 void ukr_f32(const float* A, size_t lda, const float* B, int K, const Out& o) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(B + (size_t)k * 32);
    const __m512 b1 = _mm512_loadu_ps(B + (size_t)k * 32 + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * lda + k]);
      acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
    }
  }
  store_tile<MR>(acc, o);
}

// q8_0: A = q + 128 (MR rows, stride lda bytes), Ad scales (stride ldd); B panel [nb][8][32][4], Bd/Bc [nb][32].
template <int MR>
OBORO_AVX512 void ukr_q8(const uint8_t* A, size_t lda, const float* Ad, size_t ldd, const int8_t* B, const float* Bd,
                         const int32_t* Bc, int nb, const Out& o) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512i s[MR][2];
    for (int i = 0; i < MR; ++i) s[i][0] = s[i][1] = _mm512_setzero_si512();
    const int8_t* Bb = B + (size_t)b * 8 * NR * 4;
    for (int g = 0; g < 8; ++g) {
      const __m512i b0 = _mm512_loadu_si512(Bb + g * 128);
      const __m512i b1 = _mm512_loadu_si512(Bb + g * 128 + 64);
      for (int i = 0; i < MR; ++i) {
        const __m512i a = _mm512_set1_epi32((int)load_u32(A + i * lda + (size_t)b * kQ8Block + g * 4));
        s[i][0] = _mm512_dpbusd_epi32(s[i][0], a, b0);
        s[i][1] = _mm512_dpbusd_epi32(s[i][1], a, b1);
      }
    }
    const __m512 d0 = _mm512_loadu_ps(Bd + (size_t)b * NR), d1 = _mm512_loadu_ps(Bd + (size_t)b * NR + 16);
    const __m512i c0 = _mm512_loadu_si512(Bc + (size_t)b * NR), c1 = _mm512_loadu_si512(Bc + (size_t)b * NR + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 dx = _mm512_set1_ps(Ad[i * ldd + b]);
      acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[i][0], c0)), _mm512_mul_ps(d0, dx), acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[i][1], c1)), _mm512_mul_ps(d1, dx), acc[i][1]);
    }
  }
  store_tile<MR>(acc, o);
}

template <int MR>
OBORO_AVX512 void run_rows_f(const WeightView& w, const Acts& A, const float* x, const Panel& P, int m, int K,
                             const Out& o) {
  if (w.fmt == WFormat::F16) {
    ukr_f32<MR>(x + (size_t)m * K, (size_t)K, P.f.data(), K, o);
  } else {
    const int K2 = (K + 1) / 2;
    ukr_bf16<MR>(A.b16.data() + (size_t)m * K2 * 2, (size_t)K2 * 2, P.b16.data(), K2, o);
  }
}

template <int MR>
OBORO_AVX512 void run_rows_q(const Acts& A, const Panel& P, int m, int K, const Out& o) {
  const int nb = K / kQ8Block;
  ukr_q8<MR>(A.u8.data() + (size_t)m * K, (size_t)K, A.d.data() + (size_t)m * nb, (size_t)nb, P.q.data(), P.d.data(),
             P.corr.data(), nb, o);
}

template <int... Is>
OBORO_AVX512 void dispatch_f(int mr, const WeightView& w, const Acts& A, const float* x, const Panel& P, int m, int K,
                             const Out& o, std::integer_sequence<int, Is...>) {
  ((mr == Is + 1 ? (run_rows_f<Is + 1>(w, A, x, P, m, K, o), 0) : 0), ...);
}
template <int... Is>
OBORO_AVX512 void dispatch_q(int mr, const Acts& A, const Panel& P, int m, int K, const Out& o,
                             std::integer_sequence<int, Is...>) {
  ((mr == Is + 1 ? (run_rows_q<Is + 1>(A, P, m, K, o), 0) : 0), ...);
}

OBORO_AVX512 void compute_fast(const WeightView& w, const Acts& A, const float* x, const Panel& P, float alpha,
                               const float* bias, float* y, int m0, int m1, int n0, int K, int N) {
  Out o{nullptr, (size_t)N, bias ? bias + n0 : nullptr, std::min(NR, N - n0), alpha};
  const int MR = w.fmt == WFormat::Q8_0 ? MR_Q : MR_F;
  for (int m = m0; m < m1; m += MR) {
    const int mr = std::min(MR, m1 - m);
    o.y = y + (size_t)m * N + n0;
    if (w.fmt == WFormat::Q8_0) dispatch_q(mr, A, P, m, K, o, std::make_integer_sequence<int, MR_Q>{});
    else dispatch_f(mr, w, A, x, P, m, K, o, std::make_integer_sequence<int, MR_F>{});
  }
}

// x rows → BF16 (round to nearest even), K padded to even with zeros.
OBORO_AVX512 void rows_to_bf16(const float* x, int K, uint16_t* out, size_t ldo, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + (size_t)r * K;
    uint16_t* o = out + (size_t)r * ldo;
    int k = 0;
    for (; k + 32 <= K; k += 32) {
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xr + k + 16), _mm512_loadu_ps(xr + k));
      _mm512_storeu_si512(o + k, (__m512i)v);
    }
    if (k < K) {
      const int rem = K - k;
      const __mmask16 m0 = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
      const __mmask16 m1 = rem > 16 ? (__mmask16)((1u << (rem - 16)) - 1) : (__mmask16)0;
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, xr + k + 16), _mm512_maskz_loadu_ps(m0, xr + k));
      const int pad = (int)ldo - k;  // ≤ 32 values: the tail plus the zero pad
      _mm512_mask_storeu_epi16(o + k, (__mmask32)((pad >= 32) ? 0xFFFFFFFFu : ((1u << pad) - 1)), (__m512i)v);
    }
  }
}
#endif  // OBORO_QGEMM_X86

// ---------------------------------------------------------------------------------------------

void prepare(const WeightView& w, const float* x, int M, int K, bool fast, Acts& A) {
  if (w.fmt == WFormat::F16) return;  // F32 activations used as they are
  if (w.fmt == WFormat::Q8_0) {
    const int nb = K / kQ8Block;
    A.d.resize((size_t)M * nb);
    if (fast) A.u8.resize((size_t)M * K);
    else A.q.resize((size_t)M * K);
    parallel_for(M, [&](int64_t r0, int64_t r1) {
      std::vector<int8_t> row(fast ? K : 0);
      for (int64_t r = r0; r < r1; ++r) {
        int8_t* q = fast ? row.data() : A.q.data() + (size_t)r * K;
        quantize_row_q8_0(x + (size_t)r * K, K, q, A.d.data() + (size_t)r * nb);
        if (fast) {
          uint8_t* u = A.u8.data() + (size_t)r * K;
          for (int k = 0; k < K; ++k) u[k] = (uint8_t)(q[k] + 128);
        }
      }
    }, 8);
    return;
  }
  // bf16 / f8: x rounded to BF16
  if (fast) {
#if OBORO_QGEMM_X86
    const int Kp = (K + 1) / 2 * 2;
    A.b16.resize((size_t)M * Kp);
    parallel_for(M, [&](int64_t r0, int64_t r1) { rows_to_bf16(x, K, A.b16.data(), (size_t)Kp, r0, r1); }, 8);
#endif
  } else {
    A.f.resize((size_t)M * K);
    parallel_for(M, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0 * K; i < r1 * K; ++i) A.f[i] = bf16_to_f32(f32_to_bf16(x[i]));
    }, 8);
  }
}

}  // namespace

bool qgemm_avx512_available() {
  static const bool ok = detect_avx512();
  return ok;
}

bool qgemm_force_portable(bool on) { return g_force_portable.exchange(on); }
bool qgemm_portable_forced() { return g_force_portable.load(); }

void linear_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N) {
  if (w.N != N || w.K != K)
    fail("internal error: linear_w weight is ", w.N, "x", w.K, " but the layer needs ", N, "x", K);
  if (w.fmt == WFormat::Q8_0 && K % kQ8Block)
    fail("q8_0 weight with K = ", K, ": K must be a multiple of ", kQ8Block, " (store this weight as bf16 or f8)");
  if (w.fmt == WFormat::F32) fail("internal error: cpu::linear_w called with an F32 weight");
  if ((w.fmt == WFormat::F8 || w.fmt == WFormat::Q8_0) && !w.scale)
    fail("internal error: ", wformat_name(w.fmt), " weight without its scale");
  if (M <= 0 || N <= 0) return;
  const bool fast = qgemm_avx512_available() && !g_force_portable.load();
  const float alpha = w.fmt == WFormat::F8 ? w.scale[0] : 1.f;
  if (K == 0) {  // empty sum
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) y[(size_t)m * N + n] = b ? b[n] : 0.f;
    return;
  }
  thread_local Acts caller_acts;  // the calling thread's buffers, reused across calls
  const Acts& A = caller_acts;     // a named reference: the workers must read the caller's buffers, not their own
  prepare(w, x, M, K, fast, caller_acts);
  // Blocking: a task = (group of G panels, chunk of mc rows). The chunk's activations (≤ ~384 KiB) stay in L2
  // while the G panels (packed once per thread and group) sweep over them, so the activations are streamed from
  // L3 once per group instead of once per panel. Any blocking gives the same results (every output element is one
  // micro-kernel call over the whole K).
  const size_t row_bytes = w.fmt == WFormat::Q8_0 ? (size_t)K + (size_t)K / kQ8Block * 4
                           : w.fmt == WFormat::F16 ? (size_t)K * 4 : (size_t)(K + 1) / 2 * 4;
  const int mc = (int)std::clamp<size_t>((384u << 10) / row_bytes / 12 * 12, 12, MC);
  const int n_panels = (N + NR - 1) / NR, m_chunks = (M + mc - 1) / mc;
  const int G = std::clamp(n_panels / (4 * num_threads()), 1, 8);
  const int n_groups = (n_panels + G - 1) / G;
  const uint64_t call = ++g_call;
  parallel_for((int64_t)n_groups * m_chunks, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<Panel> panels;
    if ((int)panels.size() < G) panels.resize(G);
    for (int64_t t = t0; t < t1; ++t) {
      const int g = (int)(t / m_chunks), m0 = (int)(t % m_chunks) * mc, m1 = std::min(M, m0 + mc);
      for (int p = 0; p < G; ++p) {
        const int n0 = (g * G + p) * NR;
        if (n0 >= N) break;
        Panel& P = panels[p];
        if (P.call != call || P.n0 != n0) {
          if (fast) pack_fast(w, n0, P);
          else pack_portable(w, n0, P);
          P.call = call;
          P.n0 = n0;
        }
#if OBORO_QGEMM_X86
        if (fast) {
          compute_fast(w, A, x, P, alpha, b, y, m0, m1, n0, K, N);
          continue;
        }
#endif
        compute_portable(w, A, x, P, alpha, b, y, m0, m1, n0, K, N);
      }
    }
  }, 1);
}

}  // namespace oboro::cpu
