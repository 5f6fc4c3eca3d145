#include "train/optim.h"
#include "core/error.h"
#include "core/threads.h"
#include <algorithm>
#include <cmath>

namespace oboro {

void AdamW::init(Backend& be, const ParamLayout& layout, const AdamWConfig& cfg) {
  be_ = &be;
  cfg_ = cfg;
  m = be.alloc(layout.total(), DType::F32, "adamw.m");
  v = be.alloc(layout.total(), DType::F32, "adamw.v");
  std::vector<uint8_t> decay(layout.total(), 0);
  for (const auto& pv : layout.views())
    if (pv.shape.size() >= 2) std::fill_n(decay.begin() + pv.offset, pv.numel(), 1);
  decay_ = be.alloc(layout.total(), DType::U8, "adamw.decay_mask");
  be.upload(decay_.u8(), decay.data(), decay.size());
}

void AdamW::step(float* p, const float* g, float lr, int64_t t, float grad_scale) {
  AdamWUpdate u;
  u.lr = lr, u.beta1 = cfg_.beta1, u.beta2 = cfg_.beta2, u.eps = cfg_.eps, u.weight_decay = cfg_.weight_decay;
  const double bc1 = 1.0 - std::pow((double)u.beta1, (double)t), bc2 = 1.0 - std::pow((double)u.beta2, (double)t);
  u.step_size = (float)(lr / bc1);
  u.inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  u.grad_scale = grad_scale;
  be_->adamw_update(p, g, m.f32(), v.f32(), decay_.u8(), m.size(), u);
}

void Ema::init(Backend& be, const float* params, size_t n, const char* what) {
  be_ = &be;
  w = be.alloc(n, DType::F32, what);
  be.copy(w.f32(), params, n);
}

void Ema::update(const float* params, float decay) { be_->ema_update(w.f32(), params, w.size(), decay); }

void LrSchedule::validate_kind(const std::string& k) {
  if (k != "constant" && k != "constant_with_warmup" && k != "linear" && k != "cosine")
    fail("unknown lr_scheduler '", k, "': choose constant, constant_with_warmup, linear or cosine");
}

double LrSchedule::at(int64_t step) const {
  if (kind != "constant" && warmup_steps > 0 && step < warmup_steps) return lr * (double)(step + 1) / warmup_steps;
  if (kind == "constant" || kind == "constant_with_warmup") return lr;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double p = std::min(1.0, std::max(0.0, (double)(step - warmup_steps) / span));
  const double lo = lr * min_lr_ratio;
  if (kind == "linear") return lo + (lr - lo) * (1.0 - p);
  return lo + (lr - lo) * 0.5 * (1.0 + std::cos(M_PI * p));  // cosine
}

float ema_decay_at(int64_t step, float decay) {
  return std::min(decay, (float)((1.0 + (double)step) / (10.0 + (double)step)));
}

}  // namespace oboro
