// VAE image ops on the CPU. conv2d: for each image, output rows are processed in tiles of `rt` rows;
// the tile's im2col matrix col(K, rt·Wo), K = Ci·kh·kw, row (ci, i, j) holding the input pixel each output
// position of the tile sees through kernel tap (i, j) (zero outside the padded image), is multiplied by the
// weight matrix w(Co, K) straight into the NCHW output rows (ldc = Ho·Wo). 1×1 stride-1 unpadded convs skip
// im2col (the input already is col). The GEMM is cut into fixed blocks of kMB output channels × kNB positions,
// one single-threaded OpenBLAS call each, spread over the thread pool: OpenBLAS's result for an element depends
// on the shape of the call it is in (its small-matrix kernels and K blocking), so the partition must not depend
// on the thread count — it does not, and outputs are bitwise identical for any thread count. (They do depend,
// by rounding only, on the im2col budget, which is a constant.)
#include "ops/cpu/conv_cpu.h"
#include "ops/cpu/vec_math.h"
#include "ops/cpu/qgemm_cpu.h"
#include "ops/cpu/winograd_cpu.h"
#include "core/error.h"
#include "core/threads.h"
#include <cblas.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>

namespace oboro::cpu {
namespace {

void check_shape(const Conv2dShape& s) {
  if (s.B < 1 || s.Ci < 1 || s.Co < 1 || s.H < 1 || s.W < 1 || s.kh < 1 || s.kw < 1 || s.sh < 1 || s.sw < 1 ||
      s.pad_t < 0 || s.pad_b < 0 || s.pad_l < 0 || s.pad_r < 0)
    fail("internal error: invalid conv2d geometry B=", s.B, " Ci=", s.Ci, " H=", s.H, " W=", s.W, " Co=", s.Co,
         " k=", s.kh, "x", s.kw, " stride=", s.sh, "x", s.sw);
  if (s.in_h() + s.pad_t + s.pad_b < s.kh || s.in_w() + s.pad_l + s.pad_r < s.kw)
    fail("conv2d: a ", s.in_h(), "x", s.in_w(), " input is smaller than the ", s.kh, "x", s.kw,
         " kernel (image too small for the model)");
}

// col(K, nr·Wo) for output rows [oy0, oy0 + nr) of image xb (Ci, H, W).
void im2col(float* col, const float* xb, const Conv2dShape& s, int oy0, int nr) {
  const int Wo = s.out_w(), ih = s.in_h(), iw = s.in_w(), kk = s.kh * s.kw;
  const int64_t n = (int64_t)nr * Wo;
  const int64_t units = (int64_t)s.Ci * kk * nr;  // (row of col, output row)
  parallel_for(units, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t krow = u / nr;
      const int r = (int)(u % nr);
      const int ci = (int)(krow / kk), i = (int)(krow % kk) / s.kw, j = (int)(krow % kk) % s.kw;
      float* dst = col + krow * n + (int64_t)r * Wo;
      const int iy = (oy0 + r) * s.sh - s.pad_t + i;
      if (iy < 0 || iy >= ih) {
        std::memset(dst, 0, (size_t)Wo * sizeof(float));
        continue;
      }
      const float* src = xb + ((size_t)ci * s.H + (s.up2 ? iy / 2 : iy)) * s.W;
      // valid output columns: 0 ≤ ox·sw − pad_l + j < iw
      const int off = j - s.pad_l;
      int lo = off >= 0 ? 0 : (-off + s.sw - 1) / s.sw;
      int hi = iw - 1 - off < 0 ? 0 : (iw - 1 - off) / s.sw + 1;
      lo = std::min(lo, Wo);
      hi = std::clamp(hi, lo, Wo);
      for (int ox = 0; ox < lo; ++ox) dst[ox] = 0.f;
      if (s.up2) {
        for (int ox = lo; ox < hi; ++ox) dst[ox] = src[(ox * s.sw + off) / 2];
      } else if (s.sw == 1) {
        std::memcpy(dst + lo, src + lo + off, (size_t)(hi - lo) * sizeof(float));
      } else {
        for (int ox = lo; ox < hi; ++ox) dst[ox] = src[ox * s.sw + off];
      }
      for (int ox = hi; ox < Wo; ++ox) dst[ox] = 0.f;
    }
  }, std::max<int64_t>(1, 4096 / std::max(1, Wo)));
}

// Rows c of y (Co rows of stride ld, n values each): y = b[c], or y += b[c] when accumulating (no-op without b).
// Returns the GEMM beta: 0 when y is neither initialised nor accumulated into.
float init_rows(float* y, const float* b, int Co, int64_t ld, int64_t n, bool accumulate) {
  if (!b) return accumulate ? 1.f : 0.f;
  parallel_for(Co, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* r = y + c * ld;
      if (accumulate) {
        const float v = b[c];
        for (int64_t i = 0; i < n; ++i) r[i] += v;
      } else {
        std::fill(r, r + n, b[c]);
      }
    }
  }, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, n)));
  return 1.f;
}

constexpr int kMB = 128;  // output channels per GEMM block
constexpr int kNB = 256;  // output positions per GEMM block

// y(M, n) (row stride ldy) = w(M, K)·col(K, n) (row stride ldcol) + beta·y, in fixed kMB × kNB blocks.
void gemm_blocks(float* y, int64_t ldy, const float* w, const float* col, int64_t ldcol, int M, int64_t n, int K,
                 float beta) {
  const int64_t mb = (M + kMB - 1) / kMB, nb = (n + kNB - 1) / kNB;
  parallel_for(mb * nb, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t m0 = (u / nb) * kMB, n0 = (u % nb) * kNB;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)std::min<int64_t>(kMB, M - m0),
                  (int)std::min<int64_t>(kNB, n - n0), K, 1.f, w + m0 * K, K, col + n0, (int)ldcol, beta,
                  y + m0 * ldy + n0, (int)ldy);
    }
  }, 1);
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s, bool accumulate,
                    size_t col_budget) {
  check_shape(s);
  const int Ho = s.out_h(), Wo = s.out_w();
  const int K = s.Ci * s.kh * s.kw;
  const int64_t P = (int64_t)Ho * Wo, in_plane = (int64_t)s.H * s.W;
  const bool direct = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && !s.up2 && s.pad_t == 0 && s.pad_b == 0 &&
                      s.pad_l == 0 && s.pad_r == 0;
  if (direct) {
    for (int bi = 0; bi < s.B; ++bi) {
      float* yb = y + (int64_t)bi * s.Co * P;
      const float beta = init_rows(yb, b, s.Co, P, P, accumulate);
      gemm_blocks(yb, P, w, x + (int64_t)bi * s.Ci * in_plane, P, s.Co, P, K, beta);
    }
    return;
  }
  const int64_t per_row = (int64_t)K * Wo;
  const int rt = (int)std::clamp<int64_t>((int64_t)col_budget / std::max<int64_t>(1, per_row), 1, Ho);
  std::unique_ptr<float[]> col(new float[(size_t)per_row * rt]);
  for (int bi = 0; bi < s.B; ++bi) {
    float* yb = y + (int64_t)bi * s.Co * P;
    const float* xb = x + (int64_t)bi * s.Ci * in_plane;
    for (int oy0 = 0; oy0 < Ho; oy0 += rt) {
      const int nr = std::min(rt, Ho - oy0);
      const int64_t n = (int64_t)nr * Wo;
      im2col(col.get(), xb, s, oy0, nr);
      float* yt = yb + (int64_t)oy0 * Wo;
      const float beta = init_rows(yt, b, s.Co, P, n, accumulate);
      gemm_blocks(yt, P, w, col.get(), n, s.Co, n, K, beta);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Low-precision weights: im2row + the Linear kernels.

namespace {

constexpr int kRowChannels = 4;  // input channels per im2row work unit (kRowChannels·kh·kw contiguous values)

// rows(nr·Wo, K) for output rows [oy0, oy0 + nr) of image xb (Ci, H, W): row p = r·Wo + ox holds the receptive
// field of output (oy0 + r, ox) in the weight's K order (ci, i, j), with exactly im2col's reads: input row
// iy = oy·sh − pad_t + i, column ix = ox·sw − pad_l + j, zero outside [0, in_h) × [0, in_w), and with up2 the
// pixel (iy/2, ix/2) of x. Pure copies: the values are those im2col puts in col (transposed).
void im2row(float* rows, const float* xb, const Conv2dShape& s, int oy0, int nr) {
  const int Wo = s.out_w(), ih = s.in_h(), iw = s.in_w(), kk = s.kh * s.kw;
  const int64_t K = (int64_t)s.Ci * kk;
  const int cb = (s.Ci + kRowChannels - 1) / kRowChannels;
  // Output columns whose taps are all inside [0, iw) (no per-tap test): ox·sw − pad_l ≥ 0 and
  // ox·sw − pad_l + kw − 1 < iw.
  int lo = (s.pad_l + s.sw - 1) / s.sw;
  int hi = iw - s.kw + s.pad_l < 0 ? 0 : (iw - s.kw + s.pad_l) / s.sw + 1;
  lo = std::min(lo, Wo);
  hi = std::clamp(hi, lo, Wo);
  parallel_for((int64_t)nr * cb, [&](int64_t u0, int64_t u1) {
    const float* src[64];  // kRowChannels·kh input rows of the unit (null: a padding row)
    std::unique_ptr<const float*[]> big;
    const float** sr = src;
    if ((int64_t)kRowChannels * s.kh > 64) {
      big.reset(new const float*[(size_t)kRowChannels * s.kh]);
      sr = big.get();
    }
    for (int64_t u = u0; u < u1; ++u) {
      const int r = (int)(u / cb), c0 = (int)(u % cb) * kRowChannels, c1 = std::min(s.Ci, c0 + kRowChannels);
      const int nc = c1 - c0;
      for (int c = 0; c < nc; ++c)
        for (int i = 0; i < s.kh; ++i) {
          const int iy = (oy0 + r) * s.sh - s.pad_t + i;
          sr[c * s.kh + i] = iy < 0 || iy >= ih ? nullptr
                                                : xb + ((size_t)(c0 + c) * s.H + (s.up2 ? iy / 2 : iy)) * s.W;
        }
      float* base = rows + ((int64_t)r * Wo) * K + (int64_t)c0 * kk;
      auto edge = [&](int ox) {  // any column: a bounds test per tap
        float* d = base + (int64_t)ox * K;
        for (int c = 0; c < nc; ++c)
          for (int i = 0; i < s.kh; ++i) {
            const float* sp = sr[c * s.kh + i];
            for (int j = 0; j < s.kw; ++j, ++d) {
              const int ix = ox * s.sw - s.pad_l + j;
              *d = sp && ix >= 0 && ix < iw ? sp[s.up2 ? ix / 2 : ix] : 0.f;
            }
          }
      };
      for (int ox = 0; ox < lo; ++ox) edge(ox);
      for (int ox = lo; ox < hi; ++ox) {  // interior columns: 0 ≤ x0 + j < iw for every tap j
        float* d = base + (int64_t)ox * K;
        const int x0 = ox * s.sw - s.pad_l;
        for (int c = 0; c < nc; ++c)
          for (int i = 0; i < s.kh; ++i, d += s.kw) {
            const float* sp = sr[c * s.kh + i];
            if (!sp) {
              for (int j = 0; j < s.kw; ++j) d[j] = 0.f;
            } else if (s.up2) {
              for (int j = 0; j < s.kw; ++j) d[j] = sp[(x0 + j) / 2];
            } else {
              for (int j = 0; j < s.kw; ++j) d[j] = sp[x0 + j];
            }
          }
      }
      for (int ox = hi; ox < Wo; ++ox) edge(ox);
    }
  }, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, (int64_t)Wo * kRowChannels * kk)));
}

// y rows c (stride ld) at columns [0, n) from yt(n, Co): y = yt (or y += yt when accumulating), blocked transpose.
void scatter_rows(float* y, int64_t ld, const float* yt, int Co, int64_t n, bool accumulate) {
  constexpr int T = 32;
  const int64_t cb = (Co + T - 1) / T, pb = (n + T - 1) / T;
  parallel_for(cb * pb, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int c0 = (int)(u / pb) * T, c1 = std::min(Co, c0 + T);
      const int64_t p0 = (u % pb) * T, p1 = std::min<int64_t>(n, p0 + T);
      for (int c = c0; c < c1; ++c) {
        float* yr = y + (int64_t)c * ld;
        if (accumulate)
          for (int64_t p = p0; p < p1; ++p) yr[p] += yt[p * Co + c];
        else
          for (int64_t p = p0; p < p1; ++p) yr[p] = yt[p * Co + c];
      }
    }
  }, 4);
}

}  // namespace

namespace {
std::atomic<bool> g_force_direct{false};
}  // namespace

bool conv_force_direct(bool on) { return g_force_direct.exchange(on); }

bool conv_w_uses_winograd(const Conv2dShape& s, const WeightView& w) {
  return !g_force_direct.load() && winograd_eligible(s, w) && winograd_available();
}

int conv2d_w_tile_rows(const Conv2dShape& s, size_t col_budget) {
  const int64_t per_row = ((int64_t)s.Ci * s.kh * s.kw + s.Co) * s.out_w();
  return (int)std::clamp<int64_t>((int64_t)col_budget / std::max<int64_t>(1, per_row), 1, std::max(1, s.out_h()));
}

void conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                      bool accumulate, size_t col_budget) {
  check_shape(s);
  const int K = s.Ci * s.kh * s.kw;
  if (w.N != s.Co || w.K != K)
    fail("internal error: conv2d_forward_w weight is ", w.N, "x", w.K, " but the convolution needs ", s.Co, "x", K,
         " (Co x Ci·kh·kw)");
  if (w.fmt == WFormat::F32) return conv2d_forward(y, x, w.f32(), b, s, accumulate, col_budget);
  if (conv_w_uses_winograd(s, w)) return conv2d_winograd_bf16(y, x, w, b, s, accumulate, col_budget);
  const int Ho = s.out_h(), Wo = s.out_w();
  const int64_t P = (int64_t)Ho * Wo, in_plane = (int64_t)s.H * s.W;
  const int rt = conv2d_w_tile_rows(s, col_budget);
  const size_t tile_n = (size_t)rt * Wo;
  std::unique_ptr<float[]> rows(new float[tile_n * K]), yt(new float[tile_n * s.Co]);
  for (int bi = 0; bi < s.B; ++bi) {
    float* yb = y + (int64_t)bi * s.Co * P;
    const float* xb = x + (int64_t)bi * s.Ci * in_plane;
    for (int oy0 = 0; oy0 < Ho; oy0 += rt) {
      const int nr = std::min(rt, Ho - oy0);
      const int64_t n = (int64_t)nr * Wo;
      im2row(rows.get(), xb, s, oy0, nr);
      linear_w(yt.get(), rows.get(), w, b, (int)n, K, s.Co);  // yt = rows·Wᵀ + b
      scatter_rows(yb + (int64_t)oy0 * Wo, P, yt.get(), s.Co, n, accumulate);
    }
  }
}

void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G,
                       float eps, bool silu) {
  if (G < 1 || C % G)
    fail("GroupNorm: ", C, " channels are not divisible into ", G, " groups (the VAE needs channel counts that are "
         "multiples of ", G, ")");
  const int cpg = C / G;
  const int64_t n = (int64_t)cpg * HW;
  parallel_for((int64_t)B * G, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / G, g = u % G;
      const int64_t base = (b * C + g * cpg) * (int64_t)HW;
      const float* xs = x + base;
      // Two passes (mean, then Σ(x − μ)²) in double, vectorised with fixed-order partial sums (vec_math.h).
      const double mu = sum_f64(xs, n) / (double)n;
      const double ss = sum_sq_dev_f64(xs, n, mu);
      const double rstd = 1.0 / std::sqrt(ss / (double)n + eps);
      for (int c = 0; c < cpg; ++c) {
        const int ch = (int)g * cpg + c;
        const double a = rstd * (gamma ? gamma[ch] : 1.f);
        const float sc = (float)a, sh = (float)((beta ? beta[ch] : 0.f) - mu * a);
        const float* xr = xs + (int64_t)c * HW;
        float* yr = y + base + (int64_t)c * HW;
        if (silu) {
          for (int i = 0; i < HW; ++i) {
            const float v = xr[i] * sc + sh;
            yr[i] = v * sigmoid_approx(v);
          }
        } else {
          for (int i = 0; i < HW; ++i) yr[i] = xr[i] * sc + sh;
        }
      }
    }
  }, 1);
}

void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W) {
  const int W2 = 2 * W;
  parallel_for((int64_t)B * C * H, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* src = x + r * W;
      const int64_t plane = r / H, row = r % H;
      float* d0 = y + (plane * 2 * H + 2 * row) * W2;
      for (int i = 0; i < W; ++i) d0[2 * i] = d0[2 * i + 1] = src[i];
      std::memcpy(d0 + W2, d0, (size_t)W2 * sizeof(float));
    }
  }, std::max<int64_t>(1, 8192 / std::max(1, W)));
}

void transpose_forward(float* y, const float* x, int B, int R, int C) {
  constexpr int T = 32;
  const int64_t rb = (R + T - 1) / T, cb = (C + T - 1) / T;
  parallel_for((int64_t)B * rb * cb, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / (rb * cb), t = u % (rb * cb);
      const int r0 = (int)(t / cb) * T, c0 = (int)(t % cb) * T;
      const int r1 = std::min(R, r0 + T), c1 = std::min(C, c0 + T);
      const float* xb = x + b * (int64_t)R * C;
      float* yb = y + b * (int64_t)R * C;
      for (int c = c0; c < c1; ++c)
        for (int r = r0; r < r1; ++r) yb[(int64_t)c * R + r] = xb[(int64_t)r * C + c];
    }
  }, 4);
}

}  // namespace oboro::cpu
