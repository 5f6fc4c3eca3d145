// Cheap previews of the latents during sampling (the server's progress images): exact for the pixels codec, a
// linear latent→RGB map for the FLUX VAE, fitted by least squares to solid colours the VAE itself encodes.
#include "flow/generate.h"
#include "core/error.h"
#include "models/codec.h"
#include "models/vae.h"
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

namespace oboro {

namespace {

// Solves the (n×n) symmetric positive definite system A·x = b in place (Gaussian elimination with pivoting).
std::vector<double> solve(std::vector<double> A, std::vector<double> b, int n) {
  for (int c = 0; c < n; ++c) {
    int piv = c;
    for (int r = c + 1; r < n; ++r)
      if (std::fabs(A[r * n + c]) > std::fabs(A[piv * n + c])) piv = r;
    for (int k = 0; k < n; ++k) std::swap(A[c * n + k], A[piv * n + k]);
    std::swap(b[c], b[piv]);
    const double d = A[c * n + c];
    if (std::fabs(d) < 1e-30) continue;
    for (int r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = A[r * n + c] / d;
      if (f == 0) continue;
      for (int k = c; k < n; ++k) A[r * n + k] -= f * A[c * n + k];
      b[r] -= f * b[c];
    }
  }
  std::vector<double> x(n);
  for (int i = 0; i < n; ++i) x[i] = std::fabs(A[i * n + i]) < 1e-30 ? 0 : b[i] / A[i * n + i];
  return x;
}

}  // namespace

std::vector<float> vae_preview_fit(const std::string& vae_path, const std::string& vae_type, Backend& be,
                                   const std::shared_ptr<Vae>& loaded) {
  static std::mutex mu;
  static std::map<std::string, std::vector<float>> fits;
  const std::string key = vae_path + "|" + vae_type;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = fits.find(key); it != fits.end()) return it->second;
  LatentCodec codec;
  if (loaded) {
    codec.vae = loaded;
    codec.stride = loaded->config().stride();
  } else {
    codec = LatentCodec::open("flux-vae", 1, vae_path, be, "--vae", parse_vae_wformat(vae_type, "--vae-type"));
  }
  std::vector<float> fit;
  if (!codec.vae->config().has_encoder) return fits[key] = fit;
  const int C = codec.channels(), S = 4 * codec.stride, n = C + 1;  // a 4×4 latent per colour
  // Normal equations of least squares with a small ridge: (XᵀX + λI) w = Xᵀy for each of R, G, B.
  std::vector<double> xtx((size_t)n * n, 0.0), xty((size_t)3 * n, 0.0);
  std::vector<float> img((size_t)3 * S * S), lat((size_t)C * 16);
  for (int r = 0; r < 3; ++r)
    for (int g = 0; g < 3; ++g)
      for (int b = 0; b < 3; ++b) {
        const float rgb[3] = {r - 1.f, g - 1.f, b - 1.f};
        for (int c = 0; c < 3; ++c) std::fill(img.begin() + (size_t)c * S * S, img.begin() + (size_t)(c + 1) * S * S, rgb[c]);
        codec.encode(img.data(), S, S, lat.data());
        for (int p = 5; p <= 10; p += 5) {  // the centre latent pixels (1,1) and (2,2): away from the borders
          std::vector<double> x(n, 1.0);
          for (int c = 0; c < C; ++c) x[c] = lat[(size_t)c * 16 + p];
          for (int i = 0; i < n; ++i) {
            for (int j = 0; j < n; ++j) xtx[(size_t)i * n + j] += x[i] * x[j];
            for (int c = 0; c < 3; ++c) xty[(size_t)c * n + i] += x[i] * rgb[c];
          }
        }
      }
  for (int i = 0; i < n; ++i) xtx[(size_t)i * n + i] += 1e-3;
  for (int c = 0; c < 3; ++c) {
    const std::vector<double> w = solve(xtx, std::vector<double>(xty.begin() + (size_t)c * n, xty.begin() + (size_t)(c + 1) * n), n);
    for (double v : w) fit.push_back((float)v);
  }
  return fits[key] = fit;
}

Image latent_preview(const float* latent, int C, int h, int w, int stride, const std::vector<float>& fit,
                     int max_side) {
  std::vector<float> chw;
  int H = h, W = w;
  if (fit.empty() && C == 3 * stride * stride) {  // pixels: the latent is the image, pixel-unshuffled
    H = h * stride;
    W = w * stride;
    chw.resize((size_t)3 * H * W);
    PixelsCodec{stride}.decode(latent, H, W, chw.data());
  } else {
    chw.assign((size_t)3 * h * w, 0.f);
    const size_t hw = (size_t)h * w;
    if (!fit.empty() && (int)fit.size() == 3 * (C + 1)) {
      for (int c = 0; c < 3; ++c)
        for (size_t i = 0; i < hw; ++i) {
          float v = fit[(size_t)c * (C + 1) + C];
          for (int k = 0; k < C; ++k) v += fit[(size_t)c * (C + 1) + k] * latent[(size_t)k * hw + i];
          chw[(size_t)c * hw + i] = v;
        }
    } else {  // no fit: the first three channels, each stretched to [-1, 1]
      for (int c = 0; c < std::min(C, 3); ++c) {
        const float* src = latent + (size_t)c * hw;
        const auto [lo, hi] = std::minmax_element(src, src + hw);
        const float span = std::max(*hi - *lo, 1e-6f);
        for (size_t i = 0; i < hw; ++i) chw[(size_t)c * hw + i] = 2.f * (src[i] - *lo) / span - 1.f;
      }
    }
  }
  Image full = chw_to_image(chw.data(), H, W);
  const int side = std::max(H, W);
  if (max_side <= 0 || side <= max_side) return full;
  const int W2 = std::max(1, W * max_side / side), H2 = std::max(1, H * max_side / side);
  Image out;
  out.width = W2;
  out.height = H2;
  out.rgb.resize((size_t)W2 * H2 * 3);
  for (int y = 0; y < H2; ++y)
    for (int x = 0; x < W2; ++x) {
      const int sy = y * H / H2, sx = x * W / W2;
      for (int c = 0; c < 3; ++c) out.rgb[((size_t)y * W2 + x) * 3 + c] = full.rgb[((size_t)sy * W + sx) * 3 + c];
    }
  return out;
}

}  // namespace oboro
