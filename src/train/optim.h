// AdamW over a flat parameter buffer, LR schedules with warmup, EMA. The moments, the weight-decay mask and the EMA
// weights live in backend buffers and every update is one backend op (Backend::adamw_update, ema_update); the host
// only computes the scalars of a step (learning rate, bias corrections, the clipping scale).
#pragma once
#include "models/params.h"
#include "ops/backend.h"
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
  void init(Backend& be, const ParamLayout& layout, const AdamWConfig& cfg);
  // One update with bias correction for step t (1-based); the gradient is multiplied by grad_scale first
  // (global-norm clipping, 1 = none). params and grads are backend buffers of size() values.
  void step(float* params, const float* grads, float lr, int64_t t, float grad_scale = 1.f);
  size_t size() const { return m.size(); }
  Buffer m, v;  // first and second moments (F32, saved in checkpoints)

 private:
  Backend* be_ = nullptr;
  AdamWConfig cfg_;
  Buffer decay_;  // (size) U8: 1 = decayed
};

// Exponential moving average of a parameter buffer: ema = decay·ema + (1 − decay)·params, on the backend.
class Ema {
 public:
  void init(Backend& be, const float* params, size_t n, const char* what);  // ema = params
  void update(const float* params, float decay);
  bool enabled() const { return !w.empty(); }
  size_t size() const { return w.size(); }
  Buffer w;  // (size) F32 (saved in checkpoints)

 private:
  Backend* be_ = nullptr;
};

struct LrSchedule {
  std::string kind = "constant_with_warmup";  // constant | constant_with_warmup | linear | cosine
  double lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;                  // floor for linear/cosine decay, as a fraction of lr
  double at(int64_t step) const;              // lr for optimizer step `step` (0-based)
  static void validate_kind(const std::string& k);
};

// EMA decay for optimizer step `step` (1-based), warmed up as min(decay, (1 + step)/(10 + step)) so the
// average forgets the random initial weights early instead of being dominated by them for ~1/(1−decay) steps.
float ema_decay_at(int64_t step, float decay);

}  // namespace oboro
