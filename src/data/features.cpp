#include "data/features.h"

#include "core/dtype.h"
#include "core/error.h"

#include <algorithm>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <cmath>
#include <map>
#include <mutex>

namespace oboro {

namespace {

constexpr int kThumb = 32;
// Part weights (squared and normalised: 28% structure, 22% colour layout, 10% global colour, 40% edges).
// Chosen on generated images and the shapes dataset (docs/data.md): every planted near-duplicate kind
// stays above similarity 0.9 while distinct images stay well below it.
constexpr double kStructureWeight = 0.5, kLayoutWeight = 0.45, kGlobalWeight = 0.3, kHogWeight = 0.6;

// Orthonormal DCT-II basis rows k < K over n samples: b[k][x].
struct DctBasis {
  std::vector<float> b;  // K × n
  int K = 0, n = 0;
  DctBasis(int K_, int n_) : b((size_t)K_ * n_), K(K_), n(n_) {
    const double pi = 3.14159265358979323846;
    for (int k = 0; k < K; ++k) {
      const double s = k == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
      for (int x = 0; x < n; ++x) b[(size_t)k * n + x] = (float)(s * std::cos(pi * k * (2 * x + 1) / (2.0 * n)));
    }
  }
  // out[u*K + v] = Σ_y Σ_x b[u][y] b[v][x] p[y][x]  (u vertical, v horizontal), for u, v < K.
  void apply(const float* p, float* out) const {
    std::vector<float> rows((size_t)n * K);  // rows[y][v]
    for (int y = 0; y < n; ++y)
      for (int v = 0; v < K; ++v) {
        float s = 0;
        for (int x = 0; x < n; ++x) s += b[(size_t)v * n + x] * p[(size_t)y * n + x];
        rows[(size_t)y * K + v] = s;
      }
    for (int u = 0; u < K; ++u)
      for (int v = 0; v < K; ++v) {
        float s = 0;
        for (int y = 0; y < n; ++y) s += b[(size_t)u * n + y] * rows[(size_t)y * K + v];
        out[u * K + v] = s;
      }
  }
};

const DctBasis& basis8() {
  static const DctBasis b(8, kThumb);
  return b;
}

// 1-D area weights: output cell i covers source [i·src/n, (i+1)·src/n).
struct AreaWeights {
  std::vector<int> first, count;
  std::vector<float> w;  // concatenated
  std::vector<size_t> off;
  AreaWeights(int src, int n) : first(n), count(n), off(n) {
    const double scale = (double)src / n;
    for (int i = 0; i < n; ++i) {
      double a = i * scale, b = (i + 1) * scale;
      if (scale < 1) {  // upsampling: nearest source pixel
        a = std::floor(a);
        b = a + 1;
      }
      int lo = (int)std::floor(a), hi = std::min(src, (int)std::ceil(b));
      first[i] = lo;
      count[i] = hi - lo;
      off[i] = w.size();
      double tot = 0;
      for (int s = lo; s < hi; ++s) {
        double ov = std::min<double>(b, s + 1) - std::max<double>(a, s);
        w.push_back((float)ov);
        tot += ov;
      }
      for (int k = 0; k < count[i]; ++k) w[off[i] + k] = (float)(w[off[i] + k] / tot);
    }
  }
};

double norm2(const float* v, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += (double)v[i] * v[i];
  return std::sqrt(s);
}

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, ExtractorFactory>& registry() {
  static std::map<std::string, ExtractorFactory> r = {
      {"dct-colour", [](const std::string& arg) -> std::unique_ptr<FeatureExtractor> {
         if (!arg.empty()) fail("extractor dct-colour takes no argument (got \"", arg, "\")");
         return std::make_unique<DctColourExtractor>();
       }}};
  return r;
}

}  // namespace

void thumbnail_ycbcr(const Image& img, int n, float* Y, float* Cb, float* Cr) {
  if (img.empty()) fail("features: empty image");
  AreaWeights wx(img.width, n), wy(img.height, n);
  // Horizontal pass into n columns for every source row (float RGB), then vertical.
  std::vector<float> tmp((size_t)img.height * n * 3);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* row = img.rgb.data() + (size_t)y * img.width * 3;
    for (int i = 0; i < n; ++i) {
      float r = 0, g = 0, b = 0;
      for (int k = 0; k < wx.count[i]; ++k) {
        const float w = wx.w[wx.off[i] + k];
        const uint8_t* p = row + (size_t)(wx.first[i] + k) * 3;
        r += w * p[0];
        g += w * p[1];
        b += w * p[2];
      }
      float* t = &tmp[((size_t)y * n + i) * 3];
      t[0] = r, t[1] = g, t[2] = b;
    }
  }
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      float r = 0, g = 0, b = 0;
      for (int k = 0; k < wy.count[j]; ++k) {
        const float w = wy.w[wy.off[j] + k];
        const float* t = &tmp[((size_t)(wy.first[j] + k) * n + i) * 3];
        r += w * t[0];
        g += w * t[1];
        b += w * t[2];
      }
      r /= 255.f, g /= 255.f, b /= 255.f;
      const size_t o = (size_t)j * n + i;
      Y[o] = 0.299f * r + 0.587f * g + 0.114f * b;
      Cb[o] = -0.168736f * r - 0.331264f * g + 0.5f * b;
      Cr[o] = 0.5f * r - 0.418688f * g - 0.081312f * b;
    }
}

namespace {

// Histograms of oriented gradients of the Y thumbnail: kCells×kCells cells, kBins unsigned
// orientations, bilinear in space and orientation (a small shift moves weight between neighbouring
// cells instead of flipping it).
void hog(const float* Y, int n, float* out) {
  constexpr int C = DctColourExtractor::kCells, B = DctColourExtractor::kBins;
  std::fill(out, out + C * C * B, 0.f);
  const float cs = (float)n / C, pi = 3.14159265358979f;
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const float gx = Y[y * n + std::min(x + 1, n - 1)] - Y[y * n + std::max(x - 1, 0)];
      const float gy = Y[std::min(y + 1, n - 1) * n + x] - Y[std::max(y - 1, 0) * n + x];
      const float m = std::sqrt(gx * gx + gy * gy);
      if (!(m > 0)) continue;
      float th = std::atan2(gy, gx);
      if (th < 0) th += pi;
      const float fb = th / pi * B - 0.5f;
      int b0 = (int)std::floor(fb);
      const float wb = fb - (float)b0;
      const int b1 = (b0 + 1 + B) % B;
      b0 = (b0 + B) % B;
      const float fx = (x + 0.5f) / cs - 0.5f, fy = (y + 0.5f) / cs - 0.5f;
      const int x0 = (int)std::floor(fx), y0 = (int)std::floor(fy);
      const float wx = fx - (float)x0, wy = fy - (float)y0;
      for (int dy = 0; dy < 2; ++dy)
        for (int dx = 0; dx < 2; ++dx) {
          const int cx = x0 + dx, cy = y0 + dy;
          if (cx < 0 || cy < 0 || cx >= C || cy >= C) continue;
          const float w = (dx ? wx : 1 - wx) * (dy ? wy : 1 - wy) * m;
          out[(cy * C + cx) * B + b0] += w * (1 - wb);
          out[(cy * C + cx) * B + b1] += w * wb;
        }
    }
}

}  // namespace

void DctColourExtractor::extract(const Image& img, float* out) const {
  const int n = kThumb, N = n * n;
  std::vector<float> y(N), cb(N), cr(N);
  thumbnail_ycbcr(img, n, y.data(), cb.data(), cr.data());
  float cy[64], ccb[64], ccr[64];
  const DctBasis& B = basis8();
  B.apply(y.data(), cy);
  B.apply(cb.data(), ccb);
  B.apply(cr.data(), ccr);
  // Each part is unit-normalised with a floor (in DCT units of a 32×32 [0,1] plane, whose DC is 32×
  // its mean), so a part with almost no energy (a flat image's structure, a grey image's colour) stays
  // small instead of becoming amplified noise, then weighted.
  auto part = [](float* v, int len, double floor_, double weight) {
    const double nv = std::max(norm2(v, len), floor_);
    for (int k = 0; k < len; ++k) v[k] = (float)(weight * v[k] / nv);
  };
  // Structure: Y AC coefficients, 8×8 without DC, weighted by sqrt(1 + u + v) (a partial whitening of
  // the 1/f spectrum of natural images, so the finer layout counts and not only the global gradient).
  float* s = out;
  for (int k = 1; k < 64; ++k) s[k - 1] = cy[k] * std::sqrt(1.f + (float)(k / 8 + k % 8));
  part(s, 63, 0.5, kStructureWeight);
  // Colour layout: the 4×4 lowest AC coefficients of Cb and Cr (where the colours are).
  float* cl = out + 63;
  int m = 0;
  for (int u = 0; u < 4; ++u)
    for (int v = 0; v < 4; ++v)
      if (u || v) cl[m++] = ccb[u * 8 + v], cl[m++] = ccr[u * 8 + v];
  part(cl, 30, 0.3, kLayoutWeight);
  // Global colour: the DCs (mean brightness centred on mid-grey, mean Cb, Cr).
  float* cg = out + 93;
  cg[0] = cy[0] - 0.5f * n, cg[1] = ccb[0], cg[2] = ccr[0];
  part(cg, 3, 4.0, kGlobalWeight);
  // Edges: HOG, centred (its mean over cells and bins removed, so unrelated images are uncorrelated
  // instead of all similar through the positive histogram).
  float* h = out + 96;
  hog(y.data(), n, h);
  constexpr int H = kCells * kCells * kBins;
  double mu = 0;
  for (int k = 0; k < H; ++k) mu += h[k];
  for (int k = 0; k < H; ++k) h[k] -= (float)(mu / H);
  part(h, H, 0.05, kHogWeight);
  const double t = norm2(out, kDim);
  for (int k = 0; k < kDim; ++k) out[k] = t > 0 ? (float)(out[k] / t) : 0.f;
}

std::unique_ptr<FeatureExtractor> make_extractor(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon), arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  ExtractorFactory f;
  {
    std::lock_guard<std::mutex> lk(registry_mutex());
    auto it = registry().find(name);
    if (it != registry().end()) f = it->second;
  }
  if (!f) {
    std::string known;
    for (const auto& k : extractor_names()) known += (known.empty() ? "" : ", ") + k;
    fail("unknown feature extractor \"", name, "\": use one of ", known);
  }
  return f(arg);
}

void register_extractor(const std::string& name, ExtractorFactory factory) {
  std::lock_guard<std::mutex> lk(registry_mutex());
  registry()[name] = std::move(factory);
}

std::vector<std::string> extractor_names() {
  std::lock_guard<std::mutex> lk(registry_mutex());
  std::vector<std::string> v;
  for (const auto& [k, f] : registry()) v.push_back(k);
  return v;
}

std::string pack_f16(const float* v, int n) {
  std::string s((size_t)n * 2, '\0');
  for (int i = 0; i < n; ++i) {
    uint16_t h = f32_to_f16(v[i]);
    s[2 * i] = (char)(h & 0xff);
    s[2 * i + 1] = (char)(h >> 8);
  }
  return s;
}

bool unpack_f16(const void* bytes, size_t nbytes, int n, float* out) {
  if (nbytes != (size_t)n * 2) return false;
  const uint8_t* p = (const uint8_t*)bytes;
  for (int i = 0; i < n; ++i) out[i] = f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
  return true;
}

float dot(const float* a, const float* b, int n) {
  int i = 0;
  float s = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
  s = _mm_cvtss_f32(q);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace oboro
