// The oboro Diffusion Transformer (spec §2–§4): forward and hand-written backward over a
// flat parameter buffer, with activations planned up front for a given (B, L, h, w).
#pragma once
#include "models/dit_config.h"
#include "ops/backend.h"
#include "ops/weights.h"
#include <initializer_list>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

namespace dit_detail { struct Weights; }  // dit_internal.h

class TensorSource;

// A trainable addition to the DiT's Linear layers (LoRA training: train/lora_network.h). After a Linear
// y(M,N) = x(M,K)·Wᵀ (+ b) the DiT calls forward(tensor, x, M, K, outs, training) and the adapter adds its term to y,
// given as row blocks of W (attention.qkv: q, k, v, each (M, D)); in backward, backward(tensor, dx, x, M, K, douts)
// accumulates dx (M,K) (null: not needed) and the adapter's own gradients. `tensor` names W
// ("layers.0.attention.qkv.weight"); x is the Linear's input as the forward saw it (kept by a training forward).
class LinearAdapter {
 public:
  struct Part { float* y; int N; };
  struct DPart { const float* dy; int N; };
  virtual ~LinearAdapter() = default;
  virtual void forward(const std::string& tensor, const float* x, int M, int K, std::initializer_list<Part> outs,
                       bool training) = 0;
  virtual void backward(const std::string& tensor, float* dx, const float* x, int M, int K,
                        std::initializer_list<DPart> douts) = 0;
};

// The DiT tensors that may be stored in a low-precision format (docs/formats.md): the blocks' big Linear weights
// (attention qkv/out, SwiGLU w1/w2/w3, adaLN modulation). Norms, biases, embedders and the final layer never are.
// Read from the DiT's tensor table (dit.cpp), as dit_param_layout is.
bool dit_quantizable(const std::string& name);

class DiT {
 public:
  // `weights`: storage of the quantisable Linear weights (F32 = a trainable model). A low-precision model is for
  // inference only: its layout()/params() hold the F32 tensors alone and grads()/backward()/save() refuse.
  DiT(const DiTConfig& cfg, Backend& be, WFormat weights = WFormat::F32);
  ~DiT();
  DiT(const DiT&) = delete;
  DiT& operator=(const DiT&) = delete;

  // Load a model file (config from its `oboro.config` metadata).
  // `type`: storage of the quantisable weights; unset = as the file records (`oboro.weight_format`, else F32).
  // Weights already stored in `type` are memory-mapped, others converted while loading.
  static std::unique_ptr<DiT> load(const std::string& path, Backend& be, std::optional<WFormat> type = std::nullopt);
  // An independent copy with its quantisable weights in `fmt` (quantised from this model's weights).
  std::unique_ptr<DiT> converted(WFormat fmt) const;
  WFormat weight_format() const { return wfmt_; }
  // The attention arithmetic forward() asks for: BF16 for inference with low-precision weights, else F32.
  AttnPrecision attention_precision(bool training) const {
    return !training && wfmt_ != WFormat::F32 ? AttnPrecision::BF16 : AttnPrecision::F32;
  }
  size_t weight_bytes() const;  // F32 parameters + stored low-precision weights and scales
  // Spec initialisation: Linear weights N(0, 1/fan_in)·… (xavier-uniform-like normal), biases 0,
  // norm weights 1, adaLN and final layer zero. Deterministic in `seed`.
  void init_weights(uint64_t seed);
  // Every tensor random and non-zero (for tests: zero-init layers would hide gradients).
  void init_random_all(uint64_t seed);
  void save(const std::string& path, const std::map<std::string, std::string>& extra_metadata = {}) const;

  const DiTConfig& config() const { return cfg_; }
  Backend& backend() const { return be_; }
  const ParamLayout& layout() const { return layout_; }
  size_t num_params() const { return layout_.total(); }
  float* params() { return params_; }
  float* grads();                       // allocated on first use
  void zero_grads();
  // Adapter training (LoRA): the adapter's terms join every forward; a frozen model's backward computes no weight
  // gradients (grads() is never allocated), only the activation gradients the adapter needs. Not owned.
  void set_adapter(LinearAdapter* adapter) { adapter_ = adapter; }
  void set_frozen(bool frozen) { frozen_ = frozen; }
  bool frozen() const { return frozen_; }

  // Plan activation memory for a batch shape; `training` keeps every layer's activations
  // for backward, inference reuses one layer's worth. Called automatically by forward().
  void plan(int B, int L, int h, int w, bool training);
  size_t activation_bytes() const;
  // The bytes plan(B, L, h, w, training) allocates, without allocating: a dry run over the same list of activation
  // buffers (the memory plan's DiT estimate). Equal to activation_bytes() after such a forward.
  static size_t activation_bytes(const DiTConfig& cfg, int B, int L, int h, int w, bool training);

  // x (B,C,h,w), t (B), txt (B,L,text_dim), txt_mask (B,L) 1 = valid; v (B,C,h,w) out.
  // All pointers are backend buffers. Position 0 of every text row must be valid (BOS): TextBatch
  // (alloc_text_batch) guarantees it.
  // Attention precision: inference (training = false) with low-precision weights (weight_format() != F32) asks the
  // backend for AttnPrecision::BF16 attention (BF16 Q·Kᵀ and P·V, F32 softmax statistics); an F32 model and every
  // training forward use F32 attention (attention_precision()).
  void forward(float* v, const float* x, const float* t, const float* txt, const float* txt_mask, int B, int L, int h,
               int w, bool training);
  // After forward(training=true): accumulate parameter gradients for dL/dv; optional dtxt (B,L,text_dim) +=.
  void backward(const float* dv, float* dtxt = nullptr);

  // FLOPs of one forward (multiply-add = 2) for the given shape.
  static double forward_flops(const DiTConfig& cfg, int B, int L, int h, int w);

  struct Layer;  // pointers to one block's tensors (in params or grads)
  struct LinearViews { WeightView qkv, out, w1, w2, w3, ada; };  // one block's quantisable weights as the forward reads them

 private:
  struct Acts;
  struct LayerActs;
  struct GradScratch;
  void bind_views();
  void bind_linear_views();
  void require_f32(const char* what) const;
  // backward's parts (dit_backward.cpp), in the order it runs them; W/G: the non-block params / grads.
  GradScratch& grad_scratch(int M, int B, int L, int N);
  void adapt_back(int l, const char* name, float* dx, const float* xin, int M, int K,
                  std::initializer_list<LinearAdapter::DPart> douts);
  void final_layer_backward(const float* dv, const dit_detail::Weights& W, const dit_detail::Weights& G);
  void block_backward(int l);
  void embedders_backward(float* dtxt, const dit_detail::Weights& W, const dit_detail::Weights& G);
  void conditioning_backward(float* dtxt, const dit_detail::Weights& W, const dit_detail::Weights& G);

  DiTConfig cfg_;
  Backend& be_;
  ParamLayout layout_;
  Buffer params_buf_, grads_buf_;  // flat F32 parameters and gradients (layout_), on the backend
  float* params_ = nullptr;        // = params_buf_.f32()
  float* grads_ = nullptr;         // = grads_buf_.f32() once allocated
  std::vector<Layer> layers_, dlayers_;
  WFormat wfmt_ = WFormat::F32;
  ParamLayout full_layout_;                      // every tensor (layout_ lacks the quantised ones)
  std::map<std::string, QuantizedWeight> qw_;    // quantised weights (host memory or the mapped file)
  std::vector<LinearViews> lv_;
  std::unique_ptr<Acts> acts_;
  std::unique_ptr<GradScratch> gs_;
  LinearAdapter* adapter_ = nullptr;
  bool frozen_ = false;
};

}  // namespace oboro
