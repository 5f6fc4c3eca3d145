#include "models/codec.h"
#include "core/error.h"

namespace oboro {

void PixelsCodec::encode(const float* img, int H, int W, float* lat) const {
  const int s = stride, h = H / s, w = W / s;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < s; ++i)
      for (int j = 0; j < s; ++j)
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            lat[(((size_t)(c * s * s + i * s + j)) * h + y) * w + x] = img[((size_t)c * H + y * s + i) * W + x * s + j];
}

void PixelsCodec::decode(const float* lat, int H, int W, float* img) const {
  const int s = stride, h = H / s, w = W / s;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < s; ++i)
      for (int j = 0; j < s; ++j)
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            img[((size_t)c * H + y * s + i) * W + x * s + j] = lat[(((size_t)(c * s * s + i * s + j)) * h + y) * w + x];
}

int codec_stride(const std::string& codec, int latent_channels) {
  if (codec == "pixels") {
    for (int s = 1; s <= 8; ++s)
      if (3 * s * s == latent_channels) return s;
    fail("codec 'pixels' needs latent_channels = 3·stride² (3, 12, 27, ...), the model has ", latent_channels);
  }
  if (codec == "flux-vae") return 8;
  fail("unknown codec '", codec, "' in the model config: known codecs are pixels and flux-vae");
}

}  // namespace oboro
