// Latent codecs (spec §1). `pixels`: no network — RGB in [-1,1], pixel_unshuffled by `stride`
// (stride 1 → 3 channels, stride 2 → 12). `flux-vae` needs the FLUX.1 VAE (not in this build yet).
#pragma once
#include <string>

namespace oboro {

struct PixelsCodec {
  int stride = 1;
  int channels() const { return 3 * stride * stride; }
  // image (3, H, W) → latent (3·s², H/s, W/s); channel c·s² + i·s + j holds pixel (y·s + i, x·s + j).
  void encode(const float* image, int H, int W, float* latent) const;
  void decode(const float* latent, int H, int W, float* image) const;  // exact inverse
};

// Latent geometry of a codec name and its DiT: pixels per latent pixel.
int codec_stride(const std::string& codec, int latent_channels);  // errors name the codec and the fix

}  // namespace oboro
