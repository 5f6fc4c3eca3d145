// The FLUX.1 16-channel autoencoder (spec §8): encoder (image → latent mean) and decoder, loaded from
// `ae.safetensors` names or a diffusers AutoencoderKL layout mapped onto them, config inferred from shapes.
// Weight formats (docs/formats.md): f32 (the default, the training/twin path), or bf16 / f16 — every convolution
// weight and the mid attention's q/k/v/proj_out weights (the 4-D tensors) stored in that format and run through
// Backend::conv2d_forward_w / linear_forward_w; biases and GroupNorm affine stay F32, GroupNorm/swish/softmax F32.
// Forward only (frozen). Images are processed one at a time through three rotating activation buffers sized
// by a dry run of the network at the requested size (plus the mid attention's token-major buffers), so the
// activation memory is planned up front; large images are tiled (overlapping tiles, linear-ramp blending).
#pragma once
#include "core/tensor.h"
#include "models/params.h"
#include "models/tensor_table.h"
#include "ops/backend.h"
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

class TensorSource;

struct VaeConfig {
  int in_channels = 3, out_channels = 3;
  int ch = 128;                       // conv_in width
  std::vector<int> ch_mult = {1, 2, 4, 4};
  int enc_blocks = 2, dec_blocks = 3;  // ResnetBlocks per level
  int z_channels = 16;
  int groups = 32;
  float eps = 1e-6f;
  float scale = 0.3611f, shift = 0.1159f;  // latent z = scale·(mean − shift)
  bool has_encoder = true, has_decoder = true;

  int levels() const { return (int)ch_mult.size(); }
  int stride() const { return 1 << (levels() - 1); }  // pixels per latent pixel (8)
  static VaeConfig flux();                             // the real FLUX.1 VAE sizes (83.8M parameters)
  // From tensor shapes under §8 names (ch from conv_in, ch_mult from each level's channels, z from
  // decoder.conv_in's input channels, block counts from the keys). `where` prefixes errors.
  static VaeConfig infer(const std::map<std::string, Shape>& shapes, const std::string& where);
  void validate(const std::string& where) const;
  int64_t param_count() const;
  std::string describe() const;  // "ch 128, ch_mult [1,2,4,4], blocks 2/3, z 16"
};

// Every tensor of the config under its §8 name, in layout order (encoder first), with its role: the one declaration
// of the VAE's tensors, from which the layout, the low-precision set and init_random follow. A convolution (the mid
// attention's q/k/v/proj_out are 1×1 ones) is a Role::Weight (O, I, k, k) — held in the low-precision format when
// the VAE is asked for one (vae_quantizable), random N(0, 1/fan_in) — and a Role::Bias (O); a GroupNorm is a
// Role::Norm γ and a Role::Bias β (C).
void vae_tensors(const VaeConfig& c, const std::function<void(const std::string& name, const Shape& shape, Role role)>& fn);
// Every tensor of the config under its §8 name, encoder first (vae_tensors' order).
ParamLayout vae_param_layout(const VaeConfig& c);
// §8 name of a tensor name from ae.safetensors or the diffusers layout (`encoder.down_blocks.{i}.resnets.{j}.*`,
// `mid_block.attentions.0.to_q`, decoder `up_blocks.{k}` = `up.{levels−1−k}`, ...); names it does not recognise
// are returned unchanged. `levels` = number of decoder up blocks (for the reversed order).
std::string vae_canonical_name(const std::string& name, int levels);
// The diffusers name of a §8 name (inverse of the above; §8 names without a diffusers form returned unchanged).
std::string vae_diffusers_name(const std::string& name, int levels);

// The formats a VAE may hold its conv weights in: f32, bf16, f16 (f8 / q8_0 are refused: q8_0 needs K = Ci·kh·kw
// divisible by 32, which the 3-channel conv_in and the 16-channel decoder conv_in are not, and a per-tensor f8
// scale is too coarse for an image decoder). Fails with one line naming `what` otherwise.
void check_vae_wformat(WFormat f, const std::string& what);
// "" → F32; else the format, checked as above (`what` names the option, e.g. "--vae-type").
WFormat parse_vae_wformat(const std::string& s, const std::string& what);
// Whether a tensor of the VAE layout is held in the low-precision format (conv and attention projection weights: the
// Role::Weight tensors of vae_tensors).
bool vae_quantizable(const std::string& name, const Shape& shape);

struct VaeRunOptions {
  enum class Tiling { Auto, Off, On };
  Tiling tiling = Tiling::Auto;
  int tile = 64;     // tile side in latent pixels (×8 image pixels)
  int overlap = 16;  // overlap between neighbouring tiles in latent pixels, blended with linear ramps
  size_t auto_tile_bytes = size_t(3) << 30;  // Auto tiles when an untiled pass would need more activations
};

class Vae {
 public:
  // `weights`: storage of the conv / attention weights (F32 = the full-precision model; bf16 / f16 for inference:
  // layout()/params() then hold the F32 tensors alone and save() refuses).
  Vae(const VaeConfig& cfg, Backend& be, WFormat weights = WFormat::F32);
  ~Vae();
  Vae(const Vae&) = delete;
  Vae& operator=(const Vae&) = delete;

  // ae.safetensors or a diffusers-layout file (F32/F16/BF16 tensors). Conv weights are converted to `type` while
  // loading (one tensor at a time), everything else to F32. Errors name the tensor and the fix.
  static std::unique_ptr<Vae> load(const std::string& path, Backend& be, WFormat type = WFormat::F32);
  // An independent copy with its conv weights in `fmt` (converted from this model's weights).
  std::unique_ptr<Vae> converted(WFormat fmt) const;
  WFormat weight_format() const { return wfmt_; }
  // Random weights (conv N(0, 1/fan_in), biases and GroupNorm affine slightly perturbed): for tests and benches.
  // The same values for every format (drawn in F32, then converted).
  void init_random(uint64_t seed);
  void save(const std::string& path) const;  // §8 names; F32 models only
  const VaeConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_; }

  // Host arrays. image (B, in_channels, H, W) in [-1, 1], H and W multiples of stride() →
  // latent (B, z, H/stride, W/stride) = scale·(mean − shift).
  void encode(float* latent, const float* image, int B, int H, int W, const VaeRunOptions& opt = {});
  // latent (B, z, h, w) (scaled) → image (B, out_channels, h·stride, w·stride), decoder of z/scale + shift,
  // not clamped.
  void decode(float* image, const float* latent, int B, int h, int w, const VaeRunOptions& opt = {});

  // Bytes of activations one untiled pass over an h×w latent needs (buffers + attention + im2col), weights excluded,
  // and its FLOPs (convolutions, attention and its projections): a dry run of the pass, no weights needed.
  // `fmt`: the conv weight format (its convolutions hold a different scratch: im2row + output tile + BF16 copy).
  static size_t activation_bytes(const VaeConfig& cfg, bool encoder, int h, int w, WFormat fmt = WFormat::F32);
  static double pass_flops(const VaeConfig& cfg, bool encoder, int h, int w);
  static bool would_tile(const VaeConfig& cfg, bool encoder, int h, int w, const VaeRunOptions& opt,
                         WFormat fmt = WFormat::F32);
  size_t activation_bytes(bool encoder, int h, int w) const { return activation_bytes(cfg_, encoder, h, w, wfmt_); }
  double pass_flops(bool encoder, int h, int w) const { return pass_flops(cfg_, encoder, h, w); }
  bool would_tile(bool encoder, int h, int w, const VaeRunOptions& o) const {
    return would_tile(cfg_, encoder, h, w, o, wfmt_);
  }
  double flops_done() const { return flops_; }  // FLOPs of every pass run so far (tiles included)
  size_t weight_bytes() const;  // F32 parameters + the stored low-precision weights
  size_t peak_activation_bytes() const { return peak_act_bytes_; }  // largest plan allocated so far
  void reset_peak_activation_bytes() { peak_act_bytes_ = 0; }
  void release_activations();  // free the planned buffers (weights stay)

 private:
  struct Plan;
  struct Pass;
  void run_encoder(float* mean, const float* image, int H, int W);   // one image, untiled; mean unscaled
  void run_decoder(float* image, const float* zin, int h, int w);    // one image, untiled; zin unscaled
  Plan& plan(bool encoder, int h, int w);
  void tiled(bool encoder, float* out, const float* in, int h, int w, const VaeRunOptions& opt);
  VaeConfig cfg_;
  Backend& be_;
  ParamLayout layout_;       // the tensors held as F32 (all of them for an F32 model)
  ParamLayout full_layout_;  // every tensor
  WFormat wfmt_ = WFormat::F32;
  std::map<std::string, QuantizedWeight> qw_;  // the low-precision weights (host memory)
  Buffer params_buf_;        // flat F32 parameters (layout_), on the backend
  float* params_ = nullptr;  // = params_buf_.f32()
  std::unique_ptr<Plan> plan_;
  double flops_ = 0;
  size_t peak_act_bytes_ = 0;
};

}  // namespace oboro
