// The BF16 attention forward (attention_forward_bf16, AttnPrecision::BF16): its avx512_bf16 kernel, the portable
// scalar path with the same arithmetic, and the dispatch between them. o (B,S,H·dh), lse (B,H,S); optional key mask
// and relative-position bias (H, 2S−1), as the F32 forwards (attention_cpu.cpp, attention_avx512.cpp).
#include "ops/cpu/attention_cpu.h"
#include "ops/cpu/attention_cpu_internal.h"
#include "core/dtype.h"
#include "core/threads.h"
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace oboro::cpu {

// ---------------------------------------------------------------------------------------------
// BF16 forward (AttnPrecision::BF16, ops/backend.h). Same tiling and online softmax as the F32 AVX-512 kernel
// (attention_avx512.cpp), with both products through BF16 pairs:
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

}  // namespace oboro::cpu
