// Work unit = one (batch, head) pair: its Q, K, V columns are gathered into contiguous
// per-thread panels (K also transposed so score rows vectorise over keys), then query
// blocks of kBq rows sweep key blocks of kBk columns with an online softmax.
// Memory per thread: a few S×dh panels plus one kBq×kBk score tile. An optional relative-position
// bias (H, 2S−1) is added to each score tile; its gradient is gathered per unit and reduced in order.
#include "ops/cpu/attention_cpu.h"
#include "ops/cpu/vec_math.h"
#include "core/dtype.h"
#include "core/threads.h"
#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>
#if defined(__x86_64__)
// GCC 12's AVX-512 headers pass _mm512_undefined_ps() and trip -Wmaybe-uninitialized (a header false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define OBORO_ATTN_X86 1
#endif

namespace oboro::cpu {
namespace {

constexpr int kBq = 32;
constexpr int kBk = 64;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Σ_j a[j]·b[j] with 16 independent partial sums (vectorises without -ffast-math), then a fixed-order
// sum: deterministic, and fast for the short rows of small-head-dim layers.
inline float dot16(const float* a, const float* b, int n) {
  float acc[16] = {};
  int j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[j + l] * b[j + l];
  for (int l = 0; j + l < n; ++l) acc[l] += a[j + l] * b[j + l];
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += acc[l];
  return s;
}

// The forwards split each (batch, head) unit's query tiles into nch contiguous chunks when there are fewer units
// than threads (the VAE's mid-block attention is one unit): work item w = unit · nch + chunk. Every query row is
// computed the same way whatever the chunking, so results do not depend on nch (nor on the thread count).
struct QueryRange {
  int begin, end;
};
inline int query_chunks(int units, int S, int tile) {
  const int tiles = (S + tile - 1) / tile, th = num_threads();
  if (units >= th || tiles < 2) return 1;
  return std::min(tiles, (th + units - 1) / units);
}
inline QueryRange query_range(int S, int tile, int chunk, int nch) {
  const int tiles = (S + tile - 1) / tile;
  const int t0 = (int)((int64_t)tiles * chunk / nch), t1 = (int)((int64_t)tiles * (chunk + 1) / nch);
  return {t0 * tile, std::min(S, t1 * tile)};
}

// Head dims below this use key-major (transposed) panels so the inner loops run over keys
// (64 wide) instead of over a 4..8-wide head dim.
constexpr int kSmallDh = 16;

struct Panels {
  std::vector<float> q, kt, kr, v, vt, dout;  // q (S,dh); kt (dh,S); kr (S,dh); v (S,dh); vt (dh,S)
};

// Copy columns [h·dh, (h+1)·dh) of x(S, D) (batch b already applied) into dst(S, dh), optionally scaled.
void gather_rows(float* dst, const float* x, int S, int D, int h, int dh, float mul = 1.f) {
  for (int s = 0; s < S; ++s) {
    const float* src = x + (size_t)s * D + (size_t)h * dh;
    for (int d = 0; d < dh; ++d) dst[(size_t)s * dh + d] = src[d] * mul;
  }
}
void gather_cols(float* dst, const float* x, int S, int D, int h, int dh) {  // dst(dh, S)
  for (int s = 0; s < S; ++s) {
    const float* src = x + (size_t)s * D + (size_t)h * dh;
    for (int d = 0; d < dh; ++d) dst[(size_t)d * S + s] = src[d];
  }
}

// scores(nq, nk) = qblk(nq, dh) · kt[:, j0:j0+nk] (+ rel[(j0 + j) − (i0 + i) + S − 1] when rel, the head's
// (2S−1) bias row); masked keys → -inf
inline void score_tile(float* sc, const float* qblk, int nq, const float* kt, int S, int i0, int j0, int nk, int dh,
                       const float* valid, const float* rel) {
  for (int i = 0; i < nq; ++i) {
    float* row = sc + i * kBk;
    for (int j = 0; j < kBk; ++j) row[j] = 0.f;
    const float* qi = qblk + (size_t)i * dh;
    for (int d = 0; d < dh; ++d) {
      float qv = qi[d];
      const float* kd = kt + (size_t)d * S + j0;
      for (int j = 0; j < nk; ++j) row[j] += qv * kd[j];
    }
    if (rel) {
      const float* rb = rel + (j0 - (i0 + i) + S - 1);
      for (int j = 0; j < nk; ++j) row[j] += rb[j];
    }
    if (valid)
      for (int j = 0; j < nk; ++j)
        if (valid[j0 + j] == 0.f) row[j] = kNegInf;
  }
}

}  // namespace

void attention_forward_generic(float* o, float* lse, const float* q, const float* k, const float* v,
                               const float* key_valid, int B, int S, int H, int dh, float scale,
                               const float* rel_bias) {
  const int D = H * dh;
  parallel_for((int64_t)B * H, [&](int64_t u0, int64_t u1) {
    Panels P;
    P.q.resize((size_t)S * dh);
    P.kt.resize((size_t)S * dh);
    P.v.resize((size_t)S * dh);
    const bool small = dh < kSmallDh;
    if (small) P.vt.resize((size_t)S * dh);
    std::vector<float> sc(kBq * kBk), acc((size_t)kBq * dh), m(kBq), l(kBq);
    for (int64_t u = u0; u < u1; ++u) {
      int b = (int)(u / H), h = (int)(u % H);
      size_t bo = (size_t)b * S * D;
      const float* valid = key_valid ? key_valid + (size_t)b * S : nullptr;
      const float* rel = rel_bias ? rel_bias + (size_t)h * (2 * S - 1) : nullptr;
      gather_rows(P.q.data(), q + bo, S, D, h, dh, scale);  // scale folded into Q
      gather_cols(P.kt.data(), k + bo, S, D, h, dh);
      if (small)
        gather_cols(P.vt.data(), v + bo, S, D, h, dh);
      else
        gather_rows(P.v.data(), v + bo, S, D, h, dh);
      for (int i0 = 0; i0 < S; i0 += kBq) {
        int nq = std::min(kBq, S - i0);
        std::fill(m.begin(), m.end(), kNegInf);
        std::fill(l.begin(), l.end(), 0.f);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int j0 = 0; j0 < S; j0 += kBk) {
          int nk = std::min(kBk, S - j0);
          score_tile(sc.data(), P.q.data() + (size_t)i0 * dh, nq, P.kt.data(), S, i0, j0, nk, dh, valid, rel);
          for (int i = 0; i < nq; ++i) {
            float* row = sc.data() + i * kBk;
            float mx = m[i];
            for (int j = 0; j < nk; ++j) mx = std::max(mx, row[j]);
            if (mx == kNegInf) continue;  // every key so far masked
            float corr = std::exp(m[i] - mx);  // exp(-inf) = 0 on the first block
            for (int j = 0; j < nk; ++j) row[j] -= mx;
            exp_row(row, nk);
            float sum = 0.f;
            for (int j = 0; j < nk; ++j) sum += row[j];
            l[i] = l[i] * corr + sum;
            m[i] = mx;
            float* a = acc.data() + (size_t)i * dh;
            if (small) {  // a[d] = a[d]·corr + Σ_j p_j V[j, d], over keys
              for (int d = 0; d < dh; ++d) a[d] = a[d] * corr + dot16(row, P.vt.data() + (size_t)d * S + j0, nk);
              continue;
            }
            for (int d = 0; d < dh; ++d) a[d] *= corr;
            for (int j = 0; j < nk; ++j) {
              float p = row[j];
              if (p == 0.f) continue;
              const float* vj = P.v.data() + (size_t)(j0 + j) * dh;
              for (int d = 0; d < dh; ++d) a[d] += p * vj[d];
            }
          }
        }
        for (int i = 0; i < nq; ++i) {
          float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
          float* orow = o + bo + (size_t)(i0 + i) * D + (size_t)h * dh;
          const float* a = acc.data() + (size_t)i * dh;
          for (int d = 0; d < dh; ++d) orow[d] = a[d] * inv;
          lse[((size_t)b * H + h) * S + i0 + i] = l[i] > 0.f ? m[i] + std::log(l[i]) : kNegInf;
        }
      }
    }
  }, 1);
}

// ---------------------------------------------------------------------------------------------
// Register-blocked AVX-512 forward. Per (batch, head) unit the panels are packed once:
//   Q (Sq, dh) scaled, Sq = S rounded up to 8 (padding rows zero, never written out);
//   K (Sk/64, dh, 64): key blocks of 64, each stored d-major so a score row's 64 keys are 4 vectors;
//   V (Sk, dhp), dhp = dh rounded up to 16 (zero columns), Sk = S rounded up to 64 (zero rows);
//   kb (Sk): 0 for a valid key, −inf for a masked or padding key (added to every score).
// A query tile of 32 rows sweeps the key blocks: scores by a 4-row × 64-key micro-kernel (FMA over dh,
// one broadcast of q per row and four K vectors per step), the mask / relative bias, the online-softmax
// rescale per row, then acc(32, dhp) = acc·corr + P(32, 64)·V(64, dhp) by an MR-row × NV-vector
// micro-kernel that runs over the 64 keys with the accumulators in registers. Every output element is
// computed by one thread in a fixed order, so results do not depend on the thread count.
#if OBORO_ATTN_X86
#define OBORO_ATTN_AVX512 __attribute__((target("avx512f,avx512dq,fma")))
namespace {

constexpr int kFq = 32;  // query rows per tile
constexpr int kFk = 64;  // keys per block (4 vectors)

bool detect_attn_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
}
std::atomic<bool> g_attn_force_generic{false};

// e^x on 16 lanes, the same scheme as exp_row: x = n·ln2 + r, degree-7 Taylor for e^r, 2^n via the
// exponent bits; x < −87 (−inf included) gives 0.
OBORO_ATTN_AVX512 inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  __m512 v = _mm512_max_ps(x, lo);
  __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693145751953125f), v);
  r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(kf), _mm512_set1_epi32(127)), 23);
  __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  return _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
}

// sc(4, 64) = q(4 rows, stride dh) · kblk(dh, 64)
OBORO_ATTN_AVX512 inline void score_4x64(float* sc, const float* q, const float* kblk, int dh) {
  __m512 c[4][4];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) c[r][t] = _mm512_setzero_ps();
  const float* q0 = q;
  const float* q1 = q + dh;
  const float* q2 = q + 2 * dh;
  const float* q3 = q + 3 * dh;
  for (int d = 0; d < dh; ++d) {
    const float* kd = kblk + (size_t)d * kFk;
    __m512 b0 = _mm512_loadu_ps(kd), b1 = _mm512_loadu_ps(kd + 16), b2 = _mm512_loadu_ps(kd + 32),
           b3 = _mm512_loadu_ps(kd + 48);
    __m512 a = _mm512_set1_ps(q0[d]);
    c[0][0] = _mm512_fmadd_ps(a, b0, c[0][0]); c[0][1] = _mm512_fmadd_ps(a, b1, c[0][1]);
    c[0][2] = _mm512_fmadd_ps(a, b2, c[0][2]); c[0][3] = _mm512_fmadd_ps(a, b3, c[0][3]);
    a = _mm512_set1_ps(q1[d]);
    c[1][0] = _mm512_fmadd_ps(a, b0, c[1][0]); c[1][1] = _mm512_fmadd_ps(a, b1, c[1][1]);
    c[1][2] = _mm512_fmadd_ps(a, b2, c[1][2]); c[1][3] = _mm512_fmadd_ps(a, b3, c[1][3]);
    a = _mm512_set1_ps(q2[d]);
    c[2][0] = _mm512_fmadd_ps(a, b0, c[2][0]); c[2][1] = _mm512_fmadd_ps(a, b1, c[2][1]);
    c[2][2] = _mm512_fmadd_ps(a, b2, c[2][2]); c[2][3] = _mm512_fmadd_ps(a, b3, c[2][3]);
    a = _mm512_set1_ps(q3[d]);
    c[3][0] = _mm512_fmadd_ps(a, b0, c[3][0]); c[3][1] = _mm512_fmadd_ps(a, b1, c[3][1]);
    c[3][2] = _mm512_fmadd_ps(a, b2, c[3][2]); c[3][3] = _mm512_fmadd_ps(a, b3, c[3][3]);
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) _mm512_storeu_ps(sc + r * kFk + t * 16, c[r][t]);
}

// acc(MR rows, NV·16 cols, stride lda) = acc·corr[r] + p(MR, 64) · v(64 rows, stride ldv)
template <int MR, int NV>
OBORO_ATTN_AVX512 inline void pv_kernel(float* acc, int lda, const float* p, const float* v, int ldv,
                                        const float* corr) {
  __m512 c[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const __m512 cr = _mm512_set1_ps(corr[r]);
    for (int t = 0; t < NV; ++t) c[r][t] = _mm512_mul_ps(_mm512_loadu_ps(acc + (size_t)r * lda + t * 16), cr);
  }
  for (int j = 0; j < kFk; ++j) {
    const float* vj = v + (size_t)j * ldv;
    __m512 b[NV];
    for (int t = 0; t < NV; ++t) b[t] = _mm512_loadu_ps(vj + t * 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(p[r * kFk + j]);
      for (int t = 0; t < NV; ++t) c[r][t] = _mm512_fmadd_ps(a, b[t], c[r][t]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < NV; ++t) _mm512_storeu_ps(acc + (size_t)r * lda + t * 16, c[r][t]);
}

// Units [u0, u1) of (batch, head) pairs, on the calling thread. (Its own function rather than the
// parallel_for lambda's body: a lambda does not inherit the enclosing function's target attribute.)
OBORO_ATTN_AVX512 void attention_forward_avx512_units(int64_t w0, int64_t w1, int nch, float* o, float* lse,
                                                      const float* q, const float* k, const float* v,
                                                      const float* key_valid, int S, int H, int dh, float scale,
                                                      const float* rel_bias) {
  const int D = H * dh;
  const int dhp = (dh + 15) / 16 * 16;
  const int Sq = (S + 7) / 8 * 8;
  const int Sk = (S + kFk - 1) / kFk * kFk;
  {
    std::vector<float> qp((size_t)Sq * dh), kp((size_t)Sk * dh), vp((size_t)Sk * dhp), kb(Sk);
    std::vector<float> sc(kFq * kFk), acc((size_t)kFq * dhp), m(kFq), l(kFq), corr(kFq);
    int64_t packed = -1;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t u = w / nch;
      const QueryRange qr = query_range(S, kFq, (int)(w % nch), nch);
      const int b = (int)(u / H), h = (int)(u % H);
      const size_t bo = (size_t)b * S * D;
      const float* valid = key_valid ? key_valid + (size_t)b * S : nullptr;
      const float* rel = rel_bias ? rel_bias + (size_t)h * (2 * S - 1) : nullptr;
      if (u != packed) {  // pack (once per unit: a thread's items are contiguous)
      packed = u;
      std::fill(qp.begin(), qp.end(), 0.f);
      std::fill(kp.begin(), kp.end(), 0.f);
      std::fill(vp.begin(), vp.end(), 0.f);
      for (int s = 0; s < S; ++s) {
        const size_t off = bo + (size_t)s * D + (size_t)h * dh;
        float* qd = qp.data() + (size_t)s * dh;
        float* kd = kp.data() + (size_t)(s / kFk) * kFk * dh + (s % kFk);
        float* vd = vp.data() + (size_t)s * dhp;
        for (int d = 0; d < dh; ++d) {
          qd[d] = q[off + d] * scale;  // scale folded into Q
          kd[(size_t)d * kFk] = k[off + d];
          vd[d] = v[off + d];
        }
      }
      for (int j = 0; j < Sk; ++j) kb[j] = (j < S && (!valid || valid[j] != 0.f)) ? 0.f : kNegInf;
      }
      for (int i0 = qr.begin; i0 < qr.end; i0 += kFq) {
        const int nq = std::min(kFq, S - i0);
        const int nq4 = (nq + 3) / 4 * 4, nq8 = (nq + 7) / 8 * 8;  // within Sq
        std::fill(m.begin(), m.end(), kNegInf);
        std::fill(l.begin(), l.end(), 0.f);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int j0 = 0; j0 < Sk; j0 += kFk) {
          const int nk = std::min(kFk, S - j0);
          const float* kblk = kp.data() + (size_t)j0 * dh;
          for (int i = 0; i < nq4; i += 4) score_4x64(sc.data() + i * kFk, qp.data() + (size_t)(i0 + i) * dh, kblk, dh);
          const __m512 kb0 = _mm512_loadu_ps(kb.data() + j0), kb1 = _mm512_loadu_ps(kb.data() + j0 + 16),
                       kb2 = _mm512_loadu_ps(kb.data() + j0 + 32), kb3 = _mm512_loadu_ps(kb.data() + j0 + 48);
          for (int i = 0; i < nq8; ++i) {
            float* row = sc.data() + i * kFk;
            if (i >= nq) {  // padding rows: no contribution
              for (int j = 0; j < kFk; ++j) row[j] = 0.f;
              corr[i] = 1.f;
              continue;
            }
            if (rel) {
              const float* rb = rel + (j0 - (i0 + i) + S - 1);
              if (nk == kFk)
                for (int t = 0; t < 4; ++t)
                  _mm512_storeu_ps(row + 16 * t, _mm512_add_ps(_mm512_loadu_ps(row + 16 * t), _mm512_loadu_ps(rb + 16 * t)));
              else
                for (int j = 0; j < nk; ++j) row[j] += rb[j];
            }
            __m512 s0 = _mm512_add_ps(_mm512_loadu_ps(row), kb0), s1 = _mm512_add_ps(_mm512_loadu_ps(row + 16), kb1),
                   s2 = _mm512_add_ps(_mm512_loadu_ps(row + 32), kb2),
                   s3 = _mm512_add_ps(_mm512_loadu_ps(row + 48), kb3);
            const float bm = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(s0, s1), _mm512_max_ps(s2, s3)));
            const float mx = std::max(m[i], bm);
            if (mx == kNegInf) {  // every key so far masked: P = 0, acc stays 0
              for (int j = 0; j < kFk; ++j) row[j] = 0.f;
              corr[i] = 1.f;
              continue;
            }
            const __m512 vm = _mm512_set1_ps(mx);
            s0 = exp16(_mm512_sub_ps(s0, vm)), s1 = exp16(_mm512_sub_ps(s1, vm));
            s2 = exp16(_mm512_sub_ps(s2, vm)), s3 = exp16(_mm512_sub_ps(s3, vm));
            _mm512_storeu_ps(row, s0), _mm512_storeu_ps(row + 16, s1);
            _mm512_storeu_ps(row + 32, s2), _mm512_storeu_ps(row + 48, s3);
            const float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
            const float cr = std::exp(m[i] - mx);  // exp(−inf) = 0 on the first unmasked block
            corr[i] = cr;
            l[i] = l[i] * cr + sum;
            m[i] = mx;
          }
          const float* vblk = vp.data() + (size_t)j0 * dhp;
          for (int c0 = 0; c0 < dhp; c0 += 64) {
            const int nv = std::min(4, (dhp - c0) / 16);
            float* a = acc.data() + c0;
            const float* vb = vblk + c0;
            switch (nv) {
              case 1:
                for (int i = 0; i < nq8; i += 8) pv_kernel<8, 1>(a + (size_t)i * dhp, dhp, sc.data() + i * kFk, vb, dhp, corr.data() + i);
                break;
              case 2:
                for (int i = 0; i < nq8; i += 8) pv_kernel<8, 2>(a + (size_t)i * dhp, dhp, sc.data() + i * kFk, vb, dhp, corr.data() + i);
                break;
              case 3:
                for (int i = 0; i < nq8; i += 4) pv_kernel<4, 3>(a + (size_t)i * dhp, dhp, sc.data() + i * kFk, vb, dhp, corr.data() + i);
                break;
              default:
                for (int i = 0; i < nq8; i += 4) pv_kernel<4, 4>(a + (size_t)i * dhp, dhp, sc.data() + i * kFk, vb, dhp, corr.data() + i);
                break;
            }
          }
        }
        for (int i = 0; i < nq; ++i) {
          const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
          float* orow = o + bo + (size_t)(i0 + i) * D + (size_t)h * dh;
          const float* a = acc.data() + (size_t)i * dhp;
          for (int d = 0; d < dh; ++d) orow[d] = a[d] * inv;
          lse[((size_t)b * H + h) * S + i0 + i] = l[i] > 0.f ? m[i] + std::log(l[i]) : kNegInf;
        }
      }
    }
  }
}

void attention_forward_avx512(float* o, float* lse, const float* q, const float* k, const float* v,
                              const float* key_valid, int B, int S, int H, int dh, float scale,
                              const float* rel_bias) {
  const int nch = query_chunks(B * H, S, kFq);
  parallel_for((int64_t)B * H * nch, [&](int64_t w0, int64_t w1) {
    attention_forward_avx512_units(w0, w1, nch, o, lse, q, k, v, key_valid, S, H, dh, scale, rel_bias);
  }, 1);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Register-blocked AVX-512 backward (F32, the same arithmetic as the generic backward up to summation order).
// Per (batch, head) unit, packed once (dh4 = dh rounded up to 4, zero columns; Sq = S rounded up to 32 and
// Sk = S rounded up to 64, zero rows):
//   Qs, dO (Sq, dh4) rows (Q scaled): the A operands of the score and dP kernels and, read by column, of the
//        dKᵀ / dVᵀ kernels;
//   Kd, Vd (Sk/64, dh4, 64): key blocks d-major (scores = Qs·Kᵀ and dP = dO·Vᵀ by score_4x64);
//   Kr (Sk, dhp) K rows padded to 16 columns (dQ = dS·K by the P·V kernel) when dh ≥ 16;
//   kb (Sk): 0 for a valid key, −inf for a masked or padding key.
// A query tile of 32 rows sweeps the key blocks: scores and dP (4 × 64 micro-kernel), P = exp(s + kb − lse),
// dS = P ⊙ (dP − δ), then dVᵀ += dOᵀ·P and dKᵀ += Qsᵀ·dS as (4 head columns × 64 keys) register tiles over the
// tile's rows — transposed so every update runs over 64 keys whatever dh is — and dQ += dS·K: rows × 16-column
// vectors when dh ≥ 16; for the narrow heads (dh < 16) as 16-lane partial sums over the keys per (row, column),
// reduced once per query tile. One thread computes a unit in a fixed order: results do not depend on the
// thread count.
namespace {

// c(4 rows, 64 cols, stride ldc) += Σ_{i<n} a[i·lda + r] · p[i·64 + j]   (r = row, j = col)
OBORO_ATTN_AVX512 inline void tgrad_4x64(float* c, size_t ldc, const float* a, int lda, const float* p, int n) {
  __m512 acc[4][4];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) acc[r][t] = _mm512_loadu_ps(c + r * ldc + 16 * t);
  for (int i = 0; i < n; ++i) {
    const float* pi = p + (size_t)i * kFk;
    const __m512 b0 = _mm512_loadu_ps(pi), b1 = _mm512_loadu_ps(pi + 16), b2 = _mm512_loadu_ps(pi + 32),
                 b3 = _mm512_loadu_ps(pi + 48);
    const float* ai = a + (size_t)i * lda;
    for (int r = 0; r < 4; ++r) {
      const __m512 x = _mm512_set1_ps(ai[r]);
      acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) _mm512_storeu_ps(c + r * ldc + 16 * t, acc[r][t]);
}

// lanes(4 rows, dh4, 16) += ds(4 rows, 64) ⊙ kblk(dh4, 64), the 64 keys folded onto 16 lanes (4 vectors in order)
OBORO_ATTN_AVX512 inline void dq_lanes_4(float* lanes, const float* ds, const float* kblk, int dh4) {
  __m512 s[4][4];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) s[r][t] = _mm512_loadu_ps(ds + r * kFk + 16 * t);
  for (int d = 0; d < dh4; ++d) {
    const float* kd = kblk + (size_t)d * kFk;
    const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16), k2 = _mm512_loadu_ps(kd + 32),
                 k3 = _mm512_loadu_ps(kd + 48);
    for (int r = 0; r < 4; ++r) {
      float* l = lanes + ((size_t)r * dh4 + d) * 16;
      __m512 x = _mm512_loadu_ps(l);
      x = _mm512_fmadd_ps(s[r][0], k0, x);
      x = _mm512_fmadd_ps(s[r][1], k1, x);
      x = _mm512_fmadd_ps(s[r][2], k2, x);
      x = _mm512_fmadd_ps(s[r][3], k3, x);
      _mm512_storeu_ps(l, x);
    }
  }
}

OBORO_ATTN_AVX512 void attention_backward_avx512_units(int64_t u0, int64_t u1, float* dq, float* dk, float* dv,
                                                       const float* dout, const float* q, const float* k,
                                                       const float* v, const float* o, const float* lse,
                                                       const float* key_valid, int S, int H, int dh, float scale,
                                                       const float* rel_bias, double* drel) {
  const int D = H * dh;
  const size_t R = (size_t)2 * S - 1;
  const int dh4 = (dh + 3) / 4 * 4, dhp = (dh + 15) / 16 * 16;
  const bool narrow = dh < 16;
  const int Sq = (S + kFq - 1) / kFq * kFq, Sk = (S + kFk - 1) / kFk * kFk;
  std::vector<float> qs((size_t)Sq * dh4), go((size_t)Sq * dh4), kd((size_t)Sk * dh4), vd((size_t)Sk * dh4);
  std::vector<float> kr(narrow ? 0 : (size_t)Sk * dhp), kb(Sk), delta(Sq);
  std::vector<float> gkt((size_t)dh4 * Sk), gvt((size_t)dh4 * Sk), gq((size_t)Sq * dhp);
  std::vector<float> pt(kFq * kFk), dst(kFq * kFk), lanes(narrow ? (size_t)kFq * dh4 * 16 : 0);
  std::vector<float> ones(kFq, 1.f);
  for (int64_t u = u0; u < u1; ++u) {
    const int b = (int)(u / H), h = (int)(u % H);
    const size_t bo = (size_t)b * S * D;
    const float* valid = key_valid ? key_valid + (size_t)b * S : nullptr;
    const float* L = lse + ((size_t)b * H + h) * S;
    const float* rel = rel_bias ? rel_bias + (size_t)h * R : nullptr;
    double* gr = drel ? drel + (size_t)u * R : nullptr;
    std::fill(qs.begin(), qs.end(), 0.f);
    std::fill(go.begin(), go.end(), 0.f);
    std::fill(kd.begin(), kd.end(), 0.f);
    std::fill(vd.begin(), vd.end(), 0.f);
    std::fill(kr.begin(), kr.end(), 0.f);
    std::fill(gkt.begin(), gkt.end(), 0.f);
    std::fill(gvt.begin(), gvt.end(), 0.f);
    std::fill(gq.begin(), gq.end(), 0.f);
    for (int s = 0; s < S; ++s) {
      const size_t off = bo + (size_t)s * D + (size_t)h * dh;
      float* kds = kd.data() + (size_t)(s / kFk) * kFk * dh4 + (s % kFk);
      float* vds = vd.data() + (size_t)(s / kFk) * kFk * dh4 + (s % kFk);
      double dl = 0;  // delta_s = dO_s · O_s
      for (int d = 0; d < dh; ++d) {
        qs[(size_t)s * dh4 + d] = q[off + d] * scale;  // scale folded into Q
        go[(size_t)s * dh4 + d] = dout[off + d];
        kds[(size_t)d * kFk] = k[off + d];
        vds[(size_t)d * kFk] = v[off + d];
        if (!narrow) kr[(size_t)s * dhp + d] = k[off + d];
        dl += (double)dout[off + d] * o[off + d];
      }
      delta[s] = (float)dl;
    }
    for (int j = 0; j < Sk; ++j) kb[j] = (j < S && (!valid || valid[j] != 0.f)) ? 0.f : kNegInf;
    for (int i0 = 0; i0 < S; i0 += kFq) {
      const int nq = std::min(kFq, S - i0);
      const int nq4 = (nq + 3) / 4 * 4;
      if (narrow) std::fill(lanes.begin(), lanes.end(), 0.f);
      for (int j0 = 0; j0 < Sk; j0 += kFk) {
        const int nk = std::min(kFk, S - j0);
        const float* kblk = kd.data() + (size_t)j0 * dh4;
        const float* vblk = vd.data() + (size_t)j0 * dh4;
        for (int i = 0; i < nq4; i += 4) {
          score_4x64(pt.data() + i * kFk, qs.data() + (size_t)(i0 + i) * dh4, kblk, dh4);
          score_4x64(dst.data() + i * kFk, go.data() + (size_t)(i0 + i) * dh4, vblk, dh4);
        }
        for (int i = 0; i < nq4; ++i) {
          float* prow = pt.data() + i * kFk;
          float* drow = dst.data() + i * kFk;
          const float li = i < nq ? L[i0 + i] : kNegInf;
          if (li == kNegInf) {  // a padding row, or every key masked: P = dS = 0
            for (int j = 0; j < kFk; ++j) prow[j] = drow[j] = 0.f;
            continue;
          }
          if (rel) {
            const float* rb = rel + (j0 - (i0 + i) + S - 1);
            for (int j = 0; j < nk; ++j) prow[j] += rb[j];
          }
          const __m512 vl = _mm512_set1_ps(li), vd_ = _mm512_set1_ps(delta[i0 + i]);
          for (int t = 0; t < 4; ++t) {
            const __m512 p = exp16(_mm512_sub_ps(_mm512_add_ps(_mm512_loadu_ps(prow + 16 * t),
                                                               _mm512_loadu_ps(kb.data() + j0 + 16 * t)), vl));
            _mm512_storeu_ps(prow + 16 * t, p);
            _mm512_storeu_ps(drow + 16 * t, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(drow + 16 * t), vd_)));
          }
          if (gr) {  // the bias enters the score additively: d rel[j − i] += dS_ij
            double* g = gr + (j0 - (i0 + i) + S - 1);
            for (int j = 0; j < nk; ++j) g[j] += drow[j];
          }
        }
        for (int d0 = 0; d0 < dh4; d0 += 4) {
          tgrad_4x64(gvt.data() + (size_t)d0 * Sk + j0, Sk, go.data() + (size_t)i0 * dh4 + d0, dh4, pt.data(), nq);
          tgrad_4x64(gkt.data() + (size_t)d0 * Sk + j0, Sk, qs.data() + (size_t)i0 * dh4 + d0, dh4, dst.data(), nq);
        }
        if (narrow) {
          for (int i = 0; i < nq4; i += 4)
            dq_lanes_4(lanes.data() + (size_t)i * dh4 * 16, dst.data() + i * kFk, kblk, dh4);
          continue;
        }
        const float* kblkr = kr.data() + (size_t)j0 * dhp;
        for (int c0 = 0; c0 < dhp; c0 += 64) {
          const int nv = std::min(4, (dhp - c0) / 16);
          float* a = gq.data() + (size_t)i0 * dhp + c0;
          const float* kb_ = kblkr + c0;
          switch (nv) {
            case 1:
              for (int i = 0; i < nq4; i += 4) pv_kernel<4, 1>(a + (size_t)i * dhp, dhp, dst.data() + i * kFk, kb_, dhp, ones.data());
              break;
            case 2:
              for (int i = 0; i < nq4; i += 4) pv_kernel<4, 2>(a + (size_t)i * dhp, dhp, dst.data() + i * kFk, kb_, dhp, ones.data());
              break;
            case 3:
              for (int i = 0; i < nq4; i += 4) pv_kernel<4, 3>(a + (size_t)i * dhp, dhp, dst.data() + i * kFk, kb_, dhp, ones.data());
              break;
            default:
              for (int i = 0; i < nq4; i += 4) pv_kernel<4, 4>(a + (size_t)i * dhp, dhp, dst.data() + i * kFk, kb_, dhp, ones.data());
              break;
          }
        }
      }
      if (narrow)
        for (int i = 0; i < nq; ++i)
          for (int d = 0; d < dh; ++d)
            gq[(size_t)(i0 + i) * dhp + d] = _mm512_reduce_add_ps(_mm512_loadu_ps(lanes.data() + ((size_t)i * dh4 + d) * 16));
    }
    for (int s = 0; s < S; ++s) {
      const size_t off = bo + (size_t)s * D + (size_t)h * dh;
      for (int d = 0; d < dh; ++d) {
        if (dq) dq[off + d] += gq[(size_t)s * dhp + d] * scale;
        if (dk) dk[off + d] += gkt[(size_t)d * Sk + s];
        if (dv) dv[off + d] += gvt[(size_t)d * Sk + s];
      }
    }
  }
}

}  // namespace
#endif  // OBORO_ATTN_X86

// ---------------------------------------------------------------------------------------------
// BF16 forward (AttnPrecision::BF16, ops/backend.h). Same tiling and online softmax as the F32 kernel above, with
// both products through BF16 pairs:
//   - Q is scaled in F32 (q·scale) and then rounded; K and V are rounded as they are. Rounding is nearest-even
//     (f32_to_bf16 in the portable path; vcvtne2ps2bf16, as in the qgemm code's rows_to_bf16, in the AVX-512 one:
//     the same rounding) after flushing subnormal inputs to zero — vdpbf16ps treats subnormal BF16 inputs as
//     zero, so both paths see the same values. Head dims are padded with zeros to an
//     even count (pairs) and, for V, to a multiple of 16 columns; any dh works.
//   - scores: s_ij = Σ over pairs p of (q[2p+1]·k[2p+1], then q[2p]·k[2p]) accumulated in F32 — the order of
//     vdpbf16ps (each BF16×BF16 product is exact in F32, so each step is one rounding); the relative bias and the
//     key mask (−inf) are added in F32, then the running max, P = exp(s − max) (exp16's scheme with a degree-5
//     polynomial, exp_bf16path), P rounded to BF16, the row sum over the rounded P (so o is an exactly normalised
//     average of the rounded V rows; the AVX-512 kernel keeps 16-lane partial sums per row and reduces them once
//     per query tile), and acc = acc·corr + P̃·Ṽ in F32, pairs of keys in the same odd-then-even order.
//   - lse = max + log(Σ P̃) (F32).
// Panels per (batch, head) unit: Q (Sq, dhe) BF16 row-major, dhe = dh rounded up to even; K per 64-key block
// [dhe/2][64][2]; V [Sk/2][dhp][2] (key pairs interleaved per column); the P tile (32, 64) BF16 row-major.
// Every output element is computed by one thread in a fixed order: identical results for any thread count.
// The portable path runs the same loops in scalar code (std::fma); it agrees with the AVX-512 one to float
// rounding (the row sums are reduced in a different order; vdpbf16ps also flushes subnormal results).
namespace {

// x → BF16 (nearest even); subnormal inputs flush to zero first (see above).
inline uint16_t round_bf16(float x) {
  if (std::fabs(x) < std::numeric_limits<float>::min()) x = 0.f;
  return f32_to_bf16(x);
}
inline float bf16_value(float x) { return bf16_to_f32(round_bf16(x)); }

// e^x for the BF16 path: exp16's scheme (x = n·ln2 + r, |r| ≤ ln2/2, 2^n exactly) with a degree-5 Taylor polynomial
// (relative error < 3.3e-6 before rounding, far below the 2^-9 of the BF16 rounding that follows); x < −87 (−inf included) gives 0.
// Written with std::fma, step for step as exp16_bf, so the two paths agree bit for bit.
inline float exp_bf16path(float x) {
  const float v = std::max(x, -87.0f);
  const float kf = std::nearbyint(v * 1.44269504088896341f);
  float r = std::fma(-kf, 0.693145751953125f, v);
  r = std::fma(-kf, 1.42860682030941723e-6f, r);
  float p = 1.f / 120;
  p = std::fma(p, r, 1.f / 24);
  p = std::fma(p, r, 1.f / 6);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.f);
  p = std::fma(p, r, 1.f);
  const int32_t e = ((int32_t)kf + 127) << 23;
  const float y = p * std::bit_cast<float>(e);
  return x < -87.0f ? 0.f : y;
}

// corr = exp(m_old − m_new); exactly 1 when the max did not move (std::exp(0) is 1, this skips the call).
inline float rescale(float m_old, float m_new) { return m_old == m_new ? 1.f : std::exp(m_old - m_new); }

constexpr int kHq = 32;  // query rows per tile
constexpr int kPrefetchRows = 6;  // rows ahead prefetched while packing a unit
constexpr int kHk = 64;  // keys per block

}  // namespace

void attention_forward_bf16_portable(float* o, float* lse, const float* q, const float* k, const float* v,
                                     const float* key_valid, int B, int S, int H, int dh, float scale,
                                     const float* rel_bias) {
  const int D = H * dh;
  const int dh2 = (dh + 1) / 2, dhe = 2 * dh2;
  parallel_for((int64_t)B * H, [&](int64_t u0, int64_t u1) {
    // rounded values as floats: q, k (S, dhe) zero-padded; v (S, dh)
    std::vector<float> qf((size_t)S * dhe), kf((size_t)S * dhe), vf((size_t)S * dh);
    std::vector<float> sc(kHq * kHk), acc((size_t)kHq * dh), m(kHq), l(kHq);
    for (int64_t u = u0; u < u1; ++u) {
      const int b = (int)(u / H), h = (int)(u % H);
      const size_t bo = (size_t)b * S * D;
      const float* valid = key_valid ? key_valid + (size_t)b * S : nullptr;
      const float* rel = rel_bias ? rel_bias + (size_t)h * (2 * S - 1) : nullptr;
      std::fill(qf.begin(), qf.end(), 0.f);
      std::fill(kf.begin(), kf.end(), 0.f);
      for (int s = 0; s < S; ++s) {
        const size_t off = bo + (size_t)s * D + (size_t)h * dh;
        for (int d = 0; d < dh; ++d) {
          qf[(size_t)s * dhe + d] = bf16_value(q[off + d] * scale);
          kf[(size_t)s * dhe + d] = bf16_value(k[off + d]);
          vf[(size_t)s * dh + d] = bf16_value(v[off + d]);
        }
      }
      for (int i0 = 0; i0 < S; i0 += kHq) {
        const int nq = std::min(kHq, S - i0);
        std::fill(m.begin(), m.end(), kNegInf);
        std::fill(l.begin(), l.end(), 0.f);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int j0 = 0; j0 < S; j0 += kHk) {
          const int nk = std::min(kHk, S - j0);
          for (int i = 0; i < nq; ++i) {
            float* row = sc.data() + i * kHk;
            const float* qi = qf.data() + (size_t)(i0 + i) * dhe;
            for (int j = 0; j < nk; ++j) {
              const float* kj = kf.data() + (size_t)(j0 + j) * dhe;
              float s = 0.f;
              for (int p = 0; p < dh2; ++p) {
                s = std::fma(qi[2 * p + 1], kj[2 * p + 1], s);
                s = std::fma(qi[2 * p], kj[2 * p], s);
              }
              if (rel) s += rel[j0 + j - (i0 + i) + S - 1];
              if (valid && valid[j0 + j] == 0.f) s = kNegInf;
              row[j] = s;
            }
            float mx = m[i];
            for (int j = 0; j < nk; ++j) mx = std::max(mx, row[j]);
            if (mx == kNegInf) continue;  // every key so far masked: P = 0, acc stays 0
            float sum = 0.f;
            for (int j = 0; j < nk; ++j) {
              row[j] = bf16_value(exp_bf16path(row[j] - mx));
              sum += row[j];
            }
            const float cr = rescale(m[i], mx);
            l[i] = l[i] * cr + sum;
            m[i] = mx;
            float* a = acc.data() + (size_t)i * dh;
            for (int d = 0; d < dh; ++d) {
              float x = a[d] * cr;
              for (int j = 0; j < nk; j += 2) {
                if (j + 1 < nk) x = std::fma(row[j + 1], vf[(size_t)(j0 + j + 1) * dh + d], x);
                x = std::fma(row[j], vf[(size_t)(j0 + j) * dh + d], x);
              }
              a[d] = x;
            }
          }
        }
        for (int i = 0; i < nq; ++i) {
          const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
          float* orow = o + bo + (size_t)(i0 + i) * D + (size_t)h * dh;
          const float* a = acc.data() + (size_t)i * dh;
          for (int d = 0; d < dh; ++d) orow[d] = a[d] * inv;
          lse[((size_t)b * H + h) * S + i0 + i] = l[i] > 0.f ? m[i] + std::log(l[i]) : kNegInf;
        }
      }
    }
  }, 1);
}

#if OBORO_ATTN_X86
#define OBORO_ATTN_BF16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma")))
namespace {

bool detect_attn_bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("fma");
}

inline uint32_t load_pair(const uint16_t* p) {
  uint32_t x;
  std::memcpy(&x, p, 4);
  return x;
}

// exp_bf16path on 16 lanes (2^n by vscalefps: exact, like the exponent-bits multiply of exp16).
OBORO_ATTN_BF16 inline __m512 exp16_bf(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  __m512 v = _mm512_max_ps(x, lo);
  __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693145751953125f), v);
  r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(1.f / 120);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  __m512 y = _mm512_scalef_ps(p, kf);
  __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  return _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
}

// dst[0, n) = round_bf16(src[d]·mul) — 32 values per vcvtne2ps2bf16 (nearest even, like f32_to_bf16), subnormal
// products flushed to zero first as round_bf16 does; x·mul is the same IEEE product as the scalar path's.
OBORO_ATTN_BF16 inline void row_to_bf16(uint16_t* dst, const float* src, int n, float mul) {
  const __m512 vm = _mm512_set1_ps(mul), tiny = _mm512_set1_ps(std::numeric_limits<float>::min());
  auto prep = [&](__m512 x) OBORO_ATTN_BF16 {
    x = _mm512_mul_ps(x, vm);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(x), tiny, _CMP_LT_OQ), x, _mm512_setzero_ps());
  };
  for (int d = 0; d < n; d += 32) {
    const int rem = n - d;
    const __mmask16 m0 = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
    const __mmask16 m1 = rem >= 32 ? (__mmask16)0xFFFF : rem > 16 ? (__mmask16)((1u << (rem - 16)) - 1) : (__mmask16)0;
    const __m512 x0 = prep(_mm512_maskz_loadu_ps(m0, src + d)), x1 = prep(_mm512_maskz_loadu_ps(m1, src + d + 16));
    const __m512i b = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
    _mm512_mask_storeu_epi16(dst + d, rem >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << rem) - 1), b);
  }
}

// sc(4, 64) = q(4 rows, stride ldq, dh2 pairs) · kblk [dh2][64][2]
OBORO_ATTN_BF16 inline void score16_4x64(float* sc, const uint16_t* q, int ldq, const uint16_t* kblk, int dh2) {
  __m512 c[4][4];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) c[r][t] = _mm512_setzero_ps();
  for (int p = 0; p < dh2; ++p) {
    const uint16_t* kp = kblk + (size_t)p * 2 * kHk;
    __m512bh b[4];
    for (int t = 0; t < 4; ++t) b[t] = (__m512bh)_mm512_loadu_si512(kp + 32 * t);
    for (int r = 0; r < 4; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)load_pair(q + (size_t)r * ldq + 2 * p));
      for (int t = 0; t < 4; ++t) c[r][t] = _mm512_dpbf16_ps(c[r][t], a, b[t]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) _mm512_storeu_ps(sc + r * kHk + t * 16, c[r][t]);
}

// acc(MR rows, NV·16 cols, stride lda) = acc·corr[r] + p(MR, 64 BF16) · v(32 key pairs, stride ldv u16, [dhp][2])
template <int MR, int NV>
OBORO_ATTN_BF16 inline void pv16_kernel(float* acc, int lda, const uint16_t* p, const uint16_t* v, int ldv,
                                        const float* corr) {
  __m512 c[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const __m512 cr = _mm512_set1_ps(corr[r]);
    for (int t = 0; t < NV; ++t) c[r][t] = _mm512_mul_ps(_mm512_loadu_ps(acc + (size_t)r * lda + t * 16), cr);
  }
  for (int jp = 0; jp < kHk / 2; ++jp) {
    const uint16_t* vj = v + (size_t)jp * ldv;
    __m512bh b[NV];
    for (int t = 0; t < NV; ++t) b[t] = (__m512bh)_mm512_loadu_si512(vj + t * 32);
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)load_pair(p + r * kHk + 2 * jp));
      for (int t = 0; t < NV; ++t) c[r][t] = _mm512_dpbf16_ps(c[r][t], a, b[t]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < NV; ++t) _mm512_storeu_ps(acc + (size_t)r * lda + t * 16, c[r][t]);
}

OBORO_ATTN_BF16 void attention_forward_bf16_units(int64_t w0, int64_t w1, int nch, float* o, float* lse,
                                                  const float* q, const float* k, const float* v,
                                                  const float* key_valid, int S, int H, int dh, float scale,
                                                  const float* rel_bias) {
  const int D = H * dh;
  const int dh2 = (dh + 1) / 2, dhe = 2 * dh2;
  const int dhp = (dh + 15) / 16 * 16;
  const int Sq = (S + 7) / 8 * 8;
  const int Sk = (S + kHk - 1) / kHk * kHk;
  std::vector<uint16_t> qp((size_t)Sq * dhe), kp((size_t)Sk * dhe), vp((size_t)Sk * dhp), pb(kHq * kHk);
  std::vector<float> kb(Sk), sc(kHq * kHk), acc((size_t)kHq * dhp), m(kHq), l(kHq), corr(kHq);
  std::vector<float> lv(kHq * 16);  // per-row sums of the rounded P, 16 lanes (reduced once per query tile)
  std::vector<uint16_t> krow(dhe), vrow(dhe);
  int64_t packed = -1;
  for (int64_t w = w0; w < w1; ++w) {
    const int64_t u = w / nch;
    const QueryRange qr = query_range(S, kHq, (int)(w % nch), nch);
    const int b = (int)(u / H), h = (int)(u % H);
    const size_t bo = (size_t)b * S * D;
    const float* valid = key_valid ? key_valid + (size_t)b * S : nullptr;
    const float* rel = rel_bias ? rel_bias + (size_t)h * (2 * S - 1) : nullptr;
    if (u != packed) {  // pack (once per unit: a thread's items are contiguous)
    packed = u;
    std::fill(qp.begin(), qp.end(), (uint16_t)0);
    std::fill(kp.begin(), kp.end(), (uint16_t)0);
    std::fill(vp.begin(), vp.end(), (uint16_t)0);
    for (int s = 0; s < S; ++s) {
      const size_t off = bo + (size_t)s * D + (size_t)h * dh;
      uint16_t* qd = qp.data() + (size_t)s * dhe;
      uint16_t* kd = kp.data() + (size_t)(s / kHk) * kHk * dhe + (size_t)(s % kHk) * 2;
      uint16_t* vd = vp.data() + (size_t)(s / 2) * dhp * 2 + (s & 1);
      if (s + kPrefetchRows < S) {  // the rows are D floats apart: fetch a few ahead (the gather is latency-bound)
        const size_t pf = off + (size_t)kPrefetchRows * D;
        for (int d = 0; d < dh; d += 16) {
          _mm_prefetch((const char*)(q + pf + d), _MM_HINT_T0);
          _mm_prefetch((const char*)(k + pf + d), _MM_HINT_T0);
          _mm_prefetch((const char*)(v + pf + d), _MM_HINT_T0);
        }
      }
      row_to_bf16(qd, q + off, dh, scale);
      row_to_bf16(krow.data(), k + off, dh, 1.f);
      row_to_bf16(vrow.data(), v + off, dh, 1.f);
      for (int d = 0; d < dh; ++d) {
        kd[(size_t)(d / 2) * 2 * kHk + (d & 1)] = krow[d];
        vd[(size_t)d * 2] = vrow[d];
      }
    }
    for (int j = 0; j < Sk; ++j) kb[j] = (j < S && (!valid || valid[j] != 0.f)) ? 0.f : kNegInf;
    }
    for (int i0 = qr.begin; i0 < qr.end; i0 += kHq) {
      const int nq = std::min(kHq, S - i0);
      const int nq4 = (nq + 3) / 4 * 4, nq8 = (nq + 7) / 8 * 8;  // within Sq
      std::fill(m.begin(), m.end(), kNegInf);
      std::fill(lv.begin(), lv.end(), 0.f);
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int j0 = 0; j0 < Sk; j0 += kHk) {
        const int nk = std::min(kHk, S - j0);
        const uint16_t* kblk = kp.data() + (size_t)j0 * dhe;
        for (int i = 0; i < nq4; i += 4)
          score16_4x64(sc.data() + i * kHk, qp.data() + (size_t)(i0 + i) * dhe, dhe, kblk, dh2);
        const __m512 kb0 = _mm512_loadu_ps(kb.data() + j0), kb1 = _mm512_loadu_ps(kb.data() + j0 + 16),
                     kb2 = _mm512_loadu_ps(kb.data() + j0 + 32), kb3 = _mm512_loadu_ps(kb.data() + j0 + 48);
        const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
        for (int i = 0; i < nq8; ++i) {
          float* row = sc.data() + i * kHk;
          uint16_t* prow = pb.data() + i * kHk;
          if (i >= nq) {  // padding rows: no contribution
            _mm512_storeu_si512(prow, _mm512_setzero_si512());
            _mm512_storeu_si512(prow + 32, _mm512_setzero_si512());
            corr[i] = 1.f;
            continue;
          }
          if (rel) {
            const float* rb = rel + (j0 - (i0 + i) + S - 1);
            if (nk == kHk)
              for (int t = 0; t < 4; ++t)
                _mm512_storeu_ps(row + 16 * t, _mm512_add_ps(_mm512_loadu_ps(row + 16 * t), _mm512_loadu_ps(rb + 16 * t)));
            else
              for (int j = 0; j < nk; ++j) row[j] += rb[j];
          }
          __m512 s0 = _mm512_add_ps(_mm512_loadu_ps(row), kb0), s1 = _mm512_add_ps(_mm512_loadu_ps(row + 16), kb1),
                 s2 = _mm512_add_ps(_mm512_loadu_ps(row + 32), kb2),
                 s3 = _mm512_add_ps(_mm512_loadu_ps(row + 48), kb3);
          const float bm = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(s0, s1), _mm512_max_ps(s2, s3)));
          const float mx = std::max(m[i], bm);
          if (mx == kNegInf) {  // every key so far masked: P = 0, acc stays 0
            _mm512_storeu_si512(prow, _mm512_setzero_si512());
            _mm512_storeu_si512(prow + 32, _mm512_setzero_si512());
            corr[i] = 1.f;
            continue;
          }
          const __m512 vm = _mm512_set1_ps(mx);
          s0 = exp16_bf(_mm512_sub_ps(s0, vm)), s1 = exp16_bf(_mm512_sub_ps(s1, vm));
          s2 = exp16_bf(_mm512_sub_ps(s2, vm)), s3 = exp16_bf(_mm512_sub_ps(s3, vm));
          // P → BF16 pairs (nearest even; lane order: keys 0..15 of s0, then s1)
          const __m512i p01 = (__m512i)_mm512_cvtne2ps_pbh(s1, s0), p23 = (__m512i)_mm512_cvtne2ps_pbh(s3, s2);
          _mm512_storeu_si512(prow, p01);
          _mm512_storeu_si512(prow + 32, p23);
          // Σ P̃: even keys are the low halves of the dwords (shift up), odd keys the high halves (mask)
          const __m512 e01 = _mm512_castsi512_ps(_mm512_slli_epi32(p01, 16)),
                       o01 = _mm512_castsi512_ps(_mm512_and_si512(p01, hi)),
                       e23 = _mm512_castsi512_ps(_mm512_slli_epi32(p23, 16)),
                       o23 = _mm512_castsi512_ps(_mm512_and_si512(p23, hi));
          const __m512 part = _mm512_add_ps(_mm512_add_ps(e01, o01), _mm512_add_ps(e23, o23));
          const float cr = rescale(m[i], mx);
          corr[i] = cr;
          _mm512_storeu_ps(lv.data() + i * 16, _mm512_fmadd_ps(_mm512_loadu_ps(lv.data() + i * 16), _mm512_set1_ps(cr), part));
          m[i] = mx;
        }
        const uint16_t* vblk = vp.data() + (size_t)j0 * dhp;  // (j0/2) pairs × dhp × 2
        const int ldv = 2 * dhp;
        for (int c0 = 0; c0 < dhp; c0 += 64) {
          const int nv = std::min(4, (dhp - c0) / 16);
          float* a = acc.data() + c0;
          const uint16_t* vb = vblk + 2 * c0;
          switch (nv) {
            case 1:
              for (int i = 0; i < nq8; i += 8) pv16_kernel<8, 1>(a + (size_t)i * dhp, dhp, pb.data() + i * kHk, vb, ldv, corr.data() + i);
              break;
            case 2:
              for (int i = 0; i < nq8; i += 8) pv16_kernel<8, 2>(a + (size_t)i * dhp, dhp, pb.data() + i * kHk, vb, ldv, corr.data() + i);
              break;
            case 3:
              for (int i = 0; i < nq8; i += 4) pv16_kernel<4, 3>(a + (size_t)i * dhp, dhp, pb.data() + i * kHk, vb, ldv, corr.data() + i);
              break;
            default:
              for (int i = 0; i < nq8; i += 4) pv16_kernel<4, 4>(a + (size_t)i * dhp, dhp, pb.data() + i * kHk, vb, ldv, corr.data() + i);
              break;
          }
        }
      }
      for (int i = 0; i < nq; ++i) l[i] = _mm512_reduce_add_ps(_mm512_loadu_ps(lv.data() + i * 16));
      for (int i = 0; i < nq; ++i) {
        const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
        float* orow = o + bo + (size_t)(i0 + i) * D + (size_t)h * dh;
        const float* a = acc.data() + (size_t)i * dhp;
        for (int d = 0; d < dh; ++d) orow[d] = a[d] * inv;
        lse[((size_t)b * H + h) * S + i0 + i] = l[i] > 0.f ? m[i] + std::log(l[i]) : kNegInf;
      }
    }
  }
}

}  // namespace
#endif  // OBORO_ATTN_X86

bool attention_bf16_available() {
#if OBORO_ATTN_X86
  static const bool ok = detect_attn_bf16();
  return ok;
#else
  return false;
#endif
}

void attention_forward_bf16(float* o, float* lse, const float* q, const float* k, const float* v,
                            const float* key_valid, int B, int S, int H, int dh, float scale,
                            const float* rel_bias) {
#if OBORO_ATTN_X86
  if (attention_bf16_available() && !g_attn_force_generic.load()) {
    const int nch = query_chunks(B * H, S, kHq);
    parallel_for((int64_t)B * H * nch, [&](int64_t w0, int64_t w1) {
      attention_forward_bf16_units(w0, w1, nch, o, lse, q, k, v, key_valid, S, H, dh, scale, rel_bias);
    }, 1);
    return;
  }
#endif
  attention_forward_bf16_portable(o, lse, q, k, v, key_valid, B, S, H, dh, scale, rel_bias);
}

bool attention_avx512_available() {
#if OBORO_ATTN_X86
  static const bool ok = detect_attn_avx512();
  return ok;
#else
  return false;
#endif
}

bool attention_force_generic(bool on) {
#if OBORO_ATTN_X86
  return g_attn_force_generic.exchange(on);
#else
  (void)on;
  return false;
#endif
}

void attention_forward_tiled(float* o, float* lse, const float* q, const float* k, const float* v,
                             const float* key_valid, int B, int S, int H, int dh, float scale,
                             const float* rel_bias) {
#if OBORO_ATTN_X86
  if (attention_avx512_available() && !g_attn_force_generic.load()) {
    attention_forward_avx512(o, lse, q, k, v, key_valid, B, S, H, dh, scale, rel_bias);
    return;
  }
#endif
  attention_forward_generic(o, lse, q, k, v, key_valid, B, S, H, dh, scale, rel_bias);
}

void attention_backward_tiled(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* key_valid, int B, int S,
                              int H, int dh, float scale, const float* rel_bias, float* d_rel_bias) {
  const int D = H * dh;
  const size_t R = (size_t)2 * S - 1;  // relative offsets j − i + S − 1
  std::vector<double> drel(d_rel_bias ? (size_t)B * H * R : 0);  // one row per (b, h) unit
#if OBORO_ATTN_X86
  if (attention_avx512_available() && !g_attn_force_generic.load()) {
    parallel_for((int64_t)B * H, [&](int64_t u0, int64_t u1) {
      attention_backward_avx512_units(u0, u1, dq, dk, dv, dout, q, k, v, o, lse, key_valid, S, H, dh, scale,
                                      rel_bias, d_rel_bias ? drel.data() : nullptr);
    }, 1);
  } else
#endif
  parallel_for((int64_t)B * H, [&](int64_t u0, int64_t u1) {
    Panels P;
    P.q.resize((size_t)S * dh);
    P.kt.resize((size_t)S * dh);
    const bool small = dh < kSmallDh;
    P.kr.resize((size_t)S * dh);  // small: unused (dQ reads kt)
    P.vt.resize((size_t)S * dh);
    P.dout.resize((size_t)S * dh);
    std::vector<float> gq((size_t)S * dh), gk((size_t)S * dh), gv((size_t)S * dh), delta(S);
    std::vector<float> pt(kBq * kBk), dpt(kBq * kBk);
    for (int64_t u = u0; u < u1; ++u) {
      int b = (int)(u / H), h = (int)(u % H);
      size_t bo = (size_t)b * S * D;
      const float* valid = key_valid ? key_valid + (size_t)b * S : nullptr;
      const float* L = lse + ((size_t)b * H + h) * S;
      const float* rel = rel_bias ? rel_bias + (size_t)h * R : nullptr;
      double* gr = d_rel_bias ? drel.data() + (size_t)u * R : nullptr;
      gather_rows(P.q.data(), q + bo, S, D, h, dh, scale);
      gather_cols(P.kt.data(), k + bo, S, D, h, dh);
      if (!small) gather_rows(P.kr.data(), k + bo, S, D, h, dh);
      gather_cols(P.vt.data(), v + bo, S, D, h, dh);
      gather_rows(P.dout.data(), dout + bo, S, D, h, dh);
      for (int s = 0; s < S; ++s) {  // delta_i = dO_i · O_i
        const float* orow = o + bo + (size_t)s * D + (size_t)h * dh;
        const float* g = P.dout.data() + (size_t)s * dh;
        double acc = 0;
        for (int d = 0; d < dh; ++d) acc += (double)g[d] * orow[d];
        delta[s] = (float)acc;
      }
      std::fill(gq.begin(), gq.end(), 0.f);
      std::fill(gk.begin(), gk.end(), 0.f);
      std::fill(gv.begin(), gv.end(), 0.f);
      for (int i0 = 0; i0 < S; i0 += kBq) {
        int nq = std::min(kBq, S - i0);
        for (int j0 = 0; j0 < S; j0 += kBk) {
          int nk = std::min(kBk, S - j0);
          // P = exp(scores − lse); dP = dO · Vᵀ
          score_tile(pt.data(), P.q.data() + (size_t)i0 * dh, nq, P.kt.data(), S, i0, j0, nk, dh, valid, rel);
          score_tile(dpt.data(), P.dout.data() + (size_t)i0 * dh, nq, P.vt.data(), S, i0, j0, nk, dh, nullptr,
                     nullptr);
          for (int i = 0; i < nq; ++i) {
            float li = L[i0 + i];
            float* prow = pt.data() + i * kBk;
            float* dprow = dpt.data() + i * kBk;
            float di = delta[i0 + i];
            if (li == kNegInf) {
              for (int j = 0; j < nk; ++j) prow[j] = 0.f;
            } else {
              for (int j = 0; j < nk; ++j) prow[j] -= li;
              exp_row(prow, nk);
            }
            for (int j = 0; j < nk; ++j) dprow[j] = prow[j] * (dprow[j] - di);  // dS (w.r.t. the biased scores)
            if (gr) {  // the bias enters the score additively: d rel[j − i] += dS_ij
              double* g = gr + (j0 - (i0 + i) + S - 1);
              for (int j = 0; j < nk; ++j) g[j] += dprow[j];
            }
          }
          if (small) {  // gk, gv held transposed (dh, S): every update runs over keys
            for (int i = 0; i < nq; ++i) {
              const float* prow = pt.data() + i * kBk;
              const float* dsrow = dpt.data() + i * kBk;
              const float* gi = P.dout.data() + (size_t)(i0 + i) * dh;
              const float* qi = P.q.data() + (size_t)(i0 + i) * dh;
              float* gqi = gq.data() + (size_t)(i0 + i) * dh;
              for (int d = 0; d < dh; ++d) {
                float* gvd = gv.data() + (size_t)d * S + j0;
                float* gkd = gk.data() + (size_t)d * S + j0;
                const float g = gi[d], qd = qi[d];
                for (int j = 0; j < nk; ++j) {
                  gvd[j] += prow[j] * g;
                  gkd[j] += dsrow[j] * qd;
                }
                gqi[d] += dot16(dsrow, P.kt.data() + (size_t)d * S + j0, nk);
              }
            }
            continue;
          }
          for (int i = 0; i < nq; ++i) {
            const float* prow = pt.data() + i * kBk;
            const float* dsrow = dpt.data() + i * kBk;
            const float* gi = P.dout.data() + (size_t)(i0 + i) * dh;
            const float* qi = P.q.data() + (size_t)(i0 + i) * dh;  // already scaled
            float* gqi = gq.data() + (size_t)(i0 + i) * dh;
            for (int j = 0; j < nk; ++j) {
              float p = prow[j], ds = dsrow[j];
              float* gvj = gv.data() + (size_t)(j0 + j) * dh;
              float* gkj = gk.data() + (size_t)(j0 + j) * dh;
              const float* kj = P.kr.data() + (size_t)(j0 + j) * dh;
              for (int d = 0; d < dh; ++d) {
                gvj[d] += p * gi[d];
                gkj[d] += ds * qi[d];   // qi carries the scale
                gqi[d] += ds * kj[d];
              }
            }
          }
        }
      }
      for (int s = 0; s < S; ++s) {
        size_t off = bo + (size_t)s * D + (size_t)h * dh;
        const size_t st = small ? (size_t)S : 1, dt = small ? 1 : (size_t)dh;  // gk, gv: (dh,S) or (S,dh)
        for (int d = 0; d < dh; ++d) {
          if (dq) dq[off + d] += gq[(size_t)s * dh + d] * scale;
          if (dk) dk[off + d] += gk[(size_t)d * st + (size_t)s * dt];
          if (dv) dv[off + d] += gv[(size_t)d * st + (size_t)s * dt];
        }
      }
    }
  }, 1);
  if (d_rel_bias) {  // fixed-order reduction over the batch
    parallel_for((int64_t)H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h)
        for (size_t n = 0; n < R; ++n) {
          double s = 0;
          for (int b = 0; b < B; ++b) s += drel[((size_t)b * H + h) * R + n];
          d_rel_bias[h * R + n] += (float)s;
        }
    }, 1);
  }
}

}  // namespace oboro::cpu
