#include "flow/flow.h"
#include "core/error.h"
#include "core/rng.h"
#include <algorithm>
#include <cmath>

namespace oboro {

TimestepSampling timestep_sampling_from_name(const std::string& s) {
  if (s == "uniform") return TimestepSampling::Uniform;
  if (s == "logit_normal" || s == "logit-normal") return TimestepSampling::LogitNormal;
  fail("unknown timestep_sampling '", s, "': choose uniform or logit_normal");
}

void icfm_pair(const float* x1, int B, int64_t n, float sigma, TimestepSampling ts, const StepRng& rng, float* t_out,
               float* xt_out, float* u_out) {
  for (int b = 0; b < B; ++b) {
    float t;
    if (ts == TimestepSampling::Uniform) {
      t = uniform_at(rng.seed, rng.stream(kSlotTime), (uint64_t)b);
    } else {  // logit-normal(0, 1): t = sigmoid(z)
      float z = normal_at(rng.seed, rng.stream(kSlotTime), (uint64_t)b);
      t = 1.f / (1.f + std::exp(-z));
    }
    t_out[b] = t;
  }
  std::vector<float> x0(n), eps(n);
  for (int b = 0; b < B; ++b) {
    // Each sample's noise is its own block of the stream: independent of the batch layout.
    fill_normal(x0.data(), n, rng.seed, rng.stream(kSlotNoise), (uint64_t)b * (uint64_t)n);
    if (sigma != 0.f) fill_normal(eps.data(), n, rng.seed, rng.stream(kSlotEps), (uint64_t)b * (uint64_t)n);
    const float t = t_out[b];
    const float* x = x1 + (size_t)b * n;
    float* xt = xt_out + (size_t)b * n;
    float* u = u_out + (size_t)b * n;
    for (int64_t i = 0; i < n; ++i) {
      xt[i] = t * x[i] + (1.f - t) * x0[i] + (sigma != 0.f ? sigma * eps[i] : 0.f);
      u[i] = x[i] - x0[i];
    }
  }
}

double resolution_shift(int n_tokens) {
  double mu = 0.5 + (n_tokens - 256.0) * (1.15 - 0.5) / (4096.0 - 256.0);
  return std::exp(mu);
}

std::vector<float> euler_timesteps(int steps, int n_tokens, bool shift) {
  if (steps < 1) fail("steps must be at least 1, got ", steps);
  const double k = shift ? resolution_shift(n_tokens) : 1.0;
  std::vector<float> t(steps + 1);
  for (int i = 0; i <= steps; ++i) {
    double s = 1.0 - (double)i / steps;
    s = k * s / (1.0 + (k - 1.0) * s);
    t[i] = (float)(1.0 - s);
  }
  return t;
}

int img2img_steps(int steps, double strength) {
  if (!(strength >= 0.0 && strength <= 1.0)) fail("strength must be between 0 and 1, got ", strength);
  if (strength == 0.0) return 0;
  return std::max(1, (int)std::lround(steps * strength));
}

std::vector<float> euler_timesteps_from(int steps, int n_tokens, bool shift, double strength) {
  if (steps < 1) fail("steps must be at least 1, got ", steps);
  const int n = img2img_steps(steps, strength);
  if (n == 0) return {1.f};
  const double k = shift ? resolution_shift(n_tokens) : 1.0;
  // s0 = the unshifted s whose shifted value is `strength` (inverse of s -> k·s/(1+(k−1)s)).
  const double s0 = strength >= 1.0 ? 1.0 : strength / (k - (k - 1.0) * strength);
  std::vector<float> t(n + 1);
  for (int i = 0; i <= n; ++i) {
    double s = s0 * (1.0 - (double)i / n);
    s = k * s / (1.0 + (k - 1.0) * s);
    t[i] = (float)(1.0 - s);
  }
  return t;
}

}  // namespace oboro
