// Everything a training checkpoint holds: the models being trained, the one owner of their AdamW optimizers
// and EMA weights, and the run's counters. The training loop changes the weights only through
// zero_grads → grad_norm → optimizer_step (clipping folded in as a gradient scale) → ema_step.
//
// Where the tensors live: all on the backend. The model weights and gradients are the models' backend buffers
// (DiT::params()/grads(), T5Encoder::params()/grads()); the AdamW moments and decay masks (train/optim.h, AdamW)
// and the EMA weights (Ema) are Buffers owned here, updated by backend ops. The host only sees the scalars of a
// step (the squared gradient norm, downloaded once) and, for a checkpoint, the downloaded tensors.
#pragma once
#include "models/dit.h"
#include "models/text_encoder.h"
#include "ops/backend.h"
#include "train/lora_network.h"
#include "train/optim.h"
#include "train/train_config.h"
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

struct LatentCodec;
class BatchSource;

// Where the data stream stands: the next sample is number `index` of epoch `epoch` (images of the epoch's
// permutation for a folder, batches of the epoch's batch list for a cache; train/batch_source.h).
// A pure function of the run's seed, so a checkpoint only records these two numbers.
struct DataPosition {
  int64_t epoch = 0, index = 0;
};

// A checkpoint tensor: a backend buffer of `size` floats (checkpoint.cpp downloads and uploads it).
struct CheckpointTensor {
  const char* name;
  float* data;
  size_t size;
};

// The DiT of a new run without pretrained_model: the preset with the config's overrides, for a text encoder of
// `text_dim` and a codec of `latent_channels` (validated; errors name the setting).
DiTConfig new_dit_config(const TrainConfig& cfg, int text_dim, int latent_channels);

class TrainState {
 public:
  explicit TrainState(Backend& backend) : be(backend) {}

  Backend& be;                       // holds every tensor below and runs every op on them
  std::unique_ptr<TextEncoder> te;   // frozen, or trained jointly with the DiT when train_te
  std::unique_ptr<DiT> dit;
  bool train_te = false;
  // A LoRA run (cfg.lora()): the trained parameter set — the LoRA weights, their gradients, AdamW moments and EMA;
  // the DiT is frozen (set_frozen: no gradients, no optimizer state) and calls the network as its adapter.
  std::unique_ptr<LoraNetwork> lora;
  // Counters (all saved in checkpoints).
  int64_t step = 0;                  // optimizer steps done
  DataPosition data;
  int64_t samples_seen = 0;
  double loss_ema = 0;               // moving average of the loss (0.98), for the progress line and models
  double lr_scale = 1;               // learning-rate factor of loss-spike rollbacks (train/spike_guard.h)
  int64_t global_batch = 0;          // samples per optimizer step (all ranks) of the run that saved the state
                                     // (0: a checkpoint from before data-parallel training recorded it)

  // A new run's models: a frozen pretrained T5, or a small T5 and a vocabulary trained on the data's
  // captions (the tokenizer goes to output_dir/tokenizer.*); a pretrained DiT, or a new one from the preset.
  void create_models(const TrainConfig& cfg, const LatentCodec& codec, const BatchSource& data);
  // Zero AdamW moments (DiT, and T5 when trained); EMA = the current weights when cfg.ema_decay > 0.
  // A LoRA run creates its network here (down from the seed, up zero), attached to the frozen DiT.
  void init_optimizers(const TrainConfig& cfg);
  // A new LoRA run with network_weights: continue from that file (not on resume: the checkpoint has the weights).
  void load_network_weights(const TrainConfig& cfg);
  bool has_ema() const { return ema_dit_.enabled() || ema_lora_.enabled(); }

  // ---- one optimizer step
  void zero_grads();
  // √(Σ g²) over every trained parameter: Backend::sum_squares (fixed order) into one F64 scalar, downloaded.
  double grad_norm();
  // AdamW update number step + 1 (the caller then advances step), the gradients scaled by `grad_scale` first
  // (clip_scale below; 1 = none).
  void optimizer_step(float lr, float grad_scale);
  void ema_step(float ema_decay);            // EMA towards the weights, decay warmed up by `step`

  // The checkpoint's tensors, in file order: dit.params, dit.adam_m, dit.adam_v, [dit.ema], t5.params and,
  // when the T5 is trained, t5.adam_m, t5.adam_v, [t5.ema]. Brackets: only with an EMA. A LoRA run: dit.params
  // (the frozen base, so a resume needs nothing else), lora.params, lora.adam_m, lora.adam_v, [lora.ema], t5.params.
  std::vector<CheckpointTensor> checkpoint_tensors();

 private:
  friend class EmaWeightsInModels;
  AdamW opt_dit_, opt_te_, opt_lora_;  // moments m, v and the decay masks: backend Buffers
  Ema ema_dit_, ema_te_, ema_lora_;    // the weights' EMA, backend Buffers (not enabled(): no EMA)
  Buffer norm_sq_;          // (1) F64: Σ g² of the last grad_norm()
};

// Global-norm clipping as a gradient scale: max_grad_norm / ‖g‖ when ‖g‖ is above it (max_grad_norm > 0),
// else 1.
inline float clip_scale(double grad_norm, float max_grad_norm) {
  return max_grad_norm > 0 && grad_norm > max_grad_norm ? (float)(max_grad_norm / grad_norm) : 1.f;
}

// Puts the EMA weights into a model's parameter buffer for its lifetime, then restores the raw weights; both
// copies stay on the backend (a no-op when the EMA is not enabled).
class EmaSwap {
 public:
  EmaSwap(Backend& be, float* params, const Ema& ema);
  ~EmaSwap();
  EmaSwap(const EmaSwap&) = delete;
  EmaSwap& operator=(const EmaSwap&) = delete;

 private:
  Backend& be_;
  float* params_;
  Buffer raw_;  // the raw weights while the EMA ones are in the model
};

// While alive, both models hold their EMA weights (when the run keeps an EMA: sample images and inference
// files use them); the raw weights are put back after (T5 first, then the DiT).
class EmaWeightsInModels {
 public:
  explicit EmaWeightsInModels(TrainState& s);

 private:
  EmaSwap dit_, te_, lora_;
};

}  // namespace oboro
