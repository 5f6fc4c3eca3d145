// Flow matching (spec §6): the I-CFM training pair and the Euler sampling schedule.
// t = 0 is noise, t = 1 is data; the model's velocity points from noise to data.
#pragma once
#include "ops/backend.h"
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

enum class TimestepSampling { Uniform, LogitNormal };
TimestepSampling timestep_sampling_from_name(const std::string& s);  // "uniform" | "logit_normal"

// Random streams of one training step, all from Philox keyed by (seed, step, slot): a resumed run
// draws exactly the numbers the uninterrupted run drew.
struct StepRng {
  uint64_t seed;
  uint64_t step;
  uint64_t stream(uint64_t slot) const { return step * 64 + slot; }
};
enum RngSlot : uint64_t { kSlotNoise = 1, kSlotEps = 2, kSlotTime = 3, kSlotDropout = 4, kSlotCrop = 5, kSlotShuffle = 6 };

// The draws of one I-CFM pair (spec §6), for Backend::icfm_pair: for B samples of n values each (x1 = data latents),
//   x0 ~ N(0, I), t ~ U[0,1] (or logit-normal), ε ~ N(0, I),
//   x_t = t·x1 + (1 − t)·x0 + σ·ε,  target u = x1 − x0,
// with t from the step's kSlotTime stream (element b), x0 and ε from kSlotNoise / kSlotEps (sample b's block of n).
IcfmDraw icfm_draw(const StepRng& rng, float sigma, TimestepSampling ts);

// Euler timesteps t_0 = 0 < … < t_S = 1 with the FLUX resolution shift for N image tokens
// (shift on: k = exp(μ), μ = 0.5 + (N − 256)·(1.15 − 0.5)/(4096 − 256)). Returns S + 1 values.
std::vector<float> euler_timesteps(int steps, int n_tokens, bool shift);
double resolution_shift(int n_tokens);  // k

// img2img / refine (A1111 semantics): of a `steps`-step run, round(steps·strength) steps are run (at least 1
// when strength > 0; 0 when strength is 0), starting at t = 1 − strength (strength = the noise fraction, so 1 is
// pure noise = txt2img and 0 the clean image). Their unshifted s = 1 − t values are spaced evenly from
// shift⁻¹(strength) down to 0 and then shifted like euler_timesteps, so strength 1 returns exactly
// euler_timesteps(steps, ...). Returns img2img_steps + 1 values (just {1} when strength is 0).
int img2img_steps(int steps, double strength);
std::vector<float> euler_timesteps_from(int steps, int n_tokens, bool shift, double strength);

}  // namespace oboro
