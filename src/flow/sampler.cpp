#include "flow/sampler.h"
#include "core/error.h"
#include "core/rng.h"
#include "flow/flow.h"
#include <algorithm>

namespace oboro {

void initial_noise(uint64_t seed, int64_t n, float* out, uint64_t stream) { fill_normal(out, n, seed, stream, 0); }

TextBatch concat_text(const TextBatch& a, const TextBatch& b) {
  if (a.dim != b.dim) fail("internal error: text batches of different widths");
  TextBatch r;
  r.B = a.B + b.B;
  r.L = std::max(a.L, b.L);
  r.dim = a.dim;
  r.hidden.assign((size_t)r.B * r.L * r.dim, 0.f);
  r.mask.assign((size_t)r.B * r.L, 0.f);
  int row = 0;
  for (const TextBatch* t : {&a, &b})
    for (int i = 0; i < t->B; ++i, ++row) {
      std::copy_n(t->hidden.begin() + (size_t)i * t->L * t->dim, (size_t)t->L * t->dim,
                  r.hidden.begin() + (size_t)row * r.L * r.dim);
      std::copy_n(t->mask.begin() + (size_t)i * t->L, t->L, r.mask.begin() + (size_t)row * r.L);
    }
  return r;
}

std::vector<float> sample_euler(DiT& dit, const TextBatch& cond, const TextBatch& uncond, int h, int w,
                                const std::vector<uint64_t>& seeds, const SamplerOptions& opt) {
  const DiTConfig& cfg = dit.config();
  const int n = (int)seeds.size();
  if (cond.B != n) fail("internal error: ", cond.B, " prompts for ", n, " seeds");
  const bool guided = opt.cfg_scale != 1.f;
  if (guided && uncond.B != n) fail("internal error: ", uncond.B, " negative prompts for ", n, " seeds");
  if (cond.dim != cfg.text_dim)
    fail("the text encoder outputs width ", cond.dim, " but the model expects text_dim ", cfg.text_dim,
         ": use the text encoder the model was trained with");
  const int64_t per = (int64_t)cfg.latent_channels * h * w;
  const int n_tokens = (h / cfg.patch_size) * (w / cfg.patch_size);
  const std::vector<float> ts = opt.init ? euler_timesteps_from(opt.steps, n_tokens, opt.shift, opt.strength)
                                         : euler_timesteps(opt.steps, n_tokens, opt.shift);
  const int steps = (int)ts.size() - 1;
  std::vector<float> x((size_t)n * per);
  for (int i = 0; i < n; ++i) initial_noise(seeds[i], per, x.data() + (size_t)i * per, opt.noise_stream);
  if (opt.init) {  // x_t = t·x1 + (1 − t)·x0 (spec §6) at the first timestep
    const float t0 = ts[0];
    for (size_t k = 0; k < x.size(); ++k) x[k] = t0 * opt.init[k] + (1.f - t0) * x[k];
  }
  if (steps == 0) return x;

  const TextBatch txt = guided ? concat_text(cond, uncond) : cond;
  const int B = txt.B;
  const int run = opt.max_steps > 0 ? std::min(opt.max_steps, steps) : steps;
  std::vector<float> xin((size_t)B * per), v((size_t)B * per), tb(B);
  for (int s = 0; s < run; ++s) {
    std::copy(x.begin(), x.end(), xin.begin());
    if (guided) std::copy(x.begin(), x.end(), xin.begin() + (size_t)n * per);
    std::fill(tb.begin(), tb.end(), ts[s]);
    dit.forward(v.data(), xin.data(), tb.data(), txt.hidden.data(), txt.mask.data(), B, txt.L, h, w, false);
    const float dt = ts[s + 1] - ts[s];
    for (int i = 0; i < n; ++i) {
      float* xi = x.data() + (size_t)i * per;
      const float* vc = v.data() + (size_t)i * per;
      const float* vu = guided ? v.data() + (size_t)(n + i) * per : nullptr;
      for (int64_t k = 0; k < per; ++k) {
        float vel = guided ? vu[k] + opt.cfg_scale * (vc[k] - vu[k]) : vc[k];
        xi[k] += dt * vel;
      }
    }
    if (opt.on_step) opt.on_step(s + 1, steps, x);
  }
  return x;
}

}  // namespace oboro
