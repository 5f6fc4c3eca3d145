#include "ops/reference_image.h"
#include <cmath>
#include <vector>

namespace oboro::ref {

void conv2d(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  const int Ho = s.out_h(), Wo = s.out_w(), ih = s.in_h(), iw = s.in_w();
  for (int n = 0; n < s.B; ++n)
    for (int co = 0; co < s.Co; ++co)
      for (int oy = 0; oy < Ho; ++oy)
        for (int ox = 0; ox < Wo; ++ox) {
          double acc = b ? b[co] : 0.0;
          for (int ci = 0; ci < s.Ci; ++ci)
            for (int i = 0; i < s.kh; ++i)
              for (int j = 0; j < s.kw; ++j) {
                const int iy = oy * s.sh - s.pad_t + i, ix = ox * s.sw - s.pad_l + j;
                if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) continue;  // zero padding
                const int sy = s.up2 ? iy / 2 : iy, sx = s.up2 ? ix / 2 : ix;
                acc += (double)w[(((size_t)co * s.Ci + ci) * s.kh + i) * s.kw + j] *
                       x[(((size_t)n * s.Ci + ci) * s.H + sy) * s.W + sx];
              }
          y[(((size_t)n * s.Co + co) * Ho + oy) * Wo + ox] = (float)acc;
        }
}

void groupnorm(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G, float eps,
               bool silu) {
  const int cpg = C / G;
  for (int b = 0; b < B; ++b)
    for (int g = 0; g < G; ++g) {
      const size_t base = ((size_t)b * C + (size_t)g * cpg) * HW, n = (size_t)cpg * HW;
      double s = 0, ss = 0;
      for (size_t i = 0; i < n; ++i) s += x[base + i];
      const double mu = s / n;
      for (size_t i = 0; i < n; ++i) ss += (x[base + i] - mu) * (x[base + i] - mu);
      const double rstd = 1.0 / std::sqrt(ss / n + eps);
      for (int c = 0; c < cpg; ++c)
        for (int i = 0; i < HW; ++i) {
          const size_t k = base + (size_t)c * HW + i;
          const int ch = g * cpg + c;
          double v = (x[k] - mu) * rstd * (gamma ? gamma[ch] : 1.0) + (beta ? beta[ch] : 0.0);
          if (silu) v = v / (1.0 + std::exp(-v));
          y[k] = (float)v;
        }
    }
}

void upsample_nearest2x(float* y, const float* x, int B, int C, int H, int W) {
  for (int p = 0; p < B * C; ++p)
    for (int i = 0; i < 2 * H; ++i)
      for (int j = 0; j < 2 * W; ++j)
        y[((size_t)p * 2 * H + i) * 2 * W + j] = x[((size_t)p * H + i / 2) * W + j / 2];
}

void transpose(float* y, const float* x, int B, int R, int C) {
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) y[((size_t)b * C + c) * R + r] = x[((size_t)b * R + r) * C + c];
}

}  // namespace oboro::ref
