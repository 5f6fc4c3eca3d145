// The F32 attention of attention_cpu.h: the dispatch (the AVX-512 kernels of attention_avx512.cpp when the CPU
// has them and attention_force_generic is off) and the portable tiled forward and backward, the reference those
// kernels are tested against. Portable path: work unit = one (batch, head) pair: its Q, K, V columns are gathered
// into contiguous per-thread panels (K also transposed so score rows vectorise over keys), then query
// blocks of kBq rows sweep key blocks of kBk columns with an online softmax.
// Memory per thread: a few S×dh panels plus one kBq×kBk score tile. An optional relative-position
// bias (H, 2S−1) is added to each score tile; its gradient is gathered per unit and reduced in order.
// The BF16 forward and its dispatch live in attention_bf16.cpp.
#include "ops/cpu/attention_cpu.h"
#include "ops/cpu/attention_cpu_internal.h"
#include "ops/cpu/vec_math.h"
#include "core/threads.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

namespace oboro::cpu {
namespace {

constexpr int kBq = 32;
constexpr int kBk = 64;

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

#if OBORO_ATTN_X86
std::atomic<bool> g_attn_force_generic{false};
namespace {

bool detect_attn_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
}

}  // namespace
#endif  // OBORO_ATTN_X86

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
