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

IcfmDraw icfm_draw(const StepRng& rng, float sigma, TimestepSampling ts) {
  IcfmDraw d;
  d.seed = rng.seed;
  d.time_stream = rng.stream(kSlotTime);
  d.noise_stream = rng.stream(kSlotNoise);
  d.eps_stream = rng.stream(kSlotEps);
  d.sigma = sigma;
  d.logit_normal = ts == TimestepSampling::LogitNormal;
  return d;
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
