#include "flow/sampler.h"
#include "core/error.h"
#include "core/rng.h"
#include "flow/flow.h"
#include <algorithm>

namespace oboro {

void initial_noise(uint64_t seed, int64_t n, float* out, uint64_t stream) { fill_normal(out, n, seed, stream, 0); }

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
  Backend& be = dit.backend();
  // x: the n images' latents (n, C, h, w); the starting noise comes from the CPU counter-based generator.
  Buffer x = be.alloc((size_t)n * per, DType::F32, "sampler.x");
  {
    std::vector<float> noise((size_t)n * per);
    for (int i = 0; i < n; ++i) initial_noise(seeds[i], per, noise.data() + (size_t)i * per, opt.noise_stream);
    be.upload(x.f32(), noise.data(), noise.size());
  }
  if (opt.mask && !opt.init) fail("internal error: an inpainting mask without an init image");
  // Inpainting keeps the starting noise, the init latents and the mask (n, C, h, w) on the backend.
  Buffer init, noise0, mask;
  if (opt.init) {  // x_t = t·x1 + (1 − t)·x0 (spec §6) at the first timestep
    init = be.alloc((size_t)n * per, DType::F32, "sampler.init");
    be.upload(init.f32(), opt.init, (size_t)n * per);
    if (opt.mask) {
      noise0 = be.alloc((size_t)n * per, DType::F32, "sampler.noise");
      be.copy(noise0.f32(), x.f32(), (size_t)n * per);
      std::vector<float> m((size_t)n * per);
      const size_t hw = (size_t)h * w;
      for (size_t k = 0; k < m.size(); ++k) m[k] = opt.mask[k % hw];
      mask = upload_new(be, m, "sampler.mask");
    }
    be.flow_interpolate(x.f32(), init.f32(), ts[0], (size_t)n * per);
  }
  if (steps == 0) return download_all(x);

  const TextBatch txt = guided ? concat_text(be, cond, uncond) : TextBatch{};
  const TextBatch& text = guided ? txt : cond;
  const int B = text.B;
  const int run = opt.max_steps > 0 ? std::min(opt.max_steps, steps) : steps;
  // The DiT's batch: [cond ‖ uncond] rows of the same latents x; v its velocities; tb the timestep of each row.
  Buffer xin = be.alloc((size_t)B * per, DType::F32, "sampler.xin"), v = be.alloc((size_t)B * per, DType::F32, "sampler.v"),
         tb = be.alloc(B, DType::F32, "sampler.t");
  for (int s = 0; s < run; ++s) {
    be.copy(xin.f32(), x.f32(), (size_t)n * per);
    if (guided) be.copy(xin.f32() + (size_t)n * per, x.f32(), (size_t)n * per);
    be.fill(tb.f32(), ts[s], B);
    dit.forward(v.f32(), xin.f32(), tb.f32(), text.hidden.f32(), text.mask.f32(), B, text.L, h, w, false);
    const float dt = ts[s + 1] - ts[s];
    be.euler_cfg_step(x.f32(), v.f32(), guided ? v.f32() + (size_t)n * per : nullptr, opt.cfg_scale, dt,
                      (size_t)n * per);
    if (opt.mask) be.inpaint_blend(x.f32(), noise0.f32(), init.f32(), mask.f32(), ts[s + 1], (size_t)n * per);
    if (opt.on_step) opt.on_step(s + 1, steps, [&] { return download_all(x); });
  }
  return download_all(x);
}

}  // namespace oboro
