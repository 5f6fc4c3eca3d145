// T5 v1.1 encoder (spec §7) of any size: forward and backward over a flat parameter buffer.
#pragma once
#include "models/params.h"
#include "ops/backend.h"
#include "ops/weights.h"
#include <nlohmann/json.hpp>
#include <optional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

class TensorSource;

struct T5Config {
  int vocab_size = 0, d_model = 0, d_kv = 0, num_heads = 0, d_ff = 0, num_layers = 0;
  int rel_buckets = 32, rel_max_distance = 128;
  float eps = 1e-6f;
  // Inferred from tensor shapes (spec §7); `config.json` beside the file may supply
  // relative_attention_max_distance and layer_norm_epsilon.
  static T5Config infer(const TensorSource& src);
  static T5Config from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;  // Hugging Face config.json field names
  void validate(const std::string& where) const;
  int inner() const { return num_heads * d_kv; }  // attention width H·d_kv (need not equal d_model)
  int64_t param_count() const;
};

ParamLayout t5_param_layout(const T5Config& c);  // HF T5EncoderModel names, `shared.weight` first

// Relative position bucket of spec §7 for n = j − i (bidirectional): half = num_buckets/2, exact = half/2;
// b = half if n > 0 else 0; a = |n|; a < exact → b + a; else b + min(half − 1,
// exact + ⌊ln(a/exact) / ln(max_distance/exact) · (half − exact)⌋) (double precision, as Python's math.log).
int t5_relative_bucket(int n, int num_buckets, int max_distance);

// T5 tensors that may be stored in a low-precision format (docs/formats.md): the blocks' attention q/k/v/o and FFN
// wi_0/wi_1/wo weights. The shared embedding, the relative bias table and the norms never are.
// Read from the T5's tensor table (t5.cpp), as t5_param_layout is.
bool t5_quantizable(const std::string& name);
// The standard deviation of T5Encoder::init_weights' normal draw for a tensor (0 for the norms, initialised to 1).
double t5_init_stddev(const T5Config& c, const std::string& name);

class T5Encoder {
 public:
  // `weights`: storage of the quantisable Linear weights; a low-precision encoder is for inference only.
  T5Encoder(const T5Config& cfg, Backend& be, WFormat weights = WFormat::F32);
  ~T5Encoder();
  T5Encoder(const T5Encoder&) = delete;
  T5Encoder& operator=(const T5Encoder&) = delete;

  // A .safetensors file, a sharded index, or a directory (HF layout); decoder.* and lm_head.* ignored,
  // `encoder.embed_tokens.weight` accepted for `shared.weight`, any other unknown tensor is an error.
  // The config comes from the `oboro.t5_config` metadata when present, else T5Config::infer.
  // `type`: storage of the quantisable weights; unset = as the file records (`oboro.weight_format`, else F32).
  static std::unique_ptr<T5Encoder> load(const std::string& path, Backend& be,
                                         std::optional<WFormat> type = std::nullopt);
  WFormat weight_format() const { return wfmt_; }
  size_t weight_bytes() const;
  // Hugging Face T5 initialisation (factor 1): embedding N(0,1); q N(0, 1/(d_model·d_kv)); k, v, wi_* and the
  // bias table N(0, 1/d_model); o N(0, 1/(H·d_kv)); wo N(0, 1/d_ff); norms 1. Deterministic in `seed`.
  void init_weights(uint64_t seed);  // for training a small T5 from scratch
  // Every weight as `shared.weight` etc.; metadata `oboro.t5_config` (JSON) and
  // `modelspec.architecture` = `t5-v1.1-encoder`.
  void save(const std::string& path, const std::map<std::string, std::string>& extra_metadata = {}) const;

  const T5Config& config() const { return cfg_; }
  Backend& backend() const { return be_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_; }
  float* grads();
  void zero_grads();

  // ids (B, L) int32, mask (B, L) 1 valid / 0 pad (a key is valid iff mask != 0) — both HOST arrays (they come
  // from the tokenizer; ids are range-checked here: an error names the id and the vocabulary size);
  // hidden (B, L, d_model) out = final RMSNorm output, a backend buffer.
  // Rows of padded positions are unspecified; padding never changes valid rows.
  void forward(float* hidden, const int32_t* ids, const float* mask, int B, int L, bool training);
  // After forward(training = true): accumulate parameter gradients for dL/dhidden (a backend buffer), including
  // the embedding table and the shared relative-bias table (which receives the gradient of every layer).
  void backward(const float* dhidden);
  size_t num_params() const { return layout_.total(); }
  size_t activation_bytes() const;  // allocated so far: the forward's plan, plus the backward's scratch after one
  // The bytes forward(B, L, training) plans, without allocating: a dry run over the same list of activation buffers
  // (the memory plan's T5 estimate). Equal to activation_bytes() after such a forward.
  static size_t activation_bytes(const T5Config& cfg, int B, int L, bool training);

  struct LinearViews { WeightView q, k, v, o, wi0, wi1, wo; };  // one block's quantisable weights as forward reads them

 private:
  struct Impl;
  void plan(int B, int L, bool training);
  T5Config cfg_;
  Backend& be_;
  ParamLayout layout_;
  Buffer params_buf_, grads_buf_;  // flat F32 parameters and gradients (layout_), on the backend
  float* params_ = nullptr;        // = params_buf_.f32()
  float* grads_ = nullptr;         // = grads_buf_.f32() once allocated
  std::unique_ptr<Impl> impl_;
  void bind_linear_views();
  void require_f32(const char* what) const;
  WFormat wfmt_ = WFormat::F32;
  ParamLayout full_layout_;
  std::map<std::string, QuantizedWeight> qw_;
  std::vector<LinearViews> lv_;
};

}  // namespace oboro
