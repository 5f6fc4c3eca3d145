// `oboro bench formats`: for each weight format (docs/formats.md), the Linear kernels' GFLOP/s on the DiT's real
// shapes and the DiT velocity's relative error vs F32 (the quality guard) with the forward time.
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "flow/generate.h"
#include "models/codec.h"
#include "models/dit.h"
#include "models/format_quality.h"
#include "ops/backend.h"
#include "ops/cpu/qgemm_cpu.h"
#include <nlohmann/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace oboro::cli {
namespace {

struct Opts {
  std::string preset = "small", schedule = "mmh", types = "bf16,f16,f8,q8_0";
  int text_dim = 4096, height = 416, width = 736, batch = 2, text_len = 64, repeats = 3, threads = 0;
  int latent_channels = 16, latent_stride = 8;
  bool no_gemm = false, no_quality = false, json = false, portable = false, no_time = false, weights_only = false;
  // Trained-model guard (--model): velocity error on that model's weights, and each format's generated images
  // against the F32 model's (same prompt, seeds, steps) as PSNR.
  std::string model, text_encoder, vae, prompts = "a red circle above a blue square";
  int steps = 20, images = 2, gen_width = 0, gen_height = 0;
  float cfg_scale = 4.f;
  long long seed = 1000;
};

FILE* g_out = stdout;  // the human-readable lines (stderr with --json, so stdout is one JSON object)

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// PSNR of 8-bit RGB images (peak 255); +inf when identical.
double psnr(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height) fail("PSNR of images of different sizes");
  double se = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) {
    const double d = (double)a.rgb[i] - b.rgb[i];
    se += d * d;
  }
  const double mse = se / (double)a.rgb.size();
  return mse == 0 ? INFINITY : 10.0 * std::log10(255.0 * 255.0 / mse);
}

std::vector<std::string> split_prompts(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, '|'))
    if (!t.empty()) v.push_back(t);
  if (v.empty()) fail("--prompts is empty: give one or more prompts separated by '|'");
  return v;
}

// The guard on a trained model: velocity error with the model's own weights (random inputs), then whole
// generations per format, each image against the F32 model's image of the same prompt and seed.
void run_model(const Opts& o, const std::vector<WFormat>& fmts, nlohmann::json& j) {
  Backend& be = cli::backend();
  const std::vector<std::string> prompts = split_prompts(o.prompts);
  std::unique_ptr<DiT> ref = DiT::load(o.model, be, WFormat::F32);
  const DiTConfig& cfg = ref->config();
  GenerateRequest rq;
  rq.model = o.model;
  rq.text_encoder = o.text_encoder;
  rq.vae = o.vae;
  rq.steps = o.steps;
  rq.cfg_scale = o.cfg_scale;
  rq.batch_size = o.images;
  rq.width = o.gen_width;
  rq.height = o.gen_height;
  std::fprintf(g_out, "  trained model %s (%lld parameters): %zu prompt(s) x %d image(s), %d steps, CFG %.1f, seeds %lld..\n",
              o.model.c_str(), (long long)cfg.param_count(), prompts.size(), o.images, o.steps, o.cfg_scale, o.seed);
  std::vector<WFormat> all = {WFormat::F32};
  for (WFormat f : fmts) if (f != WFormat::F32) all.push_back(f);
  std::vector<Image> ref_images;
  j["model_file"] = o.model;
  for (WFormat f : all) {
    rq.dit_type = wformat_name(f);
    std::vector<Image> imgs;
    const double t0 = now();
    for (size_t p = 0; p < prompts.size(); ++p) {
      rq.prompt = prompts[p];
      rq.seed = o.seed + (long long)p * 100;
      for (auto& g : generate(be, rq, false)) imgs.push_back(std::move(g.image));
    }
    const double secs = now() - t0;
    if (f == WFormat::F32) {
      ref_images = imgs;
      std::fprintf(g_out, "    %-5s %zu images %dx%d in %.2f s (the reference)\n", wformat_name(f), imgs.size(), imgs[0].width,
                  imgs[0].height, secs);
      j["images"] = {{"count", imgs.size()}, {"width", imgs[0].width}, {"height", imgs[0].height}};
      continue;
    }
    double lo = INFINITY, sum_mse = 0;
    for (size_t i = 0; i < imgs.size(); ++i) {
      const double q = psnr(imgs[i], ref_images[i]);
      lo = std::min(lo, q);
      sum_mse += std::isinf(q) ? 0.0 : 255.0 * 255.0 / std::pow(10.0, q / 10.0);
    }
    const double mean = sum_mse == 0 ? INFINITY : 10.0 * std::log10(255.0 * 255.0 / (sum_mse / imgs.size()));
    std::fprintf(g_out, "    %-5s image PSNR vs f32: %.2f dB over all, worst image %.2f dB  (%.2f s)\n", wformat_name(f), mean, lo,
                secs);
    j["psnr"][wformat_name(f)] = {{"psnr_db", std::isinf(mean) ? 999.0 : mean}, {"worst_psnr_db", std::isinf(lo) ? 999.0 : lo},
                                  {"seconds", secs}};
  }
  // Velocity error on the trained weights, at the generated images' latent shape.
  const int stride = cfg.codec == "flux-vae" ? 8 : codec_stride(cfg.codec, cfg.latent_channels);
  const int h = ref_images[0].height / stride, w = ref_images[0].width / stride;
  auto res = dit_format_quality(*ref, fmts, 2, 16, h, w, 1, false, o.weights_only);
  for (const auto& r : res) {
    if (r.fmt == WFormat::F32) continue;
    std::fprintf(g_out, "    %-5s velocity rel err %.3e (trained weights, random inputs)", wformat_name(r.fmt), r.rel_err);
    if (r.rel_err_weights_only >= 0) std::fprintf(g_out, "  (weights alone %.3e)", r.rel_err_weights_only);
    std::fprintf(g_out, "\n");
    j["trained_quality"][wformat_name(r.fmt)] = {{"rel_err", r.rel_err}, {"rel_err_weights_only", r.rel_err_weights_only}};
  }
}


void run(const Opts& o) {
  g_out = o.json ? stderr : stdout;
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.portable) cpu::qgemm_force_portable(true);
  std::vector<WFormat> fmts;
  {
    std::stringstream ss(o.types);
    std::string t;
    while (std::getline(ss, t, ','))
      if (!t.empty()) fmts.push_back(parse_wformat(t, "--types"));
  }
  DiTConfig cfg = DiTConfig::preset(o.preset, o.text_dim, o.schedule);
  cfg.latent_channels = o.latent_channels;
  const int m = o.latent_stride * cfg.patch_size;
  if (o.height % m || o.width % m) fail("--height and --width must be multiples of ", m, ", got ", o.height, "x", o.width);
  const int h = o.height / o.latent_stride, w = o.width / o.latent_stride, B = o.batch, L = o.text_len;
  const int Ntok = (h / cfg.patch_size) * (w / cfg.patch_size), M = B * (L + Ntok);
  const int D = cfg.hidden_size, F = cfg.ffn_hidden_size, C = cfg.cond();
  nlohmann::json j;
  j["model"] = o.preset;
  j["image"] = std::to_string(o.width) + "x" + std::to_string(o.height);
  j["threads"] = num_threads();
  j["kernels"] = o.portable ? "portable" : (cpu::qgemm_avx512_available() ? "avx512" : "portable");
  if (!o.model.empty()) std::fprintf(g_out, "bench formats --model: the quality guard on a trained model\n");
  if (!o.no_gemm || o.model.empty())
    std::fprintf(g_out, "bench formats: %s, %dx%d px, batch %d, text %d -> M = %d rows, %d threads, %s kernels\n",
              o.preset.c_str(), o.width, o.height, B, L, M, num_threads(), j["kernels"].get<std::string>().c_str());
  Backend& be = cli::backend();
  if (!o.no_gemm) {
    struct Shape { const char* name; int M, N, K; };
    const Shape shapes[] = {{"qkv part / out (D->D)", M, D, D}, {"ffn w1 / w3 (D->F)", M, F, D},
                            {"ffn w2 (F->D)", M, D, F}, {"adaLN (C->4D)", B, 4 * D, C}};
    std::vector<WFormat> all = {WFormat::F32};
    for (WFormat f : fmts) if (f != WFormat::F32) all.push_back(f);
    for (const Shape& s : shapes) {
      std::vector<float> wf((size_t)s.N * s.K), x((size_t)s.M * s.K), y((size_t)s.M * s.N);
      fill_normal(wf.data(), (int64_t)wf.size(), 1, 0, 0, 0.f, 0.03f);
      fill_normal(x.data(), (int64_t)x.size(), 2);
      Buffer wfb = upload_new(be, wf, "bench.w"), xb = upload_new(be, x, "bench.x"), yb = be.alloc(y.size());
      std::fprintf(g_out, "  %-22s M=%d N=%d K=%d:", s.name, s.M, s.N, s.K);
      std::vector<float> y32;
      std::string errs;
      for (WFormat f : all) {
        QuantizedWeight q = quantize_weight(wf.data(), s.N, s.K, f);
        q.bind(be);
        const WeightView v = f == WFormat::F32 ? f32_view(wfb.f32(), s.N, s.K) : q.view();
        double best = 1e30;
        for (int r = 0; r < o.repeats + 1; ++r) {
          double t0 = now();
          be.linear_forward_w(yb.f32(), xb.f32(), v, nullptr, s.M, s.K, s.N);
          if (r > 0) best = std::min(best, now() - t0);
        }
        be.download(y.data(), yb.f32(), y.size());
        const double gf = 2.0 * s.M * s.N * s.K / best / 1e9;
        std::fprintf(g_out, "  %s %.1f", wformat_name(f), gf);
        double num = 0, den = 0;  // this Linear's output error vs F32 (random x ~ N(0,1), W ~ N(0, 0.03²))
        if (f == WFormat::F32) y32 = y;
        for (size_t i = 0; i < y.size(); ++i) {
          num += ((double)y[i] - y32[i]) * ((double)y[i] - y32[i]);
          den += (double)y32[i] * y32[i];
        }
        const double e = std::sqrt(num / den);
        if (f != WFormat::F32) errs += str("  ", wformat_name(f), " ", e);
        j["gemm"][s.name][wformat_name(f)] = {{"M", s.M}, {"N", s.N}, {"K", s.K}, {"seconds", best}, {"gflops", gf},
                                              {"rel_err_vs_f32", e}};
      }
      std::fprintf(g_out, " GFLOP/s\n  %-22s rel err vs f32:%s\n", "", errs.c_str());
    }
  }
  if (!o.model.empty()) {
    run_model(o, fmts, j);
  } else if (!o.no_quality) {
    DiT model(cfg, be);
    model.init_random_all(1);
    std::fprintf(g_out, "  DiT forward, random weights (init_random_all seed 1), %lld parameters:\n",
                (long long)cfg.param_count());
    auto res = dit_format_quality(model, fmts, B, L, h, w, 1, !o.no_time, o.weights_only);
    for (const auto& r : res) {
      std::fprintf(g_out, "    %-5s rel err %.3e  max abs %.3e", wformat_name(r.fmt), r.rel_err, r.max_abs_err);
      if (r.rel_err_weights_only >= 0) std::fprintf(g_out, "  (weights alone %.3e)", r.rel_err_weights_only);
      if (!o.no_time) std::fprintf(g_out, "  forward %.3f s", r.seconds);
      std::fprintf(g_out, "  weights %.1f MiB\n", r.weight_bytes / 1048576.0);
      j["quality"][wformat_name(r.fmt)] = {{"rel_err", r.rel_err}, {"max_abs_err", r.max_abs_err},
                                           {"rel_err_weights_only", r.rel_err_weights_only},
                                           {"forward_seconds", o.no_time ? -1.0 : r.seconds},
                                           {"weight_bytes", r.weight_bytes}};
    }
  }
  if (o.json) std::printf("%s\n", j.dump(2).c_str());
}

}  // namespace

void register_bench_formats(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* c = app.get_subcommand("bench")->add_subcommand(
      "formats", "Weight formats: kernel GFLOP/s on the DiT's shapes and velocity error vs F32 (random weights)");
  c->add_option("--config", o->preset, "model preset: oboro-1b, small, tiny")->capture_default_str();
  c->add_option("--schedule", o->schedule, "head schedule: mmh or uniform")->capture_default_str();
  c->add_option("--types", o->types, "comma-separated formats to compare with f32")->capture_default_str();
  c->add_option("--text-dim", o->text_dim, "text encoder width")->capture_default_str()
      ->check(int_in(1, 65536));
  c->add_option("--latent-channels", o->latent_channels, "latent channels")->capture_default_str()
      ->check(int_in(1, 1024));
  c->add_option("--latent-stride", o->latent_stride, "pixels per latent pixel")->capture_default_str()
      ->check(int_in(1, 64));
  c->add_option("--height", o->height, "image height in pixels")->capture_default_str()
      ->check(int_in(1, 16384));
  c->add_option("--width", o->width, "image width in pixels")->capture_default_str()
      ->check(int_in(1, 16384));
  c->add_option("--batch", o->batch, "batch (2 = one CFG step)")->capture_default_str()
      ->check(int_in(1, 4096));
  c->add_option("--text-len", o->text_len, "text tokens")->capture_default_str()
      ->check(int_in(1, 4096));
  c->add_option("--repeats", o->repeats, "timed GEMM runs (best is reported)")->capture_default_str()
      ->check(int_in(1, 100000));
  c->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
  c->add_flag("--no-gemm", o->no_gemm, "skip the kernel GFLOP/s part");
  c->add_flag("--no-quality", o->no_quality, "skip the DiT velocity error part");
  c->add_flag("--no-time", o->no_time, "one forward per format, untimed (no warm-up forward)");
  c->add_flag("--weights-only", o->weights_only, "also run the dequantised weights in F32 (error of the weights alone)");
  c->add_flag("--portable", o->portable, "use the portable (non-AVX-512) kernels");
  c->add_flag("--json", o->json, "also print JSON");
  c->add_option("--model", o->model, "a trained DiT file: measure the velocity error on its weights and each format's "
                "generated images against the F32 model's (PSNR) instead of the random-weight model");
  c->add_option("--t5", o->text_encoder, "with --model: its text encoder (default: the one beside it)");
  c->add_option("--vae", o->vae, "with --model: FLUX.1 VAE file (flux-vae models)");
  c->add_option("--prompts", o->prompts, "with --model: prompts separated by '|'")->capture_default_str();
  c->add_option("--steps", o->steps, "with --model: sampling steps")->capture_default_str()
      ->check(int_in(1, 1000));
  c->add_option("--cfg-scale", o->cfg_scale, "with --model: CFG scale")->capture_default_str()
      ->check(real_in(0, 100));
  c->add_option("--images", o->images, "with --model: images per prompt (seeds seed, seed+1, ...)")->capture_default_str()
      ->check(int_in(1, 10000));
  c->add_option("--seed", o->seed, "with --model: first seed (prompt p starts at seed + 100p)")->capture_default_str()
      ->check(int_in(0, 4294967295));
  c->add_option("--gen-width", o->gen_width, "with --model: image width (0 = the model's resolution)")
      ->check(int_in(0, 16384, " (0 = the model's resolution)"));
  c->add_option("--gen-height", o->gen_height, "with --model: image height (0 = the model's resolution)")
      ->check(int_in(0, 16384, " (0 = the model's resolution)"));
  c->callback([o] { run(*o); });
}

}  // namespace oboro::cli
