// The memory plan of a training run, made from the configs alone before any model is allocated (issue 21):
// weights, gradients, AdamW moments and EMA of the DiT and of a trained text encoder (F32 each), the EMA swap
// at a save, and the activations of one training micro-batch (the models' own dry-run planners). A run whose
// plan exceeds the budget (MemAvailable + what the process already holds) is refused before it starts;
// `oboro train --no-memory-check` (TrainConfig::memory_check = false) skips the check.
#pragma once
#include "train/train_config.h"
#include <cstddef>
#include <cstdint>
#include <string>

namespace oboro {

struct TrainMemoryPlan {
  int64_t dit_params = 0, te_params = 0;
  size_t dit_state = 0;    // DiT: weights + gradients + AdamW m, v (+ EMA, + the EMA swap copy)
  size_t te_state = 0;     // text encoder: weights (+ gradients, AdamW, EMA when trained)
  size_t activations = 0;  // one micro-batch: DiT (training) + text encoder (training when trained)
  size_t baseline = 0;     // what the process holds already (VmRSS)
  size_t budget = 0;       // MemAvailable + baseline
  size_t peak() const { return baseline + dit_state + te_state + activations; }
  bool fits() const { return budget == 0 || peak() <= budget; }  // budget 0: /proc unreadable, not checked
  std::string refusal(const TrainConfig& cfg) const;  // one line: the sizes, the biggest part, the fixes
};

// The plan of `cfg` (new run), or of the checkpoint `resume_path` (its model configs) when not empty.
// `latent_channels`, `stride`: the codec's (LatentCodec).
TrainMemoryPlan plan_training(const TrainConfig& cfg, const std::string& resume_path, int latent_channels, int stride);
// Fails with plan.refusal() when the plan does not fit.
void check_train_memory(const TrainConfig& cfg, const std::string& resume_path, int latent_channels, int stride);

}  // namespace oboro
