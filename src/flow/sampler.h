// Euler ODE sampler with classifier-free guidance (spec §6): cond and uncond run as ONE batched
// forward (text padded, keys masked). Each image's starting noise depends only on its seed.
#pragma once
#include "models/dit.h"
#include "models/text_encoder.h"
#include <cstdint>
#include <functional>
#include <vector>

namespace oboro {

struct SamplerOptions {
  int steps = 30;
  float cfg_scale = 5.f;
  bool shift = true;
  // img2img / refine: clean latents (n, C, h, w) to start from. The run starts at t = 1 − strength from
  // x = t·init + (1 − t)·noise and runs img2img_steps(steps, strength) steps (flow.h). null = txt2img.
  const float* init = nullptr;
  float strength = 1.f;
  // Inpainting (needs init): latent mask (h, w) in [0, 1], 1 = repaint, shared by the n images. After every step
  // the kept region is re-imposed as t·init + (1 − t)·noise (the image's starting noise) at the step's flow time,
  // so at t = 1 it is the init latent exactly. null = the whole image is sampled.
  const float* mask = nullptr;
  uint64_t noise_stream = 0;  // Philox stream of the starting noise (0: the txt2img noise of the seed)
  int max_steps = 0;          // > 0: stop after this many steps (benchmarks time a prefix of the schedule)
  // Called after each step with (step, total, latents): calling `latents()` downloads the batch's current latents
  // (n, C, h, w) — only callers that show a preview pay for it.
  std::function<void(int, int, const std::function<std::vector<float>()>& latents)> on_step;
};

// Initial noise of one image: N(0, I) of n values from Philox(seed, stream), drawn on the CPU.
void initial_noise(uint64_t seed, int64_t n, float* out, uint64_t stream = 0);

// cond / uncond: n rows each (uncond ignored when cfg_scale == 1), on the DiT's backend. The latents stay on the
// backend during sampling; returns them downloaded (n, C, h, w). `opt.init` is host memory (uploaded once).
std::vector<float> sample_euler(DiT& dit, const TextBatch& cond, const TextBatch& uncond, int h, int w,
                                const std::vector<uint64_t>& seeds, const SamplerOptions& opt);


}  // namespace oboro
