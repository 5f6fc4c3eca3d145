#include "models/codec.h"
#include "core/error.h"
#include <filesystem>

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

LatentCodec LatentCodec::open(const std::string& codec, int pixels_stride, const std::string& vae_path, Backend& be,
                              const std::string& what, WFormat vae_type) {
  LatentCodec c;
  if (codec == "pixels") {
    if (pixels_stride < 1 || pixels_stride > 8) fail("pixels codec: stride must be 1 to 8, got ", pixels_stride);
    c.stride = pixels_stride;
    return c;
  }
  if (codec != "flux-vae") fail("unknown codec '", codec, "': known codecs are pixels and flux-vae");
  if (vae_path.empty())
    fail("the 'flux-vae' codec needs the FLUX.1 VAE: pass ", what, " ae.safetensors (FLUX.1's autoencoder, or a "
         "diffusers AutoencoderKL of the same structure)");
  if (!std::filesystem::exists(vae_path)) fail(what, " ", vae_path, ": no such file");
  c.vae = Vae::load(vae_path, be, vae_type);
  const VaeConfig& v = c.vae->config();
  if (!v.has_encoder && !v.has_decoder) fail(vae_path, ": the VAE has neither encoder nor decoder");
  if (v.in_channels != 3 || v.out_channels != 3)
    fail(vae_path, ": the VAE maps ", v.in_channels, "/", v.out_channels,
         " channels; the flux-vae codec needs RGB (3)");
  c.stride = v.stride();
  return c;
}

int LatentCodec::channels() const { return vae ? vae->config().z_channels : 3 * stride * stride; }

void LatentCodec::encode(const float* image, int H, int W, float* latent) const {
  if (!vae) return PixelsCodec{stride}.encode(image, H, W, latent);
  vae->encode(latent, image, 1, H, W, vae_options);
}

void LatentCodec::decode(const float* latent, int H, int W, float* image) const {
  if (!vae) return PixelsCodec{stride}.decode(latent, H, W, image);
  vae->decode(image, latent, 1, H / stride, W / stride, vae_options);
}

}  // namespace oboro
