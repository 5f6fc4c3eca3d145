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

// Prints the plan and the request's warnings (with progress) and refuses a plan that does not fit (--check-memory).
void report_plan(const Prepared& p, bool progress, GenerateStats* stats) {
  const GenerateRequest& rq = p.rq;
  if (stats) stats->plan = p.plan;
  if (progress) std::fprintf(stderr, "%s", p.plan.format().c_str());
  if (rq.check_memory && !p.plan.fits()) fail(p.plan.refusal());
  if (progress && !p.mask.note.empty()) std::fprintf(stderr, "warning: %s\n", p.mask.note.c_str());
  if (progress && p.truncated) std::fprintf(stderr, "warning: the prompt is longer than 256 tokens and was truncated\n");
}

// The A1111 infotext and the request JSON of one image g (its seed set), as A1111 writes them.
void describe_image(GeneratedImage& g, const Prepared& p, const LoraSet& loras, const std::string& model_hash,
                    const std::string& model_name, double shift) {
  const GenerateRequest& rq = p.rq;
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
}

// One generate() call, stage by stage (its member functions, in the order generate() runs them), with what the
// stages share: the prepared request, the model cache (`keep`: models stay loaded), clock, hooks, seeds and prompts.
class GenerateRun {
 public:
  GenerateRun(Backend& be, const Prepared& p, bool progress, GenerateStats* stats, const GenerateHooks* hooks,
              ModelCache* cache, bool keep)
      : be_(be), p_(p), rq_(p.rq), cfg_(p.cfg), hooks_(hooks), stats_(stats), cache_(cache), keep_(keep),
        progress_(progress), tty_(progress && isatty(2)), clock_{stats}, n_(rq_.batch_size),
        guided_(rq_.cfg_scale != 1.f),
        base_seed_(rq_.seed >= 0 ? (uint64_t)rq_.seed : (std::random_device{}() & 0x7fffffff)) {}

  // LoRAs: resolved and validated against the model before anything loads; the prompt's tags are stripped from
  // the text the encoder sees.
  void resolve_loras() {
    lora_reqs_ = rq_.loras;
    encode_prompt_ = strip_prompt_loras(rq_.prompt, lora_reqs_);
    lora_dir_ = lora_dir_or_default(rq_.lora_dir, models_dir_or_env(rq_.models_dir));
    loras_ = read_lora_set(lora_reqs_, lora_dir_, rq_.model);
    if (!loras_.empty()) std::fprintf(stderr, "%s", loras_.report().c_str());
  }

  // The model's short hash and name for the infotext.
  void hash_model() {
    clock_.begin("model hash");
    model_hash_ = sha256_file_cached(rq_.model).substr(0, 10);
    model_name_ = fs::path(rq_.model).stem().string();
    clock_.end();
  }

  // 1. Text: the T5 loads, encodes the prompt and the negative prompt once, and is released (unless kept).
  void encode_prompts() {
    check_cancel();
    clock_.begin("text encoder");
    {
      std::unique_ptr<TextEncoder> te_local;
      TextEncoder* te = nullptr;
      const std::string te_key = p_.te_path + "|" + rq_.te_type;
      if (keep_ && cache_->te && cache_->te_key == te_key) {
        te = cache_->te.get();
      } else {
        if (keep_) { cache_->te.reset(); cache_->te_key.clear(); }
        te_local = TextEncoder::load(p_.te_path, be_, weight_format(rq_.te_type, "--te-type"));
        te = te_local.get();
        if (keep_) { cache_->te = std::move(te_local); cache_->te_key = te_key; }
      }
      if (te->dim() != cfg_.text_dim)
        fail(p_.te_path, ": the text encoder outputs width ", te->dim(), " but the model ", rq_.model, " expects text_dim ",
             cfg_.text_dim, ": use the text encoder the model was trained with");
      cond_ = repeat_rows(be_, te->encode({encode_prompt_}, false), n_);
      if (guided_) uncond_ = repeat_rows(be_, te->encode({rq_.negative_prompt}, false), n_);
    }
    clock_.end();
  }

  // Previews of a VAE latent need the VAE's linear latent→RGB fit (computed once per VAE file).
  void fit_previews() {
    if (hooks_ && hooks_->on_step && cfg_.codec == "flux-vae")
      preview_fit_ = vae_preview_fit(rq_.vae, rq_.vae_type, be_, keep_ ? open_codec().vae : nullptr);
  }

  // 2. img2img: the init image's latent, repeated for every image of a batch (empty without an init image).
  std::vector<float> init_latents() {
    const size_t per1 = (size_t)cfg_.latent_channels * p_.h * p_.w;
    std::vector<float> init_lat;
    if (!p_.init.empty()) {
      check_cancel();
      clock_.begin("VAE encode");
      LatentCodec codec = open_codec();
      std::vector<float> img((size_t)3 * p_.H * p_.W);
      image_to_chw(p_.init, img.data());
      init_lat.resize(per1);
      codec.encode(img.data(), p_.H, p_.W, init_lat.data());
      clock_.end();
    }
    std::vector<float> rep_init;
    if (!init_lat.empty())
      for (int i = 0; i < n_; ++i) rep_init.insert(rep_init.end(), init_lat.begin(), init_lat.end());
    return rep_init;
  }

  // 3. The first pass. The DiT comes from the cache when kept there, else it is loaded for the pass (and kept for
  // the refine pass when that uses the same model on the latents).
  std::vector<float> first_pass(const std::vector<float>& rep_init) {
    // A model with LoRAs merged in is cached (if at all) under a key naming them, so a later request without them
    // loads the file afresh: no LoRA state leaks between generations.
    dit_key_ = rq_.model + "|" + rq_.dit_type + "|" + loras_.key();
    check_cancel();
    clock_.begin("DiT");
    dit_ = acquire_dit(rq_.model, true);
    std::vector<float> init_all;
    if (!rep_init.empty())
      for (int it = 0; it < rq_.n_iter; ++it) init_all.insert(init_all.end(), rep_init.begin(), rep_init.end());
    std::vector<float> lat = sample(*dit_, p_.h, p_.w, rq_.steps, init_all.empty() ? nullptr : init_all.data(),
                                    rq_.strength, 0, "", p_.mask.latent.empty() ? nullptr : p_.mask.latent.data());
    const bool keep_dit = p_.hires && p_.hr_latent && p_.same_hr_model;
    if (!keep_dit) { dit_local_.reset(); dit_ = nullptr; }
    clock_.end();
    return lat;
  }

  // 4. The refine pass: upscale, re-noise to hr_strength with fresh noise (Philox stream 1 of the seed), denoise.
  std::vector<float> refine_pass(const std::vector<float>& lat) {
    const int total = rq_.n_iter * n_;
    const size_t per1 = (size_t)cfg_.latent_channels * p_.h * p_.w, per2 = (size_t)cfg_.latent_channels * p_.h2 * p_.w2;
    std::vector<float> up((size_t)total * per2);
    if (p_.hr_latent) {
      for (int i = 0; i < total; ++i)
        resize_planes(lat.data() + i * per1, cfg_.latent_channels, p_.h, p_.w, up.data() + i * per2, p_.h2, p_.w2, p_.hr_filter);
    } else {
      clock_.begin("refine upscale");
      LatentCodec codec = open_codec();
      std::vector<float> img((size_t)3 * p_.H * p_.W), big((size_t)3 * p_.H2 * p_.W2);
      for (int i = 0; i < total; ++i) {
        codec.decode(lat.data() + i * per1, p_.H, p_.W, img.data());
        for (auto& v : img) v = std::clamp(v, -1.f, 1.f);
        resize_planes(img.data(), 3, p_.H, p_.W, big.data(), p_.H2, p_.W2, p_.hr_filter);
        codec.encode(big.data(), p_.H2, p_.W2, up.data() + i * per2);
      }
      clock_.end();
    }
    clock_.begin("refine DiT");
    check_cancel();
    if (!dit_) dit_ = acquire_dit(p_.hr_model, p_.same_hr_model);
    std::vector<float> out = sample(*dit_, p_.h2, p_.w2, rq_.hr_steps > 0 ? rq_.hr_steps : rq_.steps, up.data(),
                                    rq_.hr_strength, 1, "refine ", nullptr);
    dit_local_.reset();
    dit_ = nullptr;
    clock_.end();
    return out;
  }

  // 5. Decode: every latent to an image (composited over the init image when inpainting), with its infotext.
  std::vector<GeneratedImage> decode(const std::vector<float>& lat) {
    check_cancel();
    clock_.begin("VAE decode");
    std::vector<GeneratedImage> out;
    {
      const size_t per2 = (size_t)cfg_.latent_channels * p_.h2 * p_.w2;
      LatentCodec codec = open_codec();
      const double shift = rq_.shift ? resolution_shift((p_.h / cfg_.patch_size) * (p_.w / cfg_.patch_size)) : 1.0;
      std::vector<float> img((size_t)3 * p_.H2 * p_.W2);
      for (int it = 0; it < rq_.n_iter; ++it) {
        const auto seeds = seeds_of(it);
        for (int i = 0; i < n_; ++i) {
          codec.decode(lat.data() + ((size_t)it * n_ + i) * per2, p_.H2, p_.W2, img.data());
          GeneratedImage g;
          g.image = chw_to_image(img.data(), p_.H2, p_.W2);
          if (!p_.mask.latent.empty()) g.image = composite_inpaint(g.image, p_.init, p_.mask.overlay);
          g.seed = seeds[i];
          describe_image(g, p_, loras_, model_hash_, model_name_, shift);
          out.push_back(std::move(g));
        }
      }
    }
    clock_.end();
    return out;
  }

 private:
  // Throws Cancelled when the caller (the server) asked to stop.
  void check_cancel() const {
    if (hooks_ && hooks_->cancel && hooks_->cancel->load()) throw Cancelled();
  }

  // The seeds of batch `it`: consecutive from the base seed.
  std::vector<uint64_t> seeds_of(int it) const {
    std::vector<uint64_t> s;
    for (int i = 0; i < n_; ++i) s.push_back(base_seed_ + (uint64_t)(it * n_ + i));
    return s;
  }

  // The codec (pixels or the VAE), from the cache when kept there.
  LatentCodec open_codec() {
    const std::string codec_key = rq_.vae + "|" + rq_.vae_type;
    if (keep_ && cfg_.codec == "flux-vae" && cache_->vae && cache_->codec_key == codec_key) {
      LatentCodec c;
      c.vae = cache_->vae;
      c.stride = c.vae->config().stride();
      c.vae_options = p_.vae_opt;
      return c;
    }
    if (keep_) { cache_->vae.reset(); cache_->codec_key.clear(); }
    LatentCodec c = LatentCodec::open(cfg_.codec, p_.stride, rq_.vae, be_, "--vae", parse_vae_wformat(rq_.vae_type, "--vae-type"));
    c.vae_options = p_.vae_opt;
    if (keep_ && c.vae) { cache_->vae = c.vae; cache_->codec_key = codec_key; }
    return c;
  }

  // The DiT at `path` with the LoRAs merged in: the cached one when `cacheable` and kept, else loaded (into the
  // cache when cacheable and kept, else into dit_local_).
  DiT* acquire_dit(const std::string& path, bool cacheable) {
    if (cacheable && keep_ && cache_->dit && cache_->dit_key == dit_key_) return cache_->dit.get();
    if (cacheable && keep_) { cache_->dit.reset(); cache_->dit_key.clear(); }
    const std::optional<WFormat> type = weight_format(rq_.dit_type, "--type");
    if (path == rq_.model || loras_.empty()) dit_local_ = load_dit_with_loras(path, be_, type, loras_);
    else dit_local_ = load_dit_with_loras(path, be_, type, read_lora_set(lora_reqs_, lora_dir_, path));
    if (!cacheable || !keep_) return dit_local_.get();
    cache_->dit = std::move(dit_local_);
    cache_->dit_key = dit_key_;
    return cache_->dit.get();
  }

  // Samples every batch of a pass (h x w latents, `steps` steps; init_all/strength/mask for img2img and
  // inpainting; noise stream 0 first pass, 1 refine), with progress, previews and cancel at every step.
  std::vector<float> sample(DiT& dit, int h, int w, int steps, const float* init_all, float strength, uint64_t stream,
                            const char* label, const float* mask) {
    std::vector<float> out;
    const size_t per = (size_t)cfg_.latent_channels * h * w;
    for (int it = 0; it < rq_.n_iter; ++it) {
      SamplerOptions so;
      so.steps = steps;
      so.cfg_scale = rq_.cfg_scale;
      so.shift = rq_.shift;
      so.noise_stream = stream;
      if (init_all) { so.init = init_all + (size_t)it * n_ * per; so.strength = strength; so.mask = mask; }
      if (stats_) so.max_steps = stats_->max_dit_steps;
      double ts = now_s();
      so.on_step = [&](int s, int total, const std::function<std::vector<float>()>& latents) {
        const double t1 = now_s();
        clock_.step(t1 - ts);
        ts = t1;
        if (progress_ && (tty_ || s == total))
          std::fprintf(stderr, "%s%sbatch %d/%d step %d/%d%s", tty_ ? "\r" : "", label, it + 1, rq_.n_iter, s, total,
                       s == total ? "\n" : "");
        if (hooks_ && hooks_->on_step) {
          StepEvent ev;
          ev.pass = label[0] ? 1 : 0;
          ev.batch = it;
          ev.n_batches = rq_.n_iter;
          ev.step = s;
          ev.total = total;
          ev.preview = [&](int max_side) {
            const std::vector<float> l = latents();
            return latent_preview(l.data(), cfg_.latent_channels, h, w, p_.stride, preview_fit_, max_side);
          };
          hooks_->on_step(ev);
        }
        check_cancel();
      };
      std::vector<float> lat = sample_euler(dit, cond_, uncond_, h, w, seeds_of(it), so);
      // Finite weights and options can still overflow (an f16/f8 format, an extreme CFG scale): never a black image
      // with exit 0.
      for (float v : lat)
        if (!std::isfinite(v))
          fail(label[0] ? "the refine pass" : "sampling", " produced non-finite latents (NaN/inf) with ", rq_.model,
               " (CFG scale ", rq_.cfg_scale, rq_.dit_type.empty() ? "" : ", --type " + rq_.dit_type,
               "): try a lower --cfg-scale or --type f32/bf16");
      out.insert(out.end(), lat.begin(), lat.end());
    }
    return out;
  }

  Backend& be_;
  const Prepared& p_;
  const GenerateRequest& rq_;
  const DiTConfig& cfg_;
  const GenerateHooks* hooks_;
  GenerateStats* stats_;
  ModelCache* cache_;
  const bool keep_, progress_, tty_;
  StageClock clock_;
  const int n_;
  const bool guided_;
  const uint64_t base_seed_;
  std::vector<LoraRequest> lora_reqs_;
  std::string encode_prompt_, lora_dir_, model_hash_, model_name_, dit_key_;
  LoraSet loras_;
  TextBatch cond_, uncond_;
  std::vector<float> preview_fit_;
  std::unique_ptr<DiT> dit_local_;
  DiT* dit_ = nullptr;
};

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
  ModelCache* cache = hooks ? hooks->cache : nullptr;
  if (cache) p.plan.baseline -= std::min(p.plan.baseline, cached_bytes(*cache, p.plan));
  const bool keep = cache && all_resident_fits(p.plan);
  if (cache && !keep) cache->clear();
  if (cache) cache->resident = keep;
  report_plan(p, progress, stats);
  GenerateRun run(be, p, progress, stats, hooks, cache, keep);
  run.resolve_loras();
  run.hash_model();
  run.encode_prompts();
  run.fit_previews();
  std::vector<float> lat = run.first_pass(run.init_latents());
  if (p.hires) lat = run.refine_pass(lat);
  return run.decode(lat);
}

}  // namespace oboro
