// The oboro Diffusion Transformer (spec §2–§4): forward and hand-written backward over a
// flat parameter buffer, with activations planned up front for a given (B, L, h, w).
#pragma once
#include "models/dit_config.h"
#include "ops/backend.h"
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

class TensorSource;

class DiT {
 public:
  DiT(const DiTConfig& cfg, Backend& be);
  ~DiT();
  DiT(const DiT&) = delete;
  DiT& operator=(const DiT&) = delete;

  // Load a model file (config from its `oboro.config` metadata).
  static std::unique_ptr<DiT> load(const std::string& path, Backend& be);
  // Spec initialisation: Linear weights N(0, 1/fan_in)·… (xavier-uniform-like normal), biases 0,
  // norm weights 1, adaLN and final layer zero. Deterministic in `seed`.
  void init_weights(uint64_t seed);
  // Every tensor random and non-zero (for tests: zero-init layers would hide gradients).
  void init_random_all(uint64_t seed);
  void save(const std::string& path, const std::map<std::string, std::string>& extra_metadata = {}) const;

  const DiTConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  size_t num_params() const { return layout_.total(); }
  float* params() { return params_; }
  float* grads();                       // allocated on first use
  void zero_grads();

  // Plan activation memory for a batch shape; `training` keeps every layer's activations
  // for backward, inference reuses one layer's worth. Called automatically by forward().
  void plan(int B, int L, int h, int w, bool training);
  size_t activation_bytes() const;

  // x (B,C,h,w), t (B), txt (B,L,text_dim), txt_mask (B,L) 1 = valid; v (B,C,h,w) out.
  // All pointers are backend buffers. Position 0 of every text row must be valid (BOS).
  void forward(float* v, const float* x, const float* t, const float* txt, const float* txt_mask, int B, int L, int h,
               int w, bool training);
  // After forward(training=true): accumulate parameter gradients for dL/dv; optional dtxt (B,L,text_dim) +=.
  void backward(const float* dv, float* dtxt = nullptr);

  // FLOPs of one forward (multiply-add = 2) for the given shape.
  static double forward_flops(const DiTConfig& cfg, int B, int L, int h, int w);

  struct Layer;  // pointers to one block's tensors (in params or grads)

 private:
  struct Acts;
  struct LayerActs;
  struct GradScratch;
  void bind_views();

  DiTConfig cfg_;
  Backend& be_;
  ParamLayout layout_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  std::vector<Layer> layers_, dlayers_;
  std::unique_ptr<Acts> acts_;
  std::unique_ptr<GradScratch> gs_;
};

}  // namespace oboro
