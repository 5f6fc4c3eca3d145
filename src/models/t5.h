// T5 v1.1 encoder (spec §7) of any size: forward and backward over a flat parameter buffer.
#pragma once
#include "models/params.h"
#include "ops/backend.h"
#include <nlohmann/json.hpp>
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
  nlohmann::json to_json() const;
  void validate(const std::string& where) const;
};

ParamLayout t5_param_layout(const T5Config& c);  // HF T5EncoderModel names, `shared.weight` first

// Relative position bucket of spec §7 for n = j − i (bidirectional).
int t5_relative_bucket(int n, int num_buckets, int max_distance);

class T5Encoder {
 public:
  T5Encoder(const T5Config& cfg, Backend& be);
  ~T5Encoder();
  T5Encoder(const T5Encoder&) = delete;
  T5Encoder& operator=(const T5Encoder&) = delete;

  // A .safetensors file, a sharded index, or a directory (HF layout); decoder.* and lm_head ignored.
  static std::unique_ptr<T5Encoder> load(const std::string& path, Backend& be);
  void init_weights(uint64_t seed);  // for training a small T5 from scratch
  void save(const std::string& path) const;

  const T5Config& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_; }
  float* grads();
  void zero_grads();

  // ids (B, L) int32, mask (B, L) 1 valid / 0 pad; hidden (B, L, d_model) out = final RMSNorm output.
  // Rows of padded positions are unspecified; padding never changes valid rows.
  void forward(float* hidden, const int32_t* ids, const float* mask, int B, int L, bool training);
  // After forward(training = true): accumulate parameter gradients for dL/dhidden.
  void backward(const float* dhidden);

 private:
  struct Impl;
  T5Config cfg_;
  Backend& be_;
  ParamLayout layout_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  std::unique_ptr<Impl> impl_;
};

}  // namespace oboro
