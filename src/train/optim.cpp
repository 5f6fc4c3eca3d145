#include "train/optim.h"
#include "core/error.h"
#include "core/threads.h"
#include <algorithm>
#include <cmath>

namespace oboro {

namespace {
constexpr int64_t kChunks = 256;  // fixed reduction chunks, independent of the thread count
}

void AdamW::init(const ParamLayout& layout, const AdamWConfig& cfg) {
  cfg_ = cfg;
  m.assign(layout.total(), 0.f);
  v.assign(layout.total(), 0.f);
  decay_.assign(layout.total(), 0);
  for (const auto& pv : layout.views())
    if (pv.shape.size() >= 2) std::fill_n(decay_.begin() + pv.offset, pv.numel(), 1);
}

void AdamW::step(float* p, const float* g, float lr, int64_t t) {
  const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps, wd = cfg_.weight_decay;
  const double bc1 = 1.0 - std::pow((double)b1, (double)t), bc2 = 1.0 - std::pow((double)b2, (double)t);
  const float step_size = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  parallel_for((int64_t)m.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float gi = g[i];
      m[i] = b1 * m[i] + (1.f - b1) * gi;
      v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
      if (decay_[i]) p[i] -= lr * wd * p[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  }, 4096);
}

double sum_squares(const float* g, size_t n) {
  std::vector<double> part(kChunks, 0.0);
  parallel_for(kChunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      size_t b = n * c / kChunks, e = n * (c + 1) / kChunks;
      double s = 0;
      for (size_t i = b; i < e; ++i) s += (double)g[i] * g[i];
      part[c] = s;
    }
  });
  double s = 0;
  for (double x : part) s += x;
  return s;
}

bool all_finite(const float* g, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(g[i])) return false;
  return true;
}

void scale_inplace(float* g, size_t n, float s) {
  parallel_for((int64_t)n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) g[i] *= s; }, 16384);
}

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

void ema_update(float* ema, const float* p, size_t n, float decay) {
  parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ema[i] = decay * ema[i] + (1.f - decay) * p[i];
  }, 16384);
}

}  // namespace oboro
