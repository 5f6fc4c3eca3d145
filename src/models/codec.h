// Latent codecs (spec §1). `pixels`: no network — RGB in [-1,1], pixel_unshuffled by `stride`
// (stride 1 → 3 channels, stride 2 → 12). `flux-vae`: the FLUX.1 VAE (spec §8, models/vae.h), stride 8,
// encoding to the scaled latent mean.
#pragma once
#include "models/vae.h"
#include <memory>
#include <string>

namespace oboro {

class Backend;

struct PixelsCodec {
  int stride = 1;
  int channels() const { return 3 * stride * stride; }
  // image (3, H, W) → latent (3·s², H/s, W/s); channel c·s² + i·s + j holds pixel (y·s + i, x·s + j).
  void encode(const float* image, int H, int W, float* latent) const;
  void decode(const float* latent, int H, int W, float* image) const;  // exact inverse
};

// Latent geometry of a codec name and its DiT: pixels per latent pixel.
int codec_stride(const std::string& codec, int latent_channels);  // errors name the codec and the fix

// The codec a model or training run uses: pixels, or the FLUX.1 VAE when `vae` is set.
struct LatentCodec {
  int stride = 1;             // pixels per latent pixel
  std::shared_ptr<Vae> vae;   // flux-vae (null: pixels)
  VaeRunOptions vae_options;  // tiling of VAE passes (automatic above a size by default)

  // "pixels" with `pixels_stride`, or "flux-vae" loading `vae_path` (required; errors say how to pass it,
  // `what` names the option, e.g. "--vae"). Unknown names fail.
  // `vae_type`: the format the VAE's conv weights are held in (f32, bf16, f16; Vae::load).
  static LatentCodec open(const std::string& codec, int pixels_stride, const std::string& vae_path, Backend& be,
                          const std::string& what, WFormat vae_type = WFormat::F32);
  int channels() const;
  // One image (3, H, W) in [-1, 1] → latent (channels(), H/stride, W/stride); the VAE gives 0.3611·(mean − 0.1159).
  void encode(const float* image, int H, int W, float* latent) const;
  // The inverse (pixels: exact; VAE: decoded image, not clamped).
  void decode(const float* latent, int H, int W, float* image) const;
};

}  // namespace oboro
