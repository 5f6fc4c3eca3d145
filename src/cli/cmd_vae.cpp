// `oboro debug vae` (the spec §8 debug contract) and `oboro bench vae` (decode time, FLOPs and peak memory of the
// FLUX.1 VAE with random weights of the true size).
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "ops/cpu/conv_cpu.h"
#include "ops/profiling_backend.h"
#include <nlohmann/json.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace oboro::cli {
namespace {

struct VaeCliOpts {
  std::string model, encode_in, decode_in, output;
  std::string type;  // bench vae: conv weight format (f32, bf16, f16)
  std::string python = "/usr/bin/python3", twin_script = OBORO_SOURCE_DIR "/bench/twin_vae_bench.py",
              twin_dtypes = "float32,bfloat16";
  bool tiled = false, no_tiling = false, encode = false, json = false, compare_torch = false, profile = false;
  bool conv_direct = false;  // bench vae: no Winograd for the bf16 3×3 convs (A/B timing)
  int tile = 64, overlap = 16, height = 416, width = 736, repeats = 1, threads = 0;
};

VaeRunOptions run_options(const VaeCliOpts& o) {
  if (o.tiled && o.no_tiling) fail("give at most one of --tiled and --no-tiling");
  VaeRunOptions r;
  r.tiling = o.tiled       ? VaeRunOptions::Tiling::On
             : o.no_tiling ? VaeRunOptions::Tiling::Off
                           : VaeRunOptions::Tiling::Auto;
  r.tile = o.tile;
  r.overlap = o.overlap;
  return r;
}

void add_tiling_options(CLI::App* c, VaeCliOpts& o) {
  c->add_flag("--tiled", o.tiled,
              "always tile (default: tile only when an untiled pass needs more than 3 GiB of activations)");
  c->add_flag("--no-tiling", o.no_tiling, "never tile");
  c->add_option("--tile", o.tile, "tile side in latent pixels (x8 image pixels)")->capture_default_str()
      ->check(int_in(1, 4096, " latent pixels"));
  c->add_option("--overlap", o.overlap, "tile overlap in latent pixels, blended linearly")->capture_default_str()
      ->check(int_in(0, 1024, " latent pixels"));
}

// Spec §8: --encode: IN `image` (B,3,H,W) F32 in [-1,1] → OUT `latent` (B,16,H/8,W/8), scaled;
// --decode: IN `latent` → OUT `image` in [-1,1], not clamped.
void run_debug_vae(const VaeCliOpts& o) {
  if (o.encode_in.empty() == o.decode_in.empty()) fail("give exactly one of --encode IN and --decode IN");
  const VaeRunOptions ro = run_options(o);
  Backend& be = cli::backend();
  auto vae = Vae::load(o.model, be);
  const VaeConfig& c = vae->config();
  const bool enc = !o.encode_in.empty();
  TensorSource in = TensorSource::open(enc ? o.encode_in : o.decode_in);
  const char* name = enc ? "image" : "latent";
  if (!in.has(name))
    fail(in.path(), ": input tensor '", name, "' is missing (expected ",
         enc ? "(B, 3, H, W) F32 in [-1, 1]" : "(B, 16, h, w) F32, scaled latents", ")");
  Tensor x = in.tensor_f32(name);
  const int want_c = enc ? c.in_channels : c.z_channels;
  if (x.ndim() != 4 || x.dim(1) != want_c || x.numel() == 0)
    fail(in.path(), ": input tensor '", name, "' has shape ", shape_str(x.shape()), ", expected (B, ", want_c,
         enc ? ", H, W)" : ", h, w)");
  const int B = (int)x.dim(0), H = (int)x.dim(2), W = (int)x.dim(3), s = c.stride();
  SafetensorsWriter wr;
  Tensor y;
  if (enc) {
    if (H % s || W % s) fail(in.path(), ": image is ", W, "x", H, "; both sides must be multiples of ", s);
    y = Tensor::zeros({B, c.z_channels, H / s, W / s});
    vae->encode(y.f32(), x.f32(), B, H, W, ro);
    wr.add("latent", y);
  } else {
    y = Tensor::zeros({B, c.out_channels, H * s, W * s});
    vae->decode(y.f32(), x.f32(), B, H, W, ro);
    wr.add("image", y);
  }
  wr.write(o.output);
}

void run_bench_vae(const VaeCliOpts& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const VaeRunOptions ro = run_options(o);
  const VaeConfig cfg = VaeConfig::flux();
  const int s = cfg.stride();
  if (o.height <= 0 || o.width <= 0 || o.height % s || o.width % s)
    fail("--height and --width must be positive multiples of ", s, ", got ", o.height, "x", o.width);
  if (o.repeats < 1) fail("--repeats must be at least 1");
  const WFormat fmt = parse_vae_wformat(o.type, "--type");
  if (o.compare_torch) require_python_torch(o.python);
  cpu::conv_force_direct(o.conv_direct);
  const std::string load0 = load_average();
  const int h = o.height / s, w = o.width / s;
  std::unique_ptr<ProfilingBackend> prof;
  if (o.profile) prof = std::make_unique<ProfilingBackend>(cli::backend());
  Backend& be = prof ? static_cast<Backend&>(*prof) : cli::backend();
  Vae vae(cfg, be, fmt);
  vae.init_random(1);  // the same random values in every format (drawn in F32, then converted)
  std::fprintf(stderr,
               "bench vae: FLUX.1 VAE (%s), %lld parameters, random weights, conv weights %s; %dx%d px <-> latent "
               "%dx%d, %d threads\n",
               cfg.describe().c_str(), (long long)cfg.param_count(), wformat_name(fmt), o.width, o.height, w, h,
               num_threads());
  if (o.conv_direct) std::fprintf(stderr, "  --conv-direct: bf16 3x3 convs through im2row (no Winograd)\n");
  nlohmann::json j;
  j["image"] = std::to_string(o.width) + "x" + std::to_string(o.height);
  j["threads"] = num_threads();
  j["parameters"] = cfg.param_count();
  j["weight_bytes"] = vae.weight_bytes();
  j["weight_format"] = wformat_name(fmt);
  j["conv3x3_bf16"] = o.conv_direct ? "direct" : "winograd";  // when the CPU has AVX-512 BF16
  auto timed = [&](bool enc) {
    const bool tiles = vae.would_tile(enc, h, w, ro);
    vae.reset_peak_activation_bytes();
    std::vector<float> lat((size_t)cfg.z_channels * h * w), img((size_t)3 * o.height * o.width);
    fill_normal(enc ? img.data() : lat.data(), (int64_t)(enc ? img.size() : lat.size()), 7);
    double best = 1e30, flops = 0;
    std::vector<ProfilingBackend::OpStat> pstats;
    for (int r = 0; r < o.repeats; ++r) {
      if (prof) prof->reset();
      const double f0 = vae.flops_done(), t0 = bench_now();
      if (enc) vae.encode(lat.data(), img.data(), 1, o.height, o.width, ro);
      else vae.decode(img.data(), lat.data(), 1, h, w, ro);
      const double dt = bench_now() - t0;
      flops = vae.flops_done() - f0;
      std::fprintf(stderr, "  %s run %d: %.3f s\n", enc ? "encode" : "decode", r, dt);
      if (dt < best && prof) pstats = prof->stats();
      best = std::min(best, dt);
    }
    if (prof)
      std::fprintf(o.json ? stderr : stdout, "per-op profile of the fastest %s:\n%s", enc ? "encode" : "decode",
                   ProfilingBackend::format_table(pstats, best).c_str());
    nlohmann::json r;
    r["tiled"] = tiles;
    r["seconds_best"] = best;
    r["gflop"] = flops / 1e9;
    r["gflop_untiled_pass"] = vae.pass_flops(enc, h, w) / 1e9;
    r["gflops_achieved"] = flops / best / 1e9;
    r["planned_activation_bytes_untiled"] = vae.activation_bytes(enc, h, w);
    r["activation_bytes_allocated_peak"] = vae.peak_activation_bytes();
    vae.release_activations();
    return r;
  };
  j["decode"] = timed(false);
  if (o.encode) j["encode"] = timed(true);
  j["peak_rss_bytes"] = peak_rss_bytes();
  if (o.compare_torch) {
    const std::string args = "--height " + std::to_string(o.height) + " --width " + std::to_string(o.width) +
                             " --threads " + std::to_string(num_threads()) + " --repeats " +
                             std::to_string(o.repeats) + " --dtypes " + o.twin_dtypes + (o.encode ? " --encode" : "");
    auto tj = run_twin_script(o.python, o.twin_script, args, "the PyTorch twin (VAE)");
    j["torch"] = tj;
    j["decode"]["torch_s"] = tj.at("min_seconds");
    j["decode"]["torch_dtype"] = tj.value("dtype", "float32");
    j["decode"]["ratio"] = j["decode"]["seconds_best"].get<double>() / tj.at("min_seconds").get<double>();
    if (o.encode && tj.contains("encode")) {
      j["encode"]["torch_s"] = tj["encode"].at("min_seconds");
      j["encode"]["torch_dtype"] = tj["encode"].value("dtype", "float32");
      j["encode"]["ratio"] = j["encode"]["seconds_best"].get<double>() / tj["encode"].at("min_seconds").get<double>();
    }
  }
  j["load_average_start"] = load0;
  j["load_average_end"] = load_average();
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("FLUX.1 VAE, %s px, %d threads, weights %.1f MiB (conv weights %s, the rest F32)\n",
              j["image"].get<std::string>().c_str(), num_threads(), vae.weight_bytes() / 1048576.0, wformat_name(fmt));
  for (const char* k : {"decode", "encode"}) {
    if (!j.contains(k)) continue;
    const auto& r = j[k];
    std::printf("  %s%s: %.3f s, %.1f GFLOP -> %.1f GFLOP/s; activations %.1f MiB\n", k,
                r["tiled"].get<bool>() ? " (tiled)" : "", r["seconds_best"].get<double>(), r["gflop"].get<double>(),
                r["gflops_achieved"].get<double>(), r["activation_bytes_allocated_peak"].get<size_t>() / 1048576.0);
    if (r.contains("torch_s"))
      std::printf("    PyTorch twin: %.3f s (%s) -> ratio oboro/torch %.2f\n", r["torch_s"].get<double>(),
                  r["torch_dtype"].get<std::string>().c_str(), r["ratio"].get<double>());
  }
  std::printf("  peak RSS: %.1f MiB; load average %s (start) %s (end)\n", j["peak_rss_bytes"].get<size_t>() / 1048576.0,
              load0.c_str(), j["load_average_end"].get<std::string>().c_str());
}

}  // namespace

void register_vae_commands(CLI::App& app) {
  auto o = std::make_shared<VaeCliOpts>();
  auto* dbg = app.get_subcommand("debug");
  auto* c = dbg->add_subcommand("vae", "FLUX.1 VAE: --encode IN (image) or --decode IN (latent) -> OUT (spec §8)");
  c->add_option("--model", o->model, "VAE file: ae.safetensors or a diffusers-layout AutoencoderKL")->required();
  c->add_option("--encode", o->encode_in, "inputs .safetensors holding `image` (B,3,H,W) F32 in [-1,1]");
  c->add_option("--decode", o->decode_in, "inputs .safetensors holding `latent` (B,16,H/8,W/8) F32 (scaled)");
  c->add_option("--output", o->output, "output .safetensors (`latent` or `image`)")->required();
  add_tiling_options(c, *o);
  c->callback([o] { run_debug_vae(*o); });

  auto b = std::make_shared<VaeCliOpts>();
  auto* bench = app.get_subcommand("bench");
  auto* d = bench->add_subcommand("vae", "FLUX.1 VAE decode (and encode) with random weights of the true size: "
                                         "time, GFLOP, peak RSS");
  d->add_option("--height", b->height, "image height in pixels")->capture_default_str()
      ->check(int_in(1, 16384));
  d->add_option("--width", b->width, "image width in pixels")->capture_default_str()
      ->check(int_in(1, 16384));
  d->add_option("--repeats", b->repeats, "timed runs (best reported)")->capture_default_str()
      ->check(int_in(1, 100000));
  d->add_option("--threads", b->threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
  d->add_flag("--encode", b->encode, "also time the encoder");
  d->add_option("--type", b->type, "conv weight format: f32, bf16, f16 (default f32)");
  d->add_flag("--conv-direct", b->conv_direct,
              "bf16: run the 3x3 stride-1 convs through im2row instead of Winograd F(2x2,3x3) (A/B timing)");
  d->add_flag("--json", b->json, "print JSON");
  d->add_flag("--profile", b->profile, "per-op table (op, calls, ms, % of the pass, GFLOP/s) of the fastest run");
  d->add_flag("--compare-torch", b->compare_torch, "also time the PyTorch twin (best of F32 and BF16 autocast)");
  d->add_option("--twin-dtypes", b->twin_dtypes, "the twin's precisions")->capture_default_str();
  d->add_option("--twin-script", b->twin_script, "path of bench/twin_vae_bench.py")->capture_default_str();
  d->add_option("--python", b->python, "python with torch")->capture_default_str();
  add_tiling_options(d, *b);
  d->callback([b] { run_bench_vae(*b); });
}

}  // namespace oboro::cli
