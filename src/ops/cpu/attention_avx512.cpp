// The register-blocked AVX-512 F32 attention kernels: the forward (o (B,S,H·dh), lse (B,H,S)) and the backward
// over (batch, head) units, both with the optional key mask and relative-position bias (H, 2S−1). Called by the
// dispatch in attention_cpu.cpp when attention_avx512_available(); the portable loops there are their reference.
#include "ops/cpu/attention_cpu_internal.h"
#include "core/threads.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if OBORO_ATTN_X86
namespace oboro::cpu {

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
namespace {

constexpr int kFq = 32;  // query rows per tile
constexpr int kFk = 64;  // keys per block (4 vectors)

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
}  // namespace

void attention_forward_avx512(float* o, float* lse, const float* q, const float* k, const float* v,
                              const float* key_valid, int B, int S, int H, int dh, float scale,
                              const float* rel_bias) {
  const int nch = query_chunks(B * H, S, kFq);
  parallel_for((int64_t)B * H * nch, [&](int64_t w0, int64_t w1) {
    attention_forward_avx512_units(w0, w1, nch, o, lse, q, k, v, key_valid, S, H, dh, scale, rel_bias);
  }, 1);
}

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
}  // namespace

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

}  // namespace oboro::cpu
#endif  // OBORO_ATTN_X86
