// Generation, before any model is loaded: the request resolved into a Prepared run (see generate_prepare.h).
#include "flow/generate_prepare.h"

#include "core/error.h"
#include "flow/flow.h"
#include "flow/model_paths.h"
#include "flow/request_check.h"
#include "io/safetensors.h"
#include "models/codec.h"
#include "models/dit.h"
#include "models/text_encoder.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>

namespace oboro::generate_detail {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

std::string meta(const TensorSource& src, const char* key) {
  auto it = src.metadata().find(key);
  return it == src.metadata().end() ? "" : it->second;
}

// Text encoder: --t5 / --text-encoder, else the one the model names (beside it, or in DIR/text_encoders).
void resolve_text_encoder(Prepared& p, const TensorSource& src, const std::string& dir) {
  const GenerateRequest& rq = p.rq;
  if (!rq.text_encoder.empty()) {
    p.te_path = locate_model(rq.text_encoder, dir, "text_encoders", "--t5");
  } else {
    const std::string named = meta(src, "oboro.text_encoder");
    if (named.empty())
      fail(rq.model, ": the model names no text encoder (metadata 'oboro.text_encoder'): pass --t5 DIR_OR_FILE "
                     "(the T5 v1.1 folder with its shards and spiece.model, or one .safetensors file)");
    p.te_path = locate_named_by_model(named, rq.model, "oboro.text_encoder", dir, "text_encoders");
  }
}

// Codec: pixels, or the FLUX VAE (--vae, or DIR/vae/ae.safetensors); its stride, channels and tiling options.
void resolve_codec(Prepared& p, const std::string& dir) {
  GenerateRequest& rq = p.rq;
  const DiTConfig& cfg = p.cfg;
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
}

// Size: given; else the init image's (cropped down to a multiple of the model's granularity); else the
// model's training resolution; else 64. Also loads the init image (img2img) and makes the inpainting mask.
void resolve_size(Prepared& p, const TensorSource& src) {
  const GenerateRequest& rq = p.rq;
  const int m = p.stride * p.cfg.patch_size;
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
}

// Refine pass (A1111's hires fix): its upscaler, size and model (= the base model unless --hr-model).
void resolve_refine(Prepared& p, const std::string& dir) {
  const GenerateRequest& rq = p.rq;
  const DiTConfig& cfg = p.cfg;
  const int m = p.stride * cfg.patch_size;
  const int W = p.W, H = p.H;
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
}

// Prompt lengths (tokenizer only): Lc, Lu (0 without CFG) and whether the prompt was cut at 256 tokens.
void count_tokens(Prepared& p) {
  const GenerateRequest& rq = p.rq;
  Tokenizer tok = TextEncoder::load_tokenizer(p.te_path);
  p.Lc = (int)tok.encode(rq.prompt, 256).size();
  p.truncated = (int)tok.encode(rq.prompt, 1 << 20).size() > 256;
  p.Lu = rq.cfg_scale != 1.f ? (int)tok.encode(rq.negative_prompt, 256).size() : 0;
}

// The plan: each component's weights, each stage's weights, activations and buffers, and the memory budget.
void plan_memory(Prepared& p) {
  const GenerateRequest& rq = p.rq;
  const DiTConfig& cfg = p.cfg;
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
}

}  // namespace

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
  resolve_text_encoder(p, src, dir);
  resolve_codec(p, dir);
  resolve_size(p, src);
  resolve_refine(p, dir);
  count_tokens(p);
  plan_memory(p);
  return p;
}

}  // namespace oboro::generate_detail
