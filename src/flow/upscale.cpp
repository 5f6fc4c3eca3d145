#include "flow/upscale.h"
#include "core/error.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace oboro {
namespace {

// Per output index along one axis: the first source index and the weights of the source taps.
struct Taps {
  std::vector<int> first;
  std::vector<std::vector<float>> w;
};

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

Taps axis_taps(int n, int n2, ResizeFilter f) {
  Taps t;
  t.first.resize(n2);
  t.w.resize(n2);
  const double scale = (double)n / n2;
  for (int o = 0; o < n2; ++o) {
    if (f == ResizeFilter::Nearest) {
      t.first[o] = std::min(n - 1, (int)std::floor(o * scale));
      t.w[o] = {1.f};
    } else if (f == ResizeFilter::Bilinear) {
      double src = std::max(0.0, (o + 0.5) * scale - 0.5);
      int i0 = std::min(n - 1, (int)std::floor(src));
      int i1 = std::min(n - 1, i0 + 1);
      float l = (float)(src - i0);
      t.first[o] = i0;
      t.w[o] = i1 == i0 ? std::vector<float>{1.f} : std::vector<float>{1.f - l, l};
    } else {
      const double support = 3.0 * std::max(1.0, scale), fs = std::max(1.0, scale);
      const double centre = (o + 0.5) * scale;
      int lo = std::max(0, (int)std::floor(centre - support)), hi = std::min(n, (int)std::ceil(centre + support));
      std::vector<double> wd;
      double sum = 0;
      for (int i = lo; i < hi; ++i) {
        double x = (i + 0.5 - centre) / fs;
        double v = std::abs(x) < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
        wd.push_back(v);
        sum += v;
      }
      t.first[o] = lo;
      for (double v : wd) t.w[o].push_back((float)(sum != 0 ? v / sum : 0));
    }
  }
  return t;
}

}  // namespace

void resize_planes(const float* in, int C, int h, int w, float* out, int h2, int w2, ResizeFilter f) {
  if (C < 1 || h < 1 || w < 1 || h2 < 1 || w2 < 1) fail("resize: empty size ", w, "x", h, " -> ", w2, "x", h2);
  const Taps ty = axis_taps(h, h2, f), tx = axis_taps(w, w2, f);
  std::vector<float> rows((size_t)h * w2);
  for (int c = 0; c < C; ++c) {
    const float* src = in + (size_t)c * h * w;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w2; ++x) {
        float acc = 0;
        const auto& wt = tx.w[x];
        for (size_t k = 0; k < wt.size(); ++k) acc += wt[k] * src[(size_t)y * w + tx.first[x] + k];
        rows[(size_t)y * w2 + x] = acc;
      }
    float* dst = out + (size_t)c * h2 * w2;
    for (int y = 0; y < h2; ++y) {
      const auto& wt = ty.w[y];
      for (int x = 0; x < w2; ++x) {
        float acc = 0;
        for (size_t k = 0; k < wt.size(); ++k) acc += wt[k] * rows[(size_t)(ty.first[y] + k) * w2 + x];
        dst[(size_t)y * w2 + x] = acc;
      }
    }
  }
}

}  // namespace oboro
