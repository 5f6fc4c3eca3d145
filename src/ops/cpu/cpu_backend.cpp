// CPU backend: OpenBLAS for GEMM, the thread pool for everything else.
// Reductions over rows (parameter gradients) run in a fixed order, parallel over columns,
// so results do not depend on the thread count.
#include "ops/backend.h"
#include "ops/cpu/attention_cpu.h"
#include "ops/cpu/conv_cpu.h"
#include "ops/cpu/gemm_bf16_cpu.h"
#include "ops/cpu/qgemm_cpu.h"
#include "ops/cpu/step_ops_cpu.h"
#include "ops/cpu/vec_math.h"
#include "core/error.h"
#include "core/threads.h"
#include <cblas.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

namespace oboro {
namespace {

constexpr int64_t kElemGrain = 16384;

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C, split over the thread pool by blocks of C
// (rows when M ≥ N, else columns), each block one single-threaded OpenBLAS call. OpenBLAS's own
// threads spin in sched_yield between calls and stole a core from the pool (22% of a training
// step); with one pool nothing spins. Every C element is still one sgemm dot product over the
// same K, so results do not depend on the thread count.
void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) {
  const auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  const double flops = 2.0 * M * N * K;
  const int nt = num_threads();
  if (nt <= 1 || flops < 4e6) {
    cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool rows = M >= N;
  const int64_t extent = rows ? M : N;
  const int64_t align = 16;  // block edges on 16-element boundaries keep the kernels' full tiles
  const int64_t units = (extent + align - 1) / align;
  parallel_for(units, [&](int64_t u0, int64_t u1) {
    const int64_t b = u0 * align, e = std::min<int64_t>(extent, u1 * align);
    if (e <= b) return;
    const int n = (int)(e - b);
    if (rows) {
      const float* a = ta ? A + b : A + b * lda;
      cblas_sgemm(CblasRowMajor, TA, TB, n, N, K, alpha, a, lda, B, ldb, beta, C + b * ldc, ldc);
    } else {
      const float* bb = tb ? B + b * ldb : B + b;
      cblas_sgemm(CblasRowMajor, TA, TB, M, n, K, alpha, A, lda, bb, ldb, beta, C + b, ldc);
    }
  }, 1);
}

// Σ over rows r of f(r, col) for a block of columns, parallel over columns.
template <class F>
void column_reduce(float* out, int rows, int cols, F f) {
  parallel_for(cols, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(c1 - c0, 0.0);
    for (int r = 0; r < rows; ++r)
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += f(r, (int)c);
    for (int64_t c = c0; c < c1; ++c) out[c] += (float)acc[c - c0];
  }, 64);
}

// Row kernels shared by a separate op and its fused form. Not inlined on purpose: the compiler may contract a·b ± c
// into an FMA differently in different inlining contexts, and the fused inference ops must give bitwise the
// results of the separate ones (the DiT's inference forward equals its training forward, tested).
__attribute__((noinline)) void layernorm_row(float* yr, const float* xr, const float* g, const float* bta, float m,
                                             float rs, int D) {
  for (int i = 0; i < D; ++i) {
    float n = (xr[i] - m) * rs;
    yr[i] = (g ? n * g[i] : n) + (bta ? bta[i] : 0.f);
  }
}
// Rotate the dh/2 pairs of each of H heads of one row by the angles (c, sg) (sign −1: the inverse rotation).
__attribute__((noinline)) void rope_row(float* xr, const float* c, const float* sg, int H, int dh, float sign) {
  const int half = dh / 2;
  for (int h = 0; h < H; ++h)
    for (int p = 0; p < half; ++p) {
      float a = xr[h * dh + 2 * p], b = xr[h * dh + 2 * p + 1];
      float sp = sign * sg[p];
      xr[h * dh + 2 * p] = a * c[p] - b * sp;
      xr[h * dh + 2 * p + 1] = a * sp + b * c[p];
    }
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  void* alloc_bytes(size_t n, const char* what) override {
    size_t bytes = ((n + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, bytes ? bytes : 64);
    if (!p) fail("out of memory allocating ", n >> 20, " MiB (", n, " bytes) for ", what, ": use a smaller model, batch or image size");
    std::memset(p, 0, bytes);
    return p;
  }
  void free_bytes(void* p) override { std::free(p); }
  void zero_bytes(void* p, size_t n) override {
    char* c = static_cast<char*>(p);
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) { std::memset(c + b, 0, e - b); }, 1 << 22);
  }
  void copy_bytes(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void upload_bytes(void* d, const void* h, size_t n) override { std::memcpy(d, h, n); }
  void download_bytes(void* h, const void* s, size_t n) override { std::memcpy(h, s, n); }
  void add_inplace(float* y, const float* x, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) y[i] += x[i]; }, kElemGrain);
  }
  void axpy(float* y, const float* x, float a, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) y[i] += a * x[i]; }, kElemGrain);
  }

  void set_matmul_precision(MatmulPrecision p) override { mp_ = p; }
  MatmulPrecision matmul_precision() const override { return mp_; }

  void linear_forward(float* y, const float* x, const float* w, const float* b, int M, int K, int N) override {
    float beta = 0.f;
    if (b) {
      parallel_for(M, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) std::memcpy(y + r * N, b, N * 4);
      }, 64);
      beta = 1.f;
    }
    if (mp_ == MatmulPrecision::BF16) return cpu::gemm_bf16(false, true, M, N, K, x, K, w, K, beta, y, N);
    gemm(false, true, M, N, K, 1.f, x, K, w, K, beta, y, N);
  }

  void linear_forward_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N) override {
    if (w.fmt == WFormat::F32) return linear_forward(y, x, w.f32(), b, M, K, N);  // the SGEMM path, unchanged
    cpu::linear_w(y, x, w, b, M, K, N);
  }

  void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int M, int K,
                       int N) override {
    if (mp_ == MatmulPrecision::BF16) {
      if (dx) cpu::gemm_bf16(false, false, M, K, N, dy, N, w, K, 1.f, dx, K);
      if (dw) cpu::gemm_bf16(true, false, N, K, M, dy, N, x, K, 1.f, dw, K);
    } else {
      if (dx) gemm(false, false, M, K, N, 1.f, dy, N, w, K, 1.f, dx, K);
      if (dw) gemm(true, false, N, K, M, 1.f, dy, N, x, K, 1.f, dw, K);
    }
    if (db) column_reduce(db, M, N, [&](int r, int c) { return (double)dy[(size_t)r * N + c]; });
  }

  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* g, int M, int D, float eps) override {
    parallel_for(M, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * D;
        const double ss = cpu::sum_sq_f64(xr, D);
        float rs = (float)(1.0 / std::sqrt(ss / D + eps));
        rstd[r] = rs;
        float* yr = y + r * D;
        for (int i = 0; i < D; ++i) yr[i] = xr[i] * rs * g[i];
      }
    }, 16);
  }

  void rmsnorm_backward(float* dx, float* dg, const float* dy, const float* x, const float* g, const float* rstd, int M,
                        int D) override {
    if (dx) parallel_for(M, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * D, *dyr = dy + r * D;
        const double dot = cpu::sum8_f64(D, [&](int64_t i) { return (double)dyr[i] * g[i] * xr[i]; });
        float rs = rstd[r];
        float c = (float)(dot * rs * rs * rs / D);
        float* dxr = dx + r * D;
        for (int i = 0; i < D; ++i) dxr[i] += dyr[i] * g[i] * rs - xr[i] * c;
      }
    }, 16);
    if (dg) column_reduce(dg, M, D, [&](int r, int c) {
      size_t i = (size_t)r * D + c;
      return (double)dy[i] * x[i] * rstd[r];
    });
  }

  void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* g, const float* bta, int M,
                         int D, float eps) override {
    parallel_for(M, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * D;
        const double mu = cpu::sum_f64(xr, D) / D, v = cpu::sum_sq_dev_f64(xr, D, mu);
        float rs = (float)(1.0 / std::sqrt(v / D + eps));
        float m = (float)mu;
        mean[r] = m;
        rstd[r] = rs;
        layernorm_row(y + r * D, xr, g, bta, m, rs, D);
      }
    }, 16);
  }

  void layernorm_backward(float* dx, float* dg, float* dbeta, const float* dy, const float* x, const float* g,
                          const float* mean, const float* rstd, int M, int D) override {
    if (dx) parallel_for(M, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * D, *dyr = dy + r * D;
        float m = mean[r], rs = rstd[r];
        // Σ dn, Σ dn·n  with dn = dy·γ
        auto dn_at = [&](int64_t i) { return g ? (double)dyr[i] * g[i] : (double)dyr[i]; };
        const double s1 = cpu::sum8_f64(D, dn_at);
        const double s2 = cpu::sum8_f64(D, [&](int64_t i) { return dn_at(i) * (xr[i] - m) * rs; });
        float a = (float)(s1 / D), b = (float)(s2 / D);
        float* dxr = dx + r * D;
        for (int i = 0; i < D; ++i) {
          float dn = g ? dyr[i] * g[i] : dyr[i];
          float n = (xr[i] - m) * rs;
          dxr[i] += rs * (dn - a - n * b);
        }
      }
    }, 16);
    if (dg) column_reduce(dg, M, D, [&](int r, int c) {
      size_t i = (size_t)r * D + c;
      return (double)dy[i] * (x[i] - mean[r]) * rstd[r];
    });
    if (dbeta) column_reduce(dbeta, M, D, [&](int r, int c) { return (double)dy[(size_t)r * D + c]; });
  }

  void silu_forward(float* y, const float* x, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) y[i] = x[i] * cpu::sigmoid_approx(x[i]);
    }, kElemGrain);
  }
  void silu_backward(float* dx, const float* dy, const float* x, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float s = cpu::sigmoid_approx(x[i]);
        dx[i] += dy[i] * s * (1.f + x[i] * (1.f - s));
      }
    }, kElemGrain);
  }

  static constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)
  void gelu_tanh_forward(float* y, const float* x, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float v = x[i];
        y[i] = 0.5f * v * (1.f + std::tanh(kGeluC * (v + 0.044715f * v * v * v)));
      }
    }, kElemGrain);
  }
  void gelu_tanh_backward(float* dx, const float* dy, const float* x, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float v = x[i];
        float th = std::tanh(kGeluC * (v + 0.044715f * v * v * v));
        float d = 0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * kGeluC * (1.f + 3.f * 0.044715f * v * v);
        dx[i] += dy[i] * d;
      }
    }, kElemGrain);
  }

  void swiglu_forward(float* y, const float* a, const float* b, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = a[i] * cpu::sigmoid_approx(a[i]) * b[i];
    }, kElemGrain);
  }
  void swiglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t s, int64_t e) {
      // Separate loops so each vectorises (no per-element null test).
      if (da)
        for (int64_t i = s; i < e; ++i) {
          const float sg = cpu::sigmoid_approx(a[i]);
          da[i] += dy[i] * b[i] * sg * (1.f + a[i] * (1.f - sg));
        }
      if (db)
        for (int64_t i = s; i < e; ++i) db[i] += dy[i] * a[i] * cpu::sigmoid_approx(a[i]);
    }, kElemGrain);
  }
  void tanh_forward(float* y, const float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
  }

  void modulate_forward(float* y, const float* x, const float* s, int ld_s, int B, int S, int D) override {
    parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* sb = s + (r / S) * ld_s;
        const float* xr = x + r * D;
        float* yr = y + r * D;
        for (int i = 0; i < D; ++i) yr[i] = xr[i] * (1.f + sb[i]);
      }
    }, 16);
  }
  void modulate_backward(float* dx, float* ds, const float* dy, const float* x, const float* s, int ld_s, int B, int S,
                         int D) override {
    if (dx) parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* sb = s + (r / S) * ld_s;
        for (int i = 0; i < D; ++i) dx[r * D + i] += dy[r * D + i] * (1.f + sb[i]);
      }
    }, 16);
    if (ds) for (int b = 0; b < B; ++b) {
      size_t o = (size_t)b * S * D;
      column_reduce(ds + (size_t)b * ld_s, S, D, [&](int r, int c) {
        return (double)dy[o + (size_t)r * D + c] * x[o + (size_t)r * D + c];
      });
    }
  }

  void gate_residual_forward(float* h, const float* y, const float* g, int ld_g, int B, int S, int D) override {
    parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      std::vector<float> tg(D);
      int64_t cur = -1;
      for (int64_t r = r0; r < r1; ++r) {
        if (r / S != cur) { cur = r / S; for (int i = 0; i < D; ++i) tg[i] = std::tanh(g[cur * ld_g + i]); }
        for (int i = 0; i < D; ++i) h[r * D + i] += tg[i] * y[r * D + i];
      }
    }, 16);
  }
  void gate_residual_backward(float* dy, float* dg, const float* dh, const float* y, const float* g, int ld_g, int B,
                              int S, int D) override {
    if (dy) parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      std::vector<float> tg(D);
      int64_t cur = -1;
      for (int64_t r = r0; r < r1; ++r) {
        if (r / S != cur) { cur = r / S; for (int i = 0; i < D; ++i) tg[i] = std::tanh(g[cur * ld_g + i]); }
        for (int i = 0; i < D; ++i) dy[r * D + i] += dh[r * D + i] * tg[i];
      }
    }, 16);
    if (dg) for (int b = 0; b < B; ++b) {
      size_t o = (size_t)b * S * D;
      std::vector<float> tmp(D, 0.f);
      column_reduce(tmp.data(), S, D, [&](int r, int c) {
        return (double)dh[o + (size_t)r * D + c] * y[o + (size_t)r * D + c];
      });
      for (int i = 0; i < D; ++i) {
        float t = std::tanh(g[(size_t)b * ld_g + i]);
        dg[(size_t)b * ld_g + i] += tmp[i] * (1.f - t * t);
      }
    }
  }

  // Fused inference ops: one pass per row, the same float expressions as the separate ops (bitwise equal).
  void rmsnorm_modulate_forward(float* y, float* rstd, const float* x, const float* g, const float* s, int ld_s, int B,
                                int S, int D, float eps) override {
    parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * D;
        const float* sb = s + (r / S) * ld_s;
        const float rs = (float)(1.0 / std::sqrt(cpu::sum_sq_f64(xr, D) / D + eps));
        if (rstd) rstd[r] = rs;
        float* yr = y + r * D;
        for (int i = 0; i < D; ++i) yr[i] = (xr[i] * rs * g[i]) * (1.f + sb[i]);
      }
    }, 16);
  }
  void rmsnorm_gate_residual_forward(float* h, const float* y, const float* gamma, const float* g, int ld_g, int B,
                                     int S, int D, float eps) override {
    parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      std::vector<float> tg(D);
      int64_t cur = -1;
      for (int64_t r = r0; r < r1; ++r) {
        if (r / S != cur) { cur = r / S; for (int i = 0; i < D; ++i) tg[i] = std::tanh(g[cur * ld_g + i]); }
        const float* yr = y + r * D;
        const float rs = (float)(1.0 / std::sqrt(cpu::sum_sq_f64(yr, D) / D + eps));
        float* hr = h + r * D;
        for (int i = 0; i < D; ++i) hr[i] += tg[i] * (yr[i] * rs * gamma[i]);
      }
    }, 16);
  }
  void layernorm_rope_forward(float* y, float* mean, float* rstd, const float* x, const float* g, const float* bta,
                              const float* cs, const float* sn, int B, int S, int H, int dh, float eps) override {
    const int D = H * dh, half = dh / 2;
    parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * D;
        const double mu = cpu::sum_f64(xr, D) / D, v = cpu::sum_sq_dev_f64(xr, D, mu);
        const float rs = (float)(1.0 / std::sqrt(v / D + eps)), m = (float)mu;
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
        float* yr = y + r * D;
        layernorm_row(yr, xr, g, bta, m, rs, D);  // the row stays in L1 for the rotation
        rope_row(yr, cs + (size_t)(r % S) * half, sn + (size_t)(r % S) * half, H, dh, 1.f);
      }
    }, 16);
  }

  void rope_forward(float* x, const float* cs, const float* sn, int B, int S, int H, int dh) override {
    rope_apply(x, cs, sn, B, S, H, dh, 1.f);
  }
  void rope_backward(float* dx, const float* cs, const float* sn, int B, int S, int H, int dh) override {
    rope_apply(dx, cs, sn, B, S, H, dh, -1.f);  // rotation is orthogonal: gradient rotates back
  }

  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const float* kv,
                         int B, int S, int H, int dh, float scale, const float* rel_bias,
                         AttnPrecision prec) override {
    if (prec == AttnPrecision::BF16)
      cpu::attention_forward_bf16(o, lse, q, k, v, kv, B, S, H, dh, scale, rel_bias);
    else
      cpu::attention_forward_tiled(o, lse, q, k, v, kv, B, S, H, dh, scale, rel_bias);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* o, const float* lse, const float* kv, int B, int S, int H,
                          int dh, float scale, const float* rel_bias, float* d_rel_bias) override {
    cpu::attention_backward_tiled(dq, dk, dv, dout, q, k, v, o, lse, kv, B, S, H, dh, scale, rel_bias, d_rel_bias);
  }

  void embedding_forward(float* out, const float* table, const int32_t* ids, int N, int D) override {
    parallel_for(N, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) std::memcpy(out + r * D, table + (size_t)ids[r] * D, (size_t)D * 4);
    }, 16);
  }
  // Parallel over column blocks; every thread walks the rows in index order, so each dtable entry receives its
  // contributions in the same order for any thread count.
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int D) override {
    parallel_for(D, [&](int64_t c0, int64_t c1) {
      for (int n = 0; n < N; ++n) {
        float* dst = dtable + (size_t)ids[n] * D;
        const float* src = dout + (size_t)n * D;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }, 64);
  }

  void bucket_bias_forward(float* bias, const float* table, const int32_t* bucket, int n, int H) override {
    for (int h = 0; h < H; ++h)
      for (int k = 0; k < n; ++k) bias[(size_t)h * n + k] = table[(size_t)bucket[k] * H + h];
  }
  void bucket_bias_backward(float* dtable, const float* dbias, const int32_t* bucket, int n, int H) override {
    for (int h = 0; h < H; ++h)
      for (int k = 0; k < n; ++k) dtable[(size_t)bucket[k] * H + h] += dbias[(size_t)h * n + k];
  }

  void geglu_forward(float* y, const float* a, const float* b, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        float v = a[i];
        y[i] = 0.5f * v * (1.f + std::tanh(kGeluC * (v + 0.044715f * v * v * v))) * b[i];
      }
    }, kElemGrain);
  }
  void geglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) override {
    parallel_for((int64_t)n, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        float v = a[i];
        float th = std::tanh(kGeluC * (v + 0.044715f * v * v * v));
        if (da) {
          float d = 0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * kGeluC * (1.f + 3.f * 0.044715f * v * v);
          da[i] += dy[i] * b[i] * d;
        }
        if (db) db[i] += dy[i] * 0.5f * v * (1.f + th);
      }
    }, kElemGrain);
  }

  // Token (b, n=(y,x)), feature f=(c,i,j) ↔ pixel (b, c, y·p+i, x·p+j). mode 0: gather to tokens, 1: scatter.
  template <bool ToTokens, bool Accumulate>
  static void shuffle(float* dst, const float* src, int B, int C, int h, int w, int p) {
    if (h % p || w % p) fail("latent size ", h, "x", w, " is not divisible by the patch size ", p);
    int hp = h / p, wp = w / p, F = C * p * p;
    parallel_for((int64_t)B * hp, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int b = (int)(r / hp), y = (int)(r % hp);
        for (int x = 0; x < wp; ++x)
          for (int c = 0; c < C; ++c)
            for (int i = 0; i < p; ++i)
              for (int j = 0; j < p; ++j) {
                size_t ti = (((size_t)b * hp + y) * wp + x) * F + (size_t)c * p * p + i * p + j;
                size_t pi = (((size_t)b * C + c) * h + (size_t)y * p + i) * w + (size_t)x * p + j;
                if (ToTokens) { if (Accumulate) dst[ti] += src[pi]; else dst[ti] = src[pi]; }
                else { if (Accumulate) dst[pi] += src[ti]; else dst[pi] = src[ti]; }
              }
      }
    }, 1);
  }
  void patchify(float* t, const float* x, int B, int C, int h, int w, int p) override {
    shuffle<true, false>(t, x, B, C, h, w, p);
  }
  void unpatchify(float* x, const float* t, int B, int C, int h, int w, int p) override {
    shuffle<false, false>(x, t, B, C, h, w, p);
  }
  void patchify_backward(float* dx, const float* dt, int B, int C, int h, int w, int p) override {
    shuffle<false, true>(dx, dt, B, C, h, w, p);
  }
  void unpatchify_backward(float* dt, const float* dx, int B, int C, int h, int w, int p) override {
    shuffle<true, true>(dt, dx, B, C, h, w, p);
  }

  void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period) override {
    int half = dim / 2;
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < half; ++k) {
        double phi = std::exp(-std::log((double)max_period) * k / half);
        double a = (double)scale * t[b] * phi;
        out[(size_t)b * dim + k] = (float)std::cos(a);
        out[(size_t)b * dim + half + k] = (float)std::sin(a);
      }
  }

  // Training and sampling arithmetic (src/ops/cpu/step_ops_cpu.cpp).
  void icfm_pair(float* t, float* xt, float* u, const float* x1, int B, int64_t n, const IcfmDraw& d) override {
    cpu::icfm_pair(t, xt, u, x1, B, n, d);
  }
  void mse_forward(double* loss, const float* pred, const float* target, size_t n) override {
    cpu::mse_forward(loss, pred, target, n);
  }
  void mse_backward(float* dpred, const float* pred, const float* target, size_t n, float dloss) override {
    cpu::mse_backward(dpred, pred, target, n, dloss);
  }
  void sum_squares(double* out, const float* x, size_t n, bool accumulate) override {
    cpu::sum_squares(out, x, n, accumulate);
  }
  void adamw_update(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n,
                    const AdamWUpdate& u) override { cpu::adamw_update(p, g, m, v, decay, n, u); }
  void ema_update(float* ema, const float* p, size_t n, float decay) override { cpu::ema_update(ema, p, n, decay); }
  void euler_cfg_step(float* x, const float* vc, const float* vu, float s, float dt, size_t n) override {
    cpu::euler_cfg_step(x, vc, vu, s, dt, n);
  }
  void flow_interpolate(float* x, const float* x1, float t, size_t n) override { cpu::flow_interpolate(x, x1, t, n); }
  void inpaint_blend(float* x, const float* noise, const float* x1, const float* mask, float t, size_t n) override {
    cpu::inpaint_blend(x, noise, x1, mask, t, n);
  }
  void mask_rows(float* x, const float* mask, int rows, int D) override { cpu::mask_rows(x, mask, rows, D); }
  void text_image_key_valid(float* kv, const float* txt_mask, int B, int L, int N) override {
    cpu::text_image_key_valid(kv, txt_mask, B, L, N);
  }
  void fill(float* x, float value, size_t n) override { std::fill_n(x, n, value); }

  // VAE image ops (src/ops/cpu/conv_cpu.cpp).
  void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s,
                      bool accumulate) override { cpu::conv2d_forward(y, x, w, b, s, accumulate); }
  void conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                        bool accumulate) override { cpu::conv2d_forward_w(y, x, w, b, s, accumulate); }
  void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G,
                         float eps, bool silu) override { cpu::groupnorm_forward(y, x, gamma, beta, B, C, HW, G, eps, silu); }
  void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W) override {
    cpu::upsample_nearest2x_forward(y, x, B, C, H, W);
  }
  void transpose_forward(float* y, const float* x, int B, int R, int C) override { cpu::transpose_forward(y, x, B, R, C); }

 private:
  MatmulPrecision mp_ = MatmulPrecision::F32;

  static void rope_apply(float* x, const float* cs, const float* sn, int B, int S, int H, int dh, float sign) {
    int half = dh / 2, D = H * dh;
    parallel_for((int64_t)B * S, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int s = (int)(r % S);
        rope_row(x + r * D, cs + (size_t)s * half, sn + (size_t)s * half, H, dh, sign);
      }
    }, 16);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend be;
  return be;
}

}  // namespace oboro
