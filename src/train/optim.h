// AdamW over a flat parameter buffer, LR schedules with warmup, global grad-norm clipping.
// Every reduction runs over fixed chunks in a fixed order: results do not depend on thread count.
#pragma once
#include "models/params.h"
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.01f;
};

class AdamW {
 public:
  // Weight decay applies to matrices only (norm weights, biases and 1-D tensors are not decayed).
  void init(const ParamLayout& layout, const AdamWConfig& cfg);
  // One update with bias correction for step t (1-based).
  void step(float* params, const float* grads, float lr, int64_t t);
  size_t size() const { return m.size(); }
  std::vector<float> m, v;        // first and second moments (saved in checkpoints)

 private:
  AdamWConfig cfg_;
  std::vector<uint8_t> decay_;    // per element: 1 = decayed
};

// Σ g² over a buffer (double, fixed-order chunks).
double sum_squares(const float* g, size_t n);
bool all_finite(const float* g, size_t n);
void scale_inplace(float* g, size_t n, float s);

struct LrSchedule {
  std::string kind = "constant_with_warmup";  // constant | constant_with_warmup | linear | cosine
  double lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;                  // floor for linear/cosine decay, as a fraction of lr
  double at(int64_t step) const;              // lr for optimizer step `step` (0-based)
  static void validate_kind(const std::string& k);
};

// EMA: ema = decay·ema + (1 − decay)·params.
void ema_update(float* ema, const float* params, size_t n, float decay);
// EMA decay for optimizer step `step` (1-based), warmed up as min(decay, (1 + step)/(10 + step)) so the
// average forgets the random initial weights early instead of being dominated by them for ~1/(1−decay) steps.
float ema_decay_at(int64_t step, float decay);

}  // namespace oboro
