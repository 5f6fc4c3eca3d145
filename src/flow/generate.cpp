#include "flow/generate.h"
#include "flow/generate_prepare.h"
#include "core/error.h"
#include "core/sha256.h"
#include "io/file_hash.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "flow/inpaint.h"
#include "flow/model_paths.h"
#include "flow/request_check.h"
#include "flow/sampler.h"
#include "flow/upscale.h"
#include "io/safetensors.h"
#include "models/codec.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

namespace oboro {

namespace fs = std::filesystem;

namespace {

using generate_detail::Prepared;
using generate_detail::prepare;
using generate_detail::weight_format;

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Times and measures one stage: peak RSS reset at the start, read (with the RSS after release) at the end.
struct StageClock {
  GenerateStats* stats;
  double t0 = 0;
  void begin(const std::string& name) {
    if (!stats) return;
    reset_peak_rss();
    stats->stages.emplace_back();
    stats->stages.back().name = name;
    t0 = now_s();
  }
  void end() {
    if (!stats) return;
    trim_heap();
    auto& s = stats->stages.back();
    s.seconds = now_s() - t0;
    s.peak_rss = peak_rss_bytes();
    s.rss_after = current_rss_bytes();
  }
  void step(double dt) {
    if (stats) stats->stages.back().step_seconds.push_back(dt);
  }
};

// Bytes of the components a cache holds that this plan also uses (already in the plan's baseline RSS).
size_t cached_bytes(const ModelCache& c, const MemoryPlan& pl) {
  size_t b = 0;
  for (const WeightInfo& w : pl.weights) {
    const bool held = (w.component == "DiT" && c.dit && c.dit_key.rfind(w.path + "|", 0) == 0) ||
                      (w.component == "T5 v1.1 encoder" && c.te && c.te_key.rfind(w.path + "|", 0) == 0) ||
                      (w.component == "VAE" && c.vae && c.codec_key.rfind(w.path + "|", 0) == 0);
    if (held) b += w.resident_bytes;
  }
  return b;
}

// Whether every component can stay loaded: all weights + the largest stage's other bytes within the budget.
bool all_resident_fits(const MemoryPlan& pl) {
  size_t weights = 0, other = 0;
  for (const WeightInfo& w : pl.weights) weights += w.resident_bytes;
  for (const PlanStage& st : pl.stages) other = std::max(other, st.total() - st.weights);
  return pl.baseline + weights + other <= pl.budget;
}

}  // namespace

ModelCache::ModelCache() = default;
ModelCache::~ModelCache() = default;
void ModelCache::clear() {
  te.reset();
  dit.reset();
  vae.reset();
  te_key.clear();
  dit_key.clear();
  codec_key.clear();
  resident = false;
}

MemoryPlan plan_generation(const GenerateRequest& req) { return prepare(req).plan; }

std::vector<GeneratedImage> generate(Backend& be, const GenerateRequest& in, bool progress, GenerateStats* stats,
                                     const GenerateHooks* hooks) {
  Prepared p = prepare(in);
  const GenerateRequest& rq = p.rq;
  const DiTConfig& cfg = p.cfg;
  ModelCache* cache = hooks ? hooks->cache : nullptr;
  if (cache) p.plan.baseline -= std::min(p.plan.baseline, cached_bytes(*cache, p.plan));
  const bool keep = cache && all_resident_fits(p.plan);
  if (cache && !keep) cache->clear();
  if (cache) cache->resident = keep;
  auto check_cancel = [&] {
    if (hooks && hooks->cancel && hooks->cancel->load()) throw Cancelled();
  };
  if (stats) stats->plan = p.plan;
  if (progress) std::fprintf(stderr, "%s", p.plan.format().c_str());
  if (rq.check_memory && !p.plan.fits()) fail(p.plan.refusal());
  if (progress && !p.mask.note.empty()) std::fprintf(stderr, "warning: %s\n", p.mask.note.c_str());
  if (progress && p.truncated) std::fprintf(stderr, "warning: the prompt is longer than 256 tokens and was truncated\n");
  const bool tty = progress && isatty(2);
  StageClock clock{stats};
  const int n = rq.batch_size;
  const bool guided = rq.cfg_scale != 1.f;
  const uint64_t base_seed = rq.seed >= 0 ? (uint64_t)rq.seed : (std::random_device{}() & 0x7fffffff);
  auto seeds_of = [&](int it) {
    std::vector<uint64_t> s;
    for (int i = 0; i < n; ++i) s.push_back(base_seed + (uint64_t)(it * n + i));
    return s;
  };

  // LoRAs: resolved and validated against the model before anything loads; the prompt's tags are stripped from
  // the text the encoder sees.
  std::vector<LoraRequest> lora_reqs = rq.loras;
  const std::string encode_prompt = strip_prompt_loras(rq.prompt, lora_reqs);
  const std::string lora_dir = lora_dir_or_default(rq.lora_dir, models_dir_or_env(rq.models_dir));
  const LoraSet loras = read_lora_set(lora_reqs, lora_dir, rq.model);
  if (!loras.empty()) std::fprintf(stderr, "%s", loras.report().c_str());

  clock.begin("model hash");
  const std::string model_hash = sha256_file_cached(rq.model).substr(0, 10);
  const std::string model_name = fs::path(rq.model).stem().string();
  clock.end();

  // 1. Text: the T5 loads, encodes the prompt and the negative prompt once, and is released (unless kept).
  check_cancel();
  clock.begin("text encoder");
  TextBatch cond, uncond;
  {
    std::unique_ptr<TextEncoder> te_local;
    TextEncoder* te = nullptr;
    const std::string te_key = p.te_path + "|" + rq.te_type;
    if (keep && cache->te && cache->te_key == te_key) {
      te = cache->te.get();
    } else {
      if (keep) { cache->te.reset(); cache->te_key.clear(); }
      te_local = TextEncoder::load(p.te_path, be, weight_format(rq.te_type, "--te-type"));
      te = te_local.get();
      if (keep) { cache->te = std::move(te_local); cache->te_key = te_key; }
    }
    if (te->dim() != cfg.text_dim)
      fail(p.te_path, ": the text encoder outputs width ", te->dim(), " but the model ", rq.model, " expects text_dim ",
           cfg.text_dim, ": use the text encoder the model was trained with");
    cond = repeat_rows(be, te->encode({encode_prompt}, false), n);
    if (guided) uncond = repeat_rows(be, te->encode({rq.negative_prompt}, false), n);
  }
  clock.end();

  const std::string codec_key = rq.vae + "|" + rq.vae_type;
  auto open_codec = [&] {
    if (keep && cfg.codec == "flux-vae" && cache->vae && cache->codec_key == codec_key) {
      LatentCodec c;
      c.vae = cache->vae;
      c.stride = c.vae->config().stride();
      c.vae_options = p.vae_opt;
      return c;
    }
    if (keep) { cache->vae.reset(); cache->codec_key.clear(); }
    LatentCodec c = LatentCodec::open(cfg.codec, p.stride, rq.vae, be, "--vae", parse_vae_wformat(rq.vae_type, "--vae-type"));
    c.vae_options = p.vae_opt;
    if (keep && c.vae) { cache->vae = c.vae; cache->codec_key = codec_key; }
    return c;
  };
  // Previews of a VAE latent need the VAE's linear latent→RGB fit (computed once per VAE file).
  std::vector<float> preview_fit;
  if (hooks && hooks->on_step && cfg.codec == "flux-vae")
    preview_fit = vae_preview_fit(rq.vae, rq.vae_type, be, keep ? open_codec().vae : nullptr);
  const size_t per1 = (size_t)cfg.latent_channels * p.h * p.w, per2 = (size_t)cfg.latent_channels * p.h2 * p.w2;

  // 2. img2img: the init image's latent.
  std::vector<float> init_lat;
  if (!p.init.empty()) {
    check_cancel();
    clock.begin("VAE encode");
    LatentCodec codec = open_codec();
    std::vector<float> img((size_t)3 * p.H * p.W);
    image_to_chw(p.init, img.data());
    init_lat.resize(per1);
    codec.encode(img.data(), p.H, p.W, init_lat.data());
    clock.end();
  }
  std::vector<float> rep_init;
  if (!init_lat.empty())
    for (int i = 0; i < n; ++i) rep_init.insert(rep_init.end(), init_lat.begin(), init_lat.end());

  auto run_dit = [&](DiT& dit, int h, int w, int steps, const float* init_all, float strength, uint64_t stream,
                     const char* label, const float* mask) {
    std::vector<float> out;
    const size_t per = (size_t)cfg.latent_channels * h * w;
    for (int it = 0; it < rq.n_iter; ++it) {
      SamplerOptions so;
      so.steps = steps;
      so.cfg_scale = rq.cfg_scale;
      so.shift = rq.shift;
      so.noise_stream = stream;
      if (init_all) { so.init = init_all + (size_t)it * n * per; so.strength = strength; so.mask = mask; }
      if (stats) so.max_steps = stats->max_dit_steps;
      double ts = now_s();
      so.on_step = [&](int s, int total, const std::function<std::vector<float>()>& latents) {
        const double t1 = now_s();
        clock.step(t1 - ts);
        ts = t1;
        if (progress && (tty || s == total))
          std::fprintf(stderr, "%s%sbatch %d/%d step %d/%d%s", tty ? "\r" : "", label, it + 1, rq.n_iter, s, total,
                       s == total ? "\n" : "");
        if (hooks && hooks->on_step) {
          StepEvent ev;
          ev.pass = label[0] ? 1 : 0;
          ev.batch = it;
          ev.n_batches = rq.n_iter;
          ev.step = s;
          ev.total = total;
          ev.preview = [&](int max_side) {
            const std::vector<float> l = latents();
            return latent_preview(l.data(), cfg.latent_channels, h, w, p.stride, preview_fit, max_side);
          };
          hooks->on_step(ev);
        }
        check_cancel();
      };
      std::vector<float> lat = sample_euler(dit, cond, uncond, h, w, seeds_of(it), so);
      // Finite weights and options can still overflow (an f16/f8 format, an extreme CFG scale): never a black image
      // with exit 0.
      for (float v : lat)
        if (!std::isfinite(v))
          fail(label[0] ? "the refine pass" : "sampling", " produced non-finite latents (NaN/inf) with ", rq.model,
               " (CFG scale ", rq.cfg_scale, rq.dit_type.empty() ? "" : ", --type " + rq.dit_type,
               "): try a lower --cfg-scale or --type f32/bf16");
      out.insert(out.end(), lat.begin(), lat.end());
    }
    return out;
  };

  // 3. The first pass. The DiT comes from the cache when kept there, else it is loaded for the pass.
  std::unique_ptr<DiT> dit_local;
  DiT* dit = nullptr;
  // A model with LoRAs merged in is cached (if at all) under a key naming them, so a later request without them
  // loads the file afresh: no LoRA state leaks between generations.
  const std::string dit_key = rq.model + "|" + rq.dit_type + "|" + loras.key();
  auto acquire_dit = [&](const std::string& path, bool cacheable) {
    if (cacheable && keep && cache->dit && cache->dit_key == dit_key) return cache->dit.get();
    if (cacheable && keep) { cache->dit.reset(); cache->dit_key.clear(); }
    const std::optional<WFormat> type = weight_format(rq.dit_type, "--type");
    if (path == rq.model || loras.empty()) dit_local = load_dit_with_loras(path, be, type, loras);
    else dit_local = load_dit_with_loras(path, be, type, read_lora_set(lora_reqs, lora_dir, path));
    if (!cacheable || !keep) return dit_local.get();
    cache->dit = std::move(dit_local);
    cache->dit_key = dit_key;
    return cache->dit.get();
  };
  check_cancel();
  clock.begin("DiT");
  dit = acquire_dit(rq.model, true);
  std::vector<float> init_all;
  if (!rep_init.empty())
    for (int it = 0; it < rq.n_iter; ++it) init_all.insert(init_all.end(), rep_init.begin(), rep_init.end());
  std::vector<float> lat = run_dit(*dit, p.h, p.w, rq.steps, init_all.empty() ? nullptr : init_all.data(),
                                   rq.strength, 0, "", p.mask.latent.empty() ? nullptr : p.mask.latent.data());
  const bool keep_dit = p.hires && p.hr_latent && p.same_hr_model;
  if (!keep_dit) { dit_local.reset(); dit = nullptr; }
  clock.end();

  // 4. The refine pass: upscale, re-noise to hr_strength with fresh noise (Philox stream 1 of the seed), denoise.
  if (p.hires) {
    const int total = rq.n_iter * n;
    std::vector<float> up((size_t)total * per2);
    if (p.hr_latent) {
      for (int i = 0; i < total; ++i)
        resize_planes(lat.data() + i * per1, cfg.latent_channels, p.h, p.w, up.data() + i * per2, p.h2, p.w2, p.hr_filter);
    } else {
      clock.begin("refine upscale");
      LatentCodec codec = open_codec();
      std::vector<float> img((size_t)3 * p.H * p.W), big((size_t)3 * p.H2 * p.W2);
      for (int i = 0; i < total; ++i) {
        codec.decode(lat.data() + i * per1, p.H, p.W, img.data());
        for (auto& v : img) v = std::clamp(v, -1.f, 1.f);
        resize_planes(img.data(), 3, p.H, p.W, big.data(), p.H2, p.W2, p.hr_filter);
        codec.encode(big.data(), p.H2, p.W2, up.data() + i * per2);
      }
      clock.end();
    }
    clock.begin("refine DiT");
    check_cancel();
    if (!dit) dit = acquire_dit(p.hr_model, p.same_hr_model);
    lat = run_dit(*dit, p.h2, p.w2, rq.hr_steps > 0 ? rq.hr_steps : rq.steps, up.data(), rq.hr_strength, 1, "refine ", nullptr);
    dit_local.reset();
    dit = nullptr;
    clock.end();
  }

  // 5. Decode.
  check_cancel();
  clock.begin("VAE decode");
  std::vector<GeneratedImage> out;
  {
    LatentCodec codec = open_codec();
    const double shift = rq.shift ? resolution_shift((p.h / cfg.patch_size) * (p.w / cfg.patch_size)) : 1.0;
    std::vector<float> img((size_t)3 * p.H2 * p.W2);
    for (int it = 0; it < rq.n_iter; ++it) {
      const auto seeds = seeds_of(it);
      for (int i = 0; i < n; ++i) {
        codec.decode(lat.data() + ((size_t)it * n + i) * per2, p.H2, p.W2, img.data());
        GeneratedImage g;
        g.image = chw_to_image(img.data(), p.H2, p.W2);
        if (!p.mask.latent.empty()) g.image = composite_inpaint(g.image, p.init, p.mask.overlay);
        g.seed = seeds[i];
        std::vector<std::pair<std::string, std::string>> kv = {{"Steps", std::to_string(rq.steps)},
                                                               {"Sampler", "Euler"},
                                                               {"CFG scale", py_float32(rq.cfg_scale)},
                                                               {"Seed", std::to_string(g.seed)},
                                                               {"Size", str(p.W, "x", p.H)},
                                                               {"Model hash", model_hash},
                                                               {"Model", model_name}};
        nlohmann::json j = {{"prompt", rq.prompt}, {"negative_prompt", rq.negative_prompt}, {"width", p.W},
                            {"height", p.H}, {"steps", rq.steps}, {"cfg_scale", rq.cfg_scale}, {"seed", g.seed},
                            {"sampler_name", "Euler"}, {"shift", rq.shift}, {"model", model_name},
                            {"model_hash", model_hash}, {"rng", "philox4x32-10-cpu"}};
        if (!p.init.empty()) {
          kv.push_back({"Denoising strength", py_float32(rq.strength)});
          j["denoising_strength"] = rq.strength;
          if (!rq.init_image.empty()) j["init_image"] = rq.init_image;
        }
        if (p.hires) {
          kv.push_back({"Denoising strength", py_float32(rq.hr_strength)});
          if (rq.hr_resize_x > 0 || rq.hr_resize_y > 0) kv.push_back({"Hires resize", str(p.W2, "x", p.H2)});
          else kv.push_back({"Hires upscale", py_float32(rq.hr_scale)});
          if (rq.hr_steps > 0) kv.push_back({"Hires steps", std::to_string(rq.hr_steps)});
          kv.push_back({"Hires upscaler", p.hr_upscaler_name});
          if (!p.same_hr_model) kv.push_back({"Hires checkpoint", fs::path(p.hr_model).stem().string()});
          j["enable_hr"] = true;
          j["denoising_strength"] = rq.hr_strength;
          j["hr_scale"] = rq.hr_scale;
          j["hr_resize_x"] = rq.hr_resize_x > 0 || rq.hr_resize_y > 0 ? p.W2 : 0;
          j["hr_resize_y"] = rq.hr_resize_x > 0 || rq.hr_resize_y > 0 ? p.H2 : 0;
          j["hr_second_pass_steps"] = rq.hr_steps;
          j["hr_upscaler"] = p.hr_upscaler_name;
          if (!p.same_hr_model) j["hr_checkpoint_name"] = fs::path(p.hr_model).stem().string();
        }
        if (!loras.empty()) {
          kv.push_back({"Lora hashes", loras.infotext_hashes()});
          nlohmann::json lj = nlohmann::json::array();
          for (size_t i = 0; i < loras.loras.size(); ++i)
            lj.push_back({{"name", loras.loras[i].name}, {"path", loras.paths[i]}, {"weight", loras.loras[i].weight}});
          j["loras"] = lj;
        }
        kv.push_back({"Shift", py_float(std::round(shift * 1000) / 1000)});
        kv.push_back({"RNG", "Philox4x32-10 CPU"});
        if (!p.mask.latent.empty()) {  // A1111's extra_generation_params of an inpainting run
          kv.push_back({"Mask blur", std::to_string(rq.mask_blur)});
          if (rq.invert_mask) kv.push_back({"Mask mode", "Inpaint not masked"});
          j["mask_blur"] = rq.mask_blur;
          j["inpainting_mask_invert"] = rq.invert_mask ? 1 : 0;
          j["inpainting_fill"] = 1;  // "original"
          if (!rq.mask_image.empty()) j["mask"] = rq.mask_image;
        }
        kv.push_back({"Version", "oboro 0.1.0"});
        g.infotext = format_infotext(rq.prompt, rq.negative_prompt, kv);
        g.request_json = j.dump();
        out.push_back(std::move(g));
      }
    }
  }
  clock.end();
  return out;
}

}  // namespace oboro
