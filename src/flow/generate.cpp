#include "flow/generate.h"
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

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

// Everything a run needs to know before loading a model: resolved paths, configs, sizes, token counts, plan.
struct Prepared {
  GenerateRequest rq;  // paths resolved
  DiTConfig cfg, hr_cfg;
  std::string te_path, hr_model;
  bool same_hr_model = true;
  int stride = 1, channels = 3;
  int W = 0, H = 0, h = 0, w = 0;         // first pass
  int W2 = 0, H2 = 0, h2 = 0, w2 = 0;     // refine pass (= first when no refine)
  bool hires = false, hr_latent = true;
  ResizeFilter hr_filter = ResizeFilter::Bilinear;
  std::string hr_upscaler_name;
  Image init;
  InpaintMask mask;                       // inpainting: empty latent = none
  int Lc = 1, Lu = 0;
  bool truncated = false;
  MemoryPlan plan;
  VaeRunOptions vae_opt;
};

std::string meta(const TensorSource& src, const char* key) {
  auto it = src.metadata().find(key);
  return it == src.metadata().end() ? "" : it->second;
}

// --type / --te-type: "" = as the file stores it.
std::optional<WFormat> weight_format(const std::string& s, const char* opt) {
  if (s.empty()) return std::nullopt;
  return parse_wformat(s, opt);
}

Prepared prepare(const GenerateRequest& in) {
  Prepared p;
  p.rq = in;
  GenerateRequest& rq = p.rq;
  if (rq.model.empty()) fail("no model given: pass --model FILE.safetensors");
  check_request(rq);  // every number finite and in range, the prompts UTF-8: before anything is opened
  const std::string dir = models_dir_or_env(rq.models_dir);
  rq.model = locate_model(rq.model, dir, "diffusion_models", "--model");
  TensorSource src = TensorSource::open(rq.model);
  p.cfg = dit_config_of(rq.model);
  const DiTConfig& cfg = p.cfg;

  // Text encoder: --t5 / --text-encoder, else the one the model names (beside it, or in DIR/text_encoders).
  if (!rq.text_encoder.empty()) {
    p.te_path = locate_model(rq.text_encoder, dir, "text_encoders", "--t5");
  } else {
    const std::string named = meta(src, "oboro.text_encoder");
    if (named.empty())
      fail(rq.model, ": the model names no text encoder (metadata 'oboro.text_encoder'): pass --t5 DIR_OR_FILE "
                     "(the T5 v1.1 folder with its shards and spiece.model, or one .safetensors file)");
    p.te_path = locate_named_by_model(named, rq.model, "oboro.text_encoder", dir, "text_encoders");
  }

  // Codec: pixels, or the FLUX VAE (--vae, or DIR/vae/ae.safetensors).
  if (cfg.codec == "flux-vae") {
    if (rq.vae.empty()) rq.vae = default_vae(dir);
    if (rq.vae.empty())
      fail("the model ", rq.model, " uses the 'flux-vae' codec: pass --vae ae.safetensors (FLUX.1's autoencoder, or a "
           "diffusers AutoencoderKL of the same structure), or put it in DIR/vae with --models-dir DIR");
    rq.vae = locate_model(rq.vae, dir, "vae", "--vae");
    const VaeConfig vc = vae_config_of(rq.vae);
    p.stride = vc.stride();
    p.channels = vc.z_channels;
    if (p.channels != cfg.latent_channels)
      fail(rq.vae, ": the VAE has ", p.channels, " latent channels but the model ", rq.model, " expects ",
           cfg.latent_channels);
  } else {
    p.stride = codec_stride(cfg.codec, cfg.latent_channels);
    p.channels = cfg.latent_channels;
  }
  p.vae_opt.tiling = rq.vae_tiling ? VaeRunOptions::Tiling::On : VaeRunOptions::Tiling::Auto;
  if (rq.vae_tile < 8) fail("--vae-tile must be at least 8 latent pixels, got ", rq.vae_tile);
  p.vae_opt.tile = rq.vae_tile;
  p.vae_opt.overlap = std::min(p.vae_opt.overlap, rq.vae_tile / 4);

  // Size: given; else the init image's (cropped down to a multiple of the model's granularity); else the
  // model's training resolution; else 64.
  const int m = p.stride * cfg.patch_size;
  if (rq.img2img()) {
    if (!(rq.strength >= 0.f && rq.strength <= 1.f))
      fail("--strength must be between 0 and 1 (the fraction of noise: 0 keeps the image, 1 ignores it), got ",
           rq.strength);
    if (rq.hires())
      fail("the refine pass (--hr-scale / --hr-resize-x/y) is for txt2img, as A1111's hires fix: for a bigger "
           "img2img result give the init image and a larger --size");
    p.init = !rq.init_image_data.empty() ? rq.init_image_data : load_image(rq.init_image);
  }
  int W = rq.width, H = rq.height;
  if (W <= 0 || H <= 0) {
    if (!p.init.empty()) {
      W = p.init.width / m * m;
      H = p.init.height / m * m;
      if (W < m || H < m)
        fail(rq.init_image.empty() ? "the init image" : rq.init_image, ": the image is ", p.init.width, "x", p.init.height, "; it must be at least ", m, "x", m,
             " for this model");
    } else {
      W = H = 64;
      int w2, h2;
      if (std::sscanf(meta(src, "modelspec.resolution").c_str(), "%dx%d", &w2, &h2) == 2) { W = w2; H = h2; }
    }
  }
  if (W % m || H % m) fail("size ", W, "x", H, " must be a multiple of ", m, " for this model");
  p.W = W; p.H = H; p.h = H / p.stride; p.w = W / p.stride;
  if (!p.init.empty() && (p.init.width != W || p.init.height != H)) p.init = resize_cover_crop(p.init, W, H);
  if (rq.inpaint()) {
    if (!rq.img2img()) fail("--mask needs the image to inpaint: pass --init-img IMAGE");
    const std::string label = rq.mask_image.empty() ? "the mask" : rq.mask_image;
    const Image mask = !rq.mask_image_data.empty() ? rq.mask_image_data : load_image(rq.mask_image);
    p.mask = make_inpaint_mask(mask, W, H, p.stride, rq.mask_blur, rq.invert_mask, label);
  }

  // Refine pass.
  p.W2 = W; p.H2 = H;
  p.hires = rq.hires();
  p.hr_cfg = cfg;
  p.hr_model = rq.model;
  if (p.hires) {
    if (!(rq.hr_strength > 0.f && rq.hr_strength <= 1.f))
      fail("--hr-strength must be in (0, 1] (the fraction of noise added before the refine pass), got ", rq.hr_strength);
    if (rq.hr_steps < 0 || rq.hr_steps > 1000) fail("--hr-steps must be between 0 (= --steps) and 1000, got ", rq.hr_steps);
    const std::string u = lower(rq.hr_upscaler);
    if (u == "latent" || u == "latent (bilinear)") { p.hr_latent = true; p.hr_filter = ResizeFilter::Bilinear; p.hr_upscaler_name = "Latent"; }
    else if (u == "latent (nearest)" || u == "latent (nearest-exact)") { p.hr_latent = true; p.hr_filter = ResizeFilter::Nearest; p.hr_upscaler_name = "Latent (nearest)"; }
    else if (u == "lanczos") { p.hr_latent = false; p.hr_filter = ResizeFilter::Lanczos; p.hr_upscaler_name = "Lanczos"; }
    else if (u == "nearest") { p.hr_latent = false; p.hr_filter = ResizeFilter::Nearest; p.hr_upscaler_name = "Nearest"; }
    else fail("--hr-upscaler '", rq.hr_upscaler, "' is not known: choose Latent, \"Latent (nearest)\", Lanczos or Nearest");
    double W2, H2;
    if (rq.hr_resize_x > 0 || rq.hr_resize_y > 0) {
      W2 = rq.hr_resize_x > 0 ? rq.hr_resize_x : (double)W * rq.hr_resize_y / H;
      H2 = rq.hr_resize_y > 0 ? rq.hr_resize_y : (double)H * rq.hr_resize_x / W;
    } else {
      if (!(rq.hr_scale > 0.f && rq.hr_scale <= 8.f)) fail("--hr-scale must be in (0, 8], got ", rq.hr_scale);
      W2 = W * (double)rq.hr_scale;
      H2 = H * (double)rq.hr_scale;
    }
    p.W2 = (int)(W2 + 1e-6) / m * m;
    p.H2 = (int)(H2 + 1e-6) / m * m;
    if (p.W2 < m || p.H2 < m) fail("the refine size ", (int)W2, "x", (int)H2, " is smaller than ", m, "x", m);
    if (!rq.hr_model.empty()) {
      p.hr_model = locate_model(rq.hr_model, dir, "diffusion_models", "--hr-model");
      p.hr_cfg = dit_config_of(p.hr_model);
      if (p.hr_cfg.text_dim != cfg.text_dim || p.hr_cfg.latent_channels != cfg.latent_channels ||
          p.hr_cfg.codec != cfg.codec || p.hr_cfg.patch_size != cfg.patch_size)
        fail(p.hr_model, ": the refine model must share the text encoder width, codec, latent channels and patch size "
             "of the base model (", rq.model, ")");
      p.same_hr_model = fs::equivalent(p.hr_model, rq.model);
    }
  }
  p.h2 = p.H2 / p.stride; p.w2 = p.W2 / p.stride;

  // Prompt lengths (tokenizer only).
  {
    Tokenizer tok = TextEncoder::load_tokenizer(p.te_path);
    p.Lc = (int)tok.encode(rq.prompt, 256).size();
    p.truncated = (int)tok.encode(rq.prompt, 1 << 20).size() > 256;
    p.Lu = rq.cfg_scale != 1.f ? (int)tok.encode(rq.negative_prompt, 256).size() : 0;
  }

  // The plan.
  MemoryPlan& pl = p.plan;
  const WeightInfo te = t5_weight_info(p.te_path, weight_format(rq.te_type, "--te-type")),
                   dit = dit_weight_info(rq.model, weight_format(rq.dit_type, "--type"));
  const T5Config tc = t5_config_of(p.te_path);
  WeightInfo vae;
  VaeConfig vc;
  const bool has_vae = cfg.codec == "flux-vae";
  const WFormat vae_fmt = parse_vae_wformat(rq.vae_type, "--vae-type");
  if (has_vae) { vae = vae_weight_info(rq.vae, vae_fmt); vc = vae_config_of(rq.vae); }
  pl.weights = {te, dit};
  WeightInfo hr;
  if (p.hires && !p.same_hr_model) { hr = dit_weight_info(p.hr_model, weight_format(rq.dit_type, "--type")); hr.component = "refine DiT"; pl.weights.push_back(hr); }
  if (has_vae) pl.weights.push_back(vae);
  const int n = rq.batch_size, guided = rq.cfg_scale != 1.f, B = n * (guided ? 2 : 1);
  const int L = std::max(p.Lc, p.Lu);
  const size_t f = sizeof(float), D = cfg.text_dim;
  const size_t lat1 = (size_t)p.channels * p.h * p.w, lat2 = (size_t)p.channels * p.h2 * p.w2;
  const size_t all_lat = (size_t)rq.n_iter * n * std::max(lat1, lat2) * f;
  const size_t text = ((size_t)p.Lc + p.Lu) * D * f;
  const size_t text_rows = (size_t)B * L * D * f * 2;  // cond/uncond rows and their concatenation
  auto vae_stage = [&](const std::string& name, size_t acts, size_t bufs) {
    PlanStage s{name, has_vae ? "VAE" : "", has_vae ? vae.resident_bytes : 0, acts, bufs, has_vae ? vae.load_copy_bytes : 0};
    pl.stages.push_back(s);
  };
  pl.stages.push_back({str("text encoder (T5, ", p.Lc, guided ? str("+", p.Lu) : "", " tokens)"), "T5",
                       te.resident_bytes, std::max(t5_activation_bytes(tc, 1, p.Lc), p.Lu ? t5_activation_bytes(tc, 1, p.Lu) : 0),
                       text * 2, te.load_copy_bytes});
  if (!p.init.empty())
    vae_stage(str("VAE encode ", p.W, "x", p.H), has_vae ? vae_pass_bytes(vc, true, p.h, p.w, p.vae_opt, vae_fmt) : 0,
              (size_t)3 * p.W * p.H * f + lat1 * f + text);
  const int s1 = p.init.empty() ? rq.steps : img2img_steps(rq.steps, rq.strength);
  const size_t inpaint_bufs = p.mask.latent.empty() ? 0 : 3 * (size_t)n * lat1 * f;  // noise, init, mask
  pl.stages.push_back({str("DiT ", s1, " steps at ", p.w, "x", p.h, " latent, batch ", B), "DiT", dit.resident_bytes,
                       dit_activation_bytes(cfg, B, L, p.h, p.w),
                       text + text_rows + 3 * (size_t)B * lat1 * f + all_lat + inpaint_bufs,
                       dit.load_copy_bytes});
  if (p.hires) {
    const int s2 = img2img_steps(rq.hr_steps > 0 ? rq.hr_steps : rq.steps, rq.hr_strength);
    if (!p.hr_latent)
      vae_stage(str("refine upscale (VAE decode, ", p.hr_upscaler_name, ", encode)"),
                has_vae ? std::max(vae_pass_bytes(vc, false, p.h, p.w, p.vae_opt, vae_fmt), vae_pass_bytes(vc, true, p.h2, p.w2, p.vae_opt, vae_fmt)) : 0,
                ((size_t)3 * p.W * p.H + (size_t)3 * p.W2 * p.H2) * f + all_lat * 2 + text);
    const WeightInfo& hw = p.same_hr_model ? dit : hr;
    pl.stages.push_back({str("refine DiT ", s2, " steps at ", p.w2, "x", p.h2, " latent, batch ", B), "DiT",
                         hw.resident_bytes, dit_activation_bytes(p.hr_cfg, B, L, p.h2, p.w2),
                         text + text_rows + 3 * (size_t)B * lat2 * f + all_lat * 2, hw.load_copy_bytes});
  }
  vae_stage(str("VAE decode ", p.W2, "x", p.H2),
            has_vae ? vae_pass_bytes(vc, false, p.h2, p.w2, p.vae_opt, vae_fmt) : 0,
            all_lat + (size_t)3 * p.W2 * p.H2 * (f + 1) * rq.n_iter * n);
  pl.shape = str(p.W, "x", p.H, p.hires ? str(" -> ", p.W2, "x", p.H2) : "", ", ", rq.n_iter, "x", n, " image(s)",
                 guided ? str(", CFG (DiT batch ", B, ")") : "", ", ", rq.steps, " steps");
  pl.baseline = current_rss_bytes();
  if (rq.max_memory > 0) {
    pl.budget = rq.max_memory;
    pl.budget_source = "--max-memory";
  } else {
    pl.budget = mem_available_bytes() + pl.baseline;
    pl.budget_source = "MemAvailable now + this process";
  }
  return p;
}

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
