// LoRA training (issue 19, kohya's networks/lora.py on the DiT): the trainable parameter set of a LoRA run. It owns
// the LoRA weights, their gradients and (through TrainState) their AdamW moments, all backend buffers; the DiT is
// frozen (no weight gradients, no optimizer state) and calls this adapter after every targeted Linear
// (models/dit.h, LinearAdapter):
//   y = W·x + (alpha/dim) · up(down(x)),   down (dim, K), up (N, dim)
// down starts Kaiming-uniform (torch's kaiming_uniform_(a = √5): U(−1/√K, 1/√K)), up at zero, so a new LoRA
// leaves the model unchanged. Only F32 bases train (the DiT's backward reads F32 weights; a bf16/q8_0 base for LoRA
// training is not supported yet).
#pragma once
#include "lora/lora_file.h"
#include "lora/lora_keys.h"
#include "models/dit.h"
#include "models/params.h"
#include "ops/backend.h"
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace oboro {

struct TrainConfig;

// network_dim / network_alpha / network_args of a TrainConfig. network_args ("key=value" strings, kohya's form):
//   targets=attention,feed_forward,modulation,embedder,final   (default attention,feed_forward)
//   blocks=0-3,6                                               block indices of the block families (default all)
// attention = attention.qkv and attention.out, feed_forward = SwiGLU w1/w2/w3, modulation = the blocks' adaLN,
// embedder = t/bos/cap/x embedders, final = the final layer's linear and adaLN.
struct LoraSettings {
  int dim = 4;
  float alpha = 4;  // resolved: network_alpha 0 = dim
  std::vector<lora::Family> families;
  std::vector<std::pair<int, int>> blocks;  // inclusive ranges; empty = every block
  static LoraSettings from_config(const TrainConfig& cfg);
  float scale() const { return alpha / dim; }
  bool targets(const std::string& tensor) const;
  std::string args_json() const;  // ss_network_args: {"targets": "...", "blocks": "..."}
};

class LoraNetwork final : public LinearAdapter {
 public:
  // One module per targeted rank-2 weight of `dit`; down initialised from `seed`, up zero. Fails when nothing is
  // targeted.
  LoraNetwork(const DiT& dit, const LoraSettings& s, uint64_t seed);
  // `network_weights`: continue from a LoRA file (read and checked by lora::read_lora): every module of the file
  // must be one this network targets, with rank dim and alpha equal to network_alpha; errors name the file and key.
  void load_weights(const std::string& path, const DiT& dit);

  const LoraSettings& settings() const { return s_; }
  const ParamLayout& layout() const { return layout_; }  // "<tensor stem>.lora_down.weight" / ".lora_up.weight"
  size_t num_params() const { return layout_.total(); }
  size_t num_modules() const { return mods_.size(); }
  float* params() { return params_.f32(); }
  float* grads() { return grads_.f32(); }
  void zero_grads();
  // The modules as the LoRA file writer takes them (downloaded from the backend).
  std::vector<lora::LoraWriteModule> write_modules() const;

  void forward(const std::string& tensor, const float* x, int M, int K, std::initializer_list<Part> outs,
               bool training) override;
  void backward(const std::string& tensor, float* dx, const float* x, int M, int K,
                std::initializer_list<DPart> douts) override;

 private:
  struct Module {
    std::string tensor;
    int N = 0, K = 0;
    size_t down = 0, up = 0;  // offsets into params_/grads_ (down (r,K), up (N,r))
    Buffer zs;                // (M, r) alpha/dim · down(x) of the last training forward
    int zs_rows = 0;
  };
  Module* find(const std::string& tensor, int K);
  float* scratch(Buffer& b, size_t n, const char* what);

  Backend& be_;
  LoraSettings s_;
  ParamLayout layout_;
  std::vector<Module> mods_;
  std::map<std::string, size_t> by_tensor_;
  Buffer params_, grads_;
  Buffer z_, zs_, tmp_, dzs_, dz_;  // scratch: (M, r), (M, r), (M, N_part), (M, r), (M, r)
};

}  // namespace oboro
