#include "flow/inpaint.h"
#include "core/error.h"
#include <algorithm>
#include <cmath>

namespace oboro {

namespace {

// Reflect-101 index (cv2's default border): … 2 1 | 0 1 2 … n−1 | n−2 …
int reflect101(int i, int n) {
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  i = std::abs(i) % period;
  return i < n ? i : period - i;
}

uint8_t to_u8(double v) { return (uint8_t)std::clamp((int)std::lround(v), 0, 255); }

// One 1D pass over (h, w): along x when `horizontal`, else along y.
std::vector<uint8_t> blur_pass(const std::vector<uint8_t>& m, int w, int h, const std::vector<double>& k,
                               bool horizontal) {
  const int r = (int)k.size() / 2;
  std::vector<uint8_t> out(m.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double s = 0;
      for (int j = -r; j <= r; ++j) {
        const int xx = horizontal ? reflect101(x + j, w) : x, yy = horizontal ? y : reflect101(y + j, h);
        s += k[j + r] * m[(size_t)yy * w + xx];
      }
      out[(size_t)y * w + x] = to_u8(s);
    }
  return out;
}

}  // namespace

std::vector<uint8_t> gaussian_blur_u8(const std::vector<uint8_t>& m, int w, int h, int sigma) {
  if (sigma <= 0) return m;
  // cv2.getGaussianKernel(ksize, sigma): ksize = 2·int(2.5·sigma + 0.5) + 1 as A1111 picks it, weights normalised.
  const int r = (int)(2.5 * sigma + 0.5);
  std::vector<double> k(2 * r + 1);
  double sum = 0;
  for (int i = -r; i <= r; ++i) sum += k[i + r] = std::exp(-(double)i * i / (2.0 * sigma * sigma));
  for (double& v : k) v /= sum;
  return blur_pass(blur_pass(m, w, h, k, true), w, h, k, false);
}

InpaintMask make_inpaint_mask(const Image& mask, int W, int H, int stride, int blur, bool invert,
                              const std::string& label) {
  if (mask.empty()) fail(label, ": the mask image is empty");
  if (blur < 0 || blur > 64) fail("--mask-blur must be between 0 and 64 pixels, got ", blur);
  if (W % stride || H % stride) fail("internal error: size ", W, "x", H, " is not a multiple of the stride ", stride);
  // Binary mask at the mask's own size: luminance (ITU-R 601-2, as PIL's convert('L')) > 128 → 255.
  const int mw = mask.width, mh = mask.height;
  std::vector<uint8_t> m((size_t)mw * mh);
  for (size_t i = 0; i < m.size(); ++i) {
    const uint8_t* p = &mask.rgb[i * 3];
    const int lum = (p[0] * 299 + p[1] * 587 + p[2] * 114) / 1000;
    m[i] = ((lum > 128) != invert) ? 255 : 0;
  }
  m = gaussian_blur_u8(m, mw, mh, blur);
  // Resized like the init image (cover + centre crop to W×H), through the RGB resampler.
  Image g;
  g.width = mw;
  g.height = mh;
  g.rgb.resize(m.size() * 3);
  for (size_t i = 0; i < m.size(); ++i) g.rgb[i * 3] = g.rgb[i * 3 + 1] = g.rgb[i * 3 + 2] = m[i];
  InpaintMask out;
  out.W = W;
  out.H = H;
  if (mw != W || mh != H) {
    if ((int64_t)mw * H != (int64_t)mh * W)
      out.note = str(label, ": the mask is ", mw, "x", mh, " but the image is ", W, "x", H,
                     ": resized to cover it and centre-cropped, as the init image");
    g = resize_cover_crop(g, W, H);
  }
  out.overlay.resize((size_t)W * H);
  for (size_t i = 0; i < out.overlay.size(); ++i) out.overlay[i] = std::min(255, 2 * g.rgb[i * 3]) / 255.f;
  const int h = H / stride, w = W / stride;
  out.latent.resize((size_t)h * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double s = 0;
      for (int j = 0; j < stride; ++j)
        for (int i = 0; i < stride; ++i) s += g.rgb[((size_t)(y * stride + j) * W + x * stride + i) * 3];
      out.latent[(size_t)y * w + x] = (float)std::nearbyint(s / (255.0 * stride * stride));
    }
  return out;
}

Image composite_inpaint(const Image& generated, const Image& original, const std::vector<float>& overlay) {
  if (generated.width != original.width || generated.height != original.height ||
      overlay.size() != (size_t)generated.width * generated.height)
    fail("internal error: inpainting composite of ", generated.width, "x", generated.height, " over ",
         original.width, "x", original.height);
  Image out = original;
  for (size_t i = 0; i < overlay.size(); ++i) {
    const float a = overlay[i];
    if (a == 0.f) continue;
    for (int c = 0; c < 3; ++c)
      out.rgb[i * 3 + c] = to_u8(generated.rgb[i * 3 + c] * (double)a + original.rgb[i * 3 + c] * (1.0 - a));
  }
  return out;
}

}  // namespace oboro
