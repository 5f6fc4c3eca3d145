// `oboro bench pipeline`: the whole generation pipeline (T5 v1.1 → DiT with CFG → FLUX VAE decode) with random
// weights of the true sizes, written to temporary .safetensors files and run through the real loaders and the real
// staged pipeline (flow/generate.cpp): per-stage time and peak RSS, the memory plan next to what was measured.
// The T5-XXL in F32 (19 GB) does not fit next to anything on a 24 GB machine: --t5-layers N builds the first N of its
// 24 layers (auto: as many as fit) and the 24-layer T5 numbers are extrapolated linearly (and labelled so). The DiT
// may run a prefix of the schedule (--run-steps K): the full-schedule time is then projected (and labelled so).
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/base64.h"
#include "core/error.h"
#include "core/threads.h"
#include "flow/generate.h"
#include "flow/request_check.h"
#include "flow/memory_plan.h"
#include "io/safetensors.h"
#include "models/convert_weights.h"
#include "core/rng.h"
#include "models/dit.h"
#include "models/params.h"
#include "models/t5.h"
#include "models/tokenizer.h"
#include "models/vae.h"
#include "ops/backend.h"
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>

namespace oboro::cli {
namespace {

namespace fs = std::filesystem;

struct PipeOpts {
  std::string config = "oboro-1b", size = "736x416", workdir, prompt;
  std::string type, te_type;  // weight formats the DiT / T5 are loaded in (docs/formats.md); "" = as written (F32)
  std::string vae_type;       // VAE conv weight format (converted while loading); "" = f32
  int steps = 30, run_steps = 0, t5_layers = 0, threads = 0;
  float cfg = 5.f;
  bool json = false, keep = false, convert = false;
};

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The weights stay where the model holds them (CPU backend: host memory) and are written through borrowed views,
// so writing a 4.5 GB model needs no second copy.
void write_params(Backend& be, const std::string& path, const ParamLayout& layout, const float* params,
                  const std::map<std::string, std::string>& meta) {
  SafetensorsWriter wr;
  for (auto& [name, t] : download_params(layout, params, be)) wr.add(name, t);
  for (const auto& [k, val] : meta) wr.set_metadata(k, val);
  wr.write(path);
}

T5Config t5_xxl(int layers) {
  T5Config c;
  c.vocab_size = 32128;
  c.d_model = 4096;
  c.d_kv = 64;
  c.num_heads = 64;
  c.d_ff = 10240;
  c.num_layers = layers;
  return c;
}

void run(const PipeOpts& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  int W, H;
  parse_size(o.size, "--size", W, H);  // "736x416x3", "0x0": refused, not read as 736x416
  if (W % 16 || H % 16) fail("--size must be WxH with both sides multiples of 16 (e.g. 736x416), got '", o.size, "'");
  if (o.steps < 1) fail("--steps must be at least 1");
  const int run_steps = o.run_steps > 0 ? std::min(o.run_steps, o.steps) : o.steps;
  Backend& be = cli::backend();
  const T5Config full = t5_xxl(24);
  const size_t per_layer = (t5_param_layout(t5_xxl(2)).total() - t5_param_layout(t5_xxl(1)).total()) * 4;
  const size_t t5_fixed = t5_param_layout(t5_xxl(1)).total() * 4 - per_layer;
  int layers = o.t5_layers;
  if (layers <= 0) {  // as many layers as fit in 60% of the memory available now
    const double room = 0.6 * (double)mem_available_bytes() - (double)t5_fixed;
    layers = (int)std::clamp(room / (double)per_layer, 1.0, 24.0);
  }
  if (layers > 24) fail("--t5-layers must be 1 to 24 (T5 v1.1 XXL has 24)");

  // Always a fresh folder of our own inside --workdir: it is removed at the end, never the user's folder.
  const fs::path dir = (o.workdir.empty() ? fs::temp_directory_path() : fs::path(o.workdir)) /
                       ("oboro-bench-pipeline-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string dit_path = (dir / "dit.safetensors").string(), t5_path = (dir / "t5.safetensors").string(),
                    vae_path = (dir / "ae.safetensors").string();
  std::fprintf(stderr, "bench pipeline: writing random weights of the true sizes to %s (T5 v1.1 XXL shapes with %d of 24 "
               "layers, %s DiT, FLUX.1 VAE), %d threads\n", dir.string().c_str(), layers, o.config.c_str(), num_threads());
  double t0 = now();
  {
    // A small sentencepiece vocabulary stands in for spiece.model (the real one is not here); ids < 32128.
    std::vector<std::string> lines;
    const char* words[] = {"a", "photo", "of", "red", "fox", "in", "snowy", "forest", "at", "dawn", "soft", "golden",
                           "light", "detailed", "fur", "shallow", "depth", "field", "lens", "portrait", "city", "night",
                           "river", "mountain", "blue", "sky", "old", "house", "cat", "sitting", "window", "rain"};
    for (int i = 0; i < 400; ++i) {
      std::string l;
      for (int k = 0; k < 8; ++k) l += std::string(k ? " " : "") + words[(i * 7 + k * 13 + i / 5) % 32];
      lines.push_back(l);
    }
    const std::string prefix = (dir / "spiece").string();
    train_vocab(lines, 120, prefix);
    std::ifstream f(prefix + ".model", std::ios::binary);
    const std::string proto((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::map<std::string, std::string> t5_meta = {{"oboro.t5_config", t5_xxl(layers).to_json().dump()},
                                                        {"oboro.tokenizer", base64_encode(proto)},
                                                        {"modelspec.architecture", "t5-v1.1-encoder"}};
    if (o.convert && !o.te_type.empty()) {
      // Straight into the format, one tensor at a time: the F32 T5-XXL (19 GB) never exists, so all 24 layers fit.
      write_t5_quantized(t5_path, t5_xxl(layers), parse_wformat(o.te_type, "--te-type"), t5_meta);
    } else {
      T5Encoder t5(t5_xxl(layers), be);
      t5.init_weights(1);
      write_params(be, t5_path, t5.layout(), t5.params(), t5_meta);
    }
  }
  {
    DiTConfig cfg = DiTConfig::preset(o.config, 4096);
    DiT dit(cfg, be);
    dit.init_random_all(1);
    write_params(be, dit_path, dit.layout(), dit.params(),
                 {{"oboro.config", cfg.to_json().dump()}, {"modelspec.sai_model_spec", "1.0.1"},
                  {"modelspec.architecture", "oboro-dit-v1"}, {"oboro.text_encoder", "t5.safetensors"},
                  {"modelspec.resolution", o.size}});
  }
  {
    Vae vae(VaeConfig::flux(), be);
    vae.init_random(1);
    write_params(be, vae_path, vae.layout(), vae.params(), {});
  }
  trim_heap();
  const double write_s = now() - t0;
  std::fprintf(stderr, "  written in %.1f s\n", write_s);

  GenerateRequest rq;
  rq.prompt = o.prompt.empty() ? "a photo of a red fox sitting in a snowy forest at dawn, soft golden light, detailed fur, "
                                 "shallow depth of field"
                               : o.prompt;
  rq.negative_prompt = "";
  // --convert: store the files in the formats once (`oboro convert --type`), then load them as stored (mapped).
  std::string dit_used = dit_path, t5_used = t5_path;
  double convert_s = 0;
  if (o.convert) {
    const double c0 = now();
    // (the T5 was written in its format directly)
    if (!o.type.empty()) {
      dit_used = (dir / ("dit." + o.type + ".safetensors")).string();
      convert_weights(dit_path, dit_used, parse_wformat(o.type, "--type"));
      fs::remove(dit_path);
    }
    convert_s = now() - c0;
    std::fprintf(stderr, "  converted in %.1f s\n", convert_s);
  }
  rq.model = dit_used;
  rq.text_encoder = t5_used;
  rq.vae = vae_path;
  rq.width = W;
  rq.height = H;
  rq.steps = o.steps;
  rq.cfg_scale = o.cfg;
  rq.seed = 1;
  rq.dit_type = o.convert ? "" : o.type;  // converted files are loaded as stored
  rq.te_type = o.convert ? "" : o.te_type;
  rq.vae_type = o.vae_type;  // the VAE file is always F32; converted while loading
  GenerateStats st;
  st.max_dit_steps = run_steps;
  generate(cli::backend(), rq, true, &st);  // the plan and progress go to stderr, the report (or JSON) to stdout
  if (!o.keep) fs::remove_all(dir);

  // Report: measured stages, and the 24-layer T5 / full-schedule DiT figures derived from them.
  const WeightInfo* t5w = nullptr;
  for (const auto& w : st.plan.weights)
    if (w.component == "T5 v1.1 encoder") t5w = &w;
  // The 24-layer T5's resident bytes in the format it is held in: the built layers' bytes scaled per layer (the
  // shared embedding and final norm, F32 in every format, counted once).
  const T5Config built = t5_xxl(layers);
  const size_t shared_b = (size_t)(t5_param_layout(built).total() - (size_t)layers * (t5_param_layout(t5_xxl(1)).total() -
                                                                                      t5_param_layout(t5_xxl(0)).total())) * 4;
  const size_t full_t5 = t5w ? shared_b + (t5w->resident_bytes - shared_b) / (size_t)layers * 24 : t5_param_layout(full).total() * 4;
  nlohmann::json j;
  j["config"] = o.config;
  j["size"] = str(W, "x", H);
  j["steps"] = o.steps;
  j["run_steps"] = run_steps;
  j["cfg_scale"] = o.cfg;
  j["threads"] = num_threads();
  j["t5_layers_built"] = layers;
  j["weights_written_seconds"] = write_s;
  j["weights_load"] = "written to temporary .safetensors files (F32) and read through the real loaders (mmap, copied into F32 "
                      "buffers, or quantised while loading with --type/--te-type)";
  j["dit_weight_format"] = o.type.empty() ? "f32" : o.type;
  j["converted_offline"] = o.convert;
  j["convert_seconds"] = convert_s;
  j["t5_weight_format"] = o.te_type.empty() ? "f32" : o.te_type;
  j["vae_weight_format"] = o.vae_type.empty() ? "f32" : o.vae_type;
  j["plan_peak_bytes"] = st.plan.peak();
  for (const auto& s : st.plan.stages) j["plan_stages"].push_back({{"name", s.name}, {"total_bytes", s.total()}});
  for (const auto& s : st.stages) {
    nlohmann::json r = {{"name", s.name}, {"seconds", s.seconds}, {"peak_rss_bytes", s.peak_rss}, {"rss_after_bytes", s.rss_after}};
    if (!s.step_seconds.empty()) {
      r["step_seconds"] = s.step_seconds;
      const double sum = std::accumulate(s.step_seconds.begin(), s.step_seconds.end(), 0.0);
      // Steady-state step: the mean without the first step (which also allocates the activations) when there are more.
      const double steady = s.step_seconds.size() > 1 ? (sum - s.step_seconds[0]) / (s.step_seconds.size() - 1) : sum;
      r["step_seconds_mean_steady"] = steady;
      r["load_and_setup_seconds"] = s.seconds - sum;
      if ((int)s.step_seconds.size() < o.steps) {
        r["projected_seconds_all_steps"] = s.seconds + steady * (o.steps - (double)s.step_seconds.size());
        r["projected_steps"] = o.steps;
      }
    }
    if (s.name == "text encoder" && layers < 24 && t5w) {
      const double k = (double)full_t5 / (double)t5w->resident_bytes;
      r["extrapolated_24_layers"] = {{"seconds", s.seconds * k},
                                     {"peak_rss_bytes", s.peak_rss + full_t5 - t5w->resident_bytes},
                                     {"weights_bytes", full_t5},
                                     {"method", "time scaled by the resident weight bytes (load and encode both stream "
                                                "the weights); peak RSS + the missing layers' bytes in the held format"}};
    }
    j["stages"].push_back(r);
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("pipeline %s, %dx%d, %d steps, CFG %g, %d threads (random weights, real loaders)\n", o.config.c_str(), W, H,
              o.steps, o.cfg, num_threads());
  for (const auto& r : j["stages"]) {
    std::printf("  %-14s %8.2f s   peak RSS %10s   RSS after %10s\n", r["name"].get<std::string>().c_str(),
                r["seconds"].get<double>(), fmt_bytes(r["peak_rss_bytes"].get<size_t>()).c_str(),
                fmt_bytes(r["rss_after_bytes"].get<size_t>()).c_str());
    if (r.contains("step_seconds"))
      std::printf("  %-14s %8.2f s per step (steady), load+setup %.2f s%s\n", "", r["step_seconds_mean_steady"].get<double>(),
                  r["load_and_setup_seconds"].get<double>(),
                  r.contains("projected_seconds_all_steps")
                      ? str(", ", o.steps, " steps projected: ", r["projected_seconds_all_steps"].get<double>(), " s").c_str()
                      : "");
    if (r.contains("extrapolated_24_layers"))
      std::printf("  %-14s extrapolated to 24 layers: %.2f s, peak RSS %s (built %d layers)\n", "",
                  r["extrapolated_24_layers"]["seconds"].get<double>(),
                  fmt_bytes(r["extrapolated_24_layers"]["peak_rss_bytes"].get<size_t>()).c_str(), layers);
  }
}

}  // namespace

void register_bench_pipeline(CLI::App& app) {
  auto o = std::make_shared<PipeOpts>();
  auto* bench = app.get_subcommand("bench");
  auto* c = bench->add_subcommand("pipeline", "the whole generation pipeline (T5-XXL shapes, DiT, FLUX VAE) with random "
                                              "weights of the true sizes: time and peak RSS per stage");
  c->add_option("--config", o->config, "DiT preset (oboro-1b, small, tiny)")->capture_default_str();
  c->add_option("--size", o->size, "WxH in pixels (the report's --image_size [416,736] is 736x416)")->capture_default_str();
  c->add_option("--steps", o->steps, "sampling steps of the schedule")->capture_default_str()
      ->check(int_in(1, 1000));
  c->add_option("--run-steps", o->run_steps,
                "DiT steps actually run (default all); fewer: the full-schedule time is projected from the steady step time")
      ->check(int_in(0, 1000));
  c->add_option("--cfg", o->cfg, "CFG scale (not 1: cond and uncond in one batch of 2)")->capture_default_str()
      ->check(real_in(0, 100));
  c->add_option("--t5-layers", o->t5_layers,
                "T5 layers to build (1-24; default: as many as fit in 60% of MemAvailable); fewer than 24 are "
                "extrapolated to 24")
      ->check(int_in(0, 1024));
  c->add_option("--prompt", o->prompt, "prompt (its token count sets the T5 and text lengths)");
  c->add_option("--workdir", o->workdir, "folder in which a temporary oboro-bench-pipeline-PID folder holds the weight files (default $TMPDIR)");
  c->add_flag("--keep", o->keep, "keep the weight files");
  c->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
  c->add_flag("--json", o->json, "print JSON");
  c->add_option("--type", o->type, "hold the DiT's Linear weights in this format: f32, bf16, f16, f8, q8_0");
  c->add_option("--te-type", o->te_type, "hold the T5's Linear weights in this format: f32, bf16, f16, f8, q8_0");
  c->add_option("--vae-type", o->vae_type, "hold the VAE's conv weights in this format: f32, bf16, f16 (converted while loading)");
  c->add_flag("--convert", o->convert, "store the files in the --type/--te-type formats first (oboro convert), so they "
                                       "are memory-mapped as stored instead of quantised while loading");
  c->callback([o] { run(*o); });
}

}  // namespace oboro::cli
