// `oboro bench dit`: forward time of one CFG step against the FLOP count, the machine's
// measured SGEMM peak and (optionally) the PyTorch twin timed in the same run.
#include "cli/commands.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/dit.h"
#include "train/optim.h"
#include "ops/backend.h"
#include <nlohmann/json.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#ifndef OBORO_SOURCE_DIR
#define OBORO_SOURCE_DIR "."
#endif

namespace oboro::cli {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best-of-3 SGEMM rate at n×n×n through the engine's own GEMM path (OpenBLAS kernels split over
// the thread pool), so "% of peak" compares like with like.
double sgemm_peak_gflops(int n) {
  std::vector<float> a((size_t)n * n), b((size_t)n * n), c((size_t)n * n);
  fill_normal(a.data(), (int64_t)a.size(), 1);
  fill_normal(b.data(), (int64_t)b.size(), 2);
  double best = 1e30;
  for (int r = 0; r < 4; ++r) {
    double t0 = now();
    cpu_backend().linear_forward(c.data(), a.data(), b.data(), nullptr, n, n, n);
    double dt = now() - t0;
    if (r > 0) best = std::min(best, dt);  // first call warms up the BLAS threads
  }
  return 2.0 * n * n * n / best / 1e9;
}

struct BenchOpts {
  std::string preset = "oboro-1b", schedule = "mmh", twin_script = OBORO_SOURCE_DIR "/bench/twin_dit_bench.py";
  std::string python = "/usr/bin/python3";
  int text_dim = 4096, height = 416, width = 736, batch = 2, text_len = 64, repeats = 2, warmup = 1, threads = 0;
  int latent_channels = 16, latent_stride = 8;
  bool twin = false, json = false, train = false;
};

void bench_dit(const BenchOpts& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  DiTConfig cfg = DiTConfig::preset(o.preset, o.text_dim, o.schedule);
  cfg.latent_channels = o.latent_channels;
  const int m = o.latent_stride * cfg.patch_size;
  if (o.height % m || o.width % m) fail("--height and --width must be multiples of ", m, ", got ", o.height, "x", o.width);
  const int h = o.height / o.latent_stride, w = o.width / o.latent_stride, B = o.batch, L = o.text_len;
  Backend& be = cpu_backend();
  std::fprintf(stderr, "bench dit: %s (%s heads), %lld parameters, %dx%d px -> latent %dx%d, batch %d, text %d, %d threads\n",
               o.preset.c_str(), o.schedule.c_str(), (long long)cfg.param_count(), o.width, o.height, w, h, B, L,
               num_threads());
  DiT model(cfg, be);
  model.init_random_all(1);
  std::vector<float> x((size_t)B * cfg.latent_channels * h * w), t(B), txt((size_t)B * L * cfg.text_dim),
      mask((size_t)B * L, 1.f), v(x.size());
  fill_normal(x.data(), (int64_t)x.size(), 7);
  fill_normal(txt.data(), (int64_t)txt.size(), 8);
  for (int b = 0; b < B; ++b) t[b] = 0.5f;
  if (B >= 2)  // the uncond half holds the empty prompt: one token, the rest padding (as the twin bench)
    for (int b = B / 2; b < B; ++b)
      for (int j = 1; j < L; ++j) mask[(size_t)b * L + j] = 0.f;
  // A training step costs about 3 forwards (backward = 2x forward in GEMM FLOPs).
  double flops = DiT::forward_flops(cfg, B, L, h, w) * (o.train ? 3.0 : 1.0);
  std::vector<float> target(x.size()), dv(x.size());
  fill_normal(target.data(), (int64_t)target.size(), 9);
  AdamW opt;
  if (o.train) opt.init(model.layout(), AdamWConfig{});
  std::vector<double> times;
  for (int r = 0; r < o.warmup + o.repeats; ++r) {
    double t0 = now();
    model.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, o.train);
    if (o.train) {
      std::fill(dv.begin(), dv.end(), 0.f);
      be.mse_backward(dv.data(), v.data(), target.data(), v.size(), 1.f);
      model.zero_grads();
      model.backward(dv.data());
      opt.step(model.params(), model.grads(), 1e-4f, r + 1);
    }
    double dt = now() - t0;
    std::fprintf(stderr, "  %s %d: %.3f s\n", r < o.warmup ? "warmup" : "run", r, dt);
    if (r >= o.warmup) times.push_back(dt);
  }
  double best = *std::min_element(times.begin(), times.end());
  double mean = 0;
  for (double d : times) mean += d;
  mean /= times.size();
  double peak = sgemm_peak_gflops(2048);
  nlohmann::json j;
  j["mode"] = o.train ? "train" : "forward";
  j["model"] = o.preset;
  j["schedule"] = o.schedule;
  j["parameters"] = cfg.param_count();
  j["image"] = std::to_string(o.width) + "x" + std::to_string(o.height);
  j["batch"] = B;
  j["text_len"] = L;
  j["threads"] = num_threads();
  j["flops_per_step"] = flops;
  j["seconds_per_step_best"] = best;
  j["seconds_per_step_mean"] = mean;
  j["gflops_achieved"] = flops / best / 1e9;
  j["sgemm_peak_gflops_2048"] = peak;
  j["fraction_of_sgemm_peak"] = flops / best / 1e9 / peak;
  j["activation_bytes"] = model.activation_bytes();
  if (o.twin) {
    std::string cmd = o.python + " " + o.twin_script + " --config " + o.preset + " --schedule " + o.schedule +
                      " --text-dim " + std::to_string(o.text_dim) + " --height " + std::to_string(o.height) +
                      " --width " + std::to_string(o.width) + " --batch " + std::to_string(B) + " --text-len " +
                      std::to_string(L) + " --threads " + std::to_string(num_threads()) + " --repeats " +
                      std::to_string(o.repeats) + " --warmup " + std::to_string(o.warmup) + " --latent-channels " +
                      std::to_string(o.latent_channels) + " --latent-stride " + std::to_string(o.latent_stride) +
                      (o.train ? " --train" : "");
    std::fprintf(stderr, "  twin: %s\n", cmd.c_str());
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) fail("could not start the PyTorch twin: ", cmd);
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
    int rc = pclose(f);
    if (rc != 0) fail("the PyTorch twin benchmark failed (exit ", rc, "): ", cmd);
    auto tj = nlohmann::json::parse(out.substr(out.find('{')));
    // best against best: the twin reports its mean and its fastest run
    double ts = tj.contains("min_seconds") ? tj.at("min_seconds").get<double>() : tj.at("seconds_per_step").get<double>();
    j["twin_seconds_per_step"] = ts;
    j["twin_gflops"] = flops / ts / 1e9;
    j["speedup_vs_twin"] = ts / best;
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("model %s (%s), %s px, batch %d, text %d, %d threads\n", o.preset.c_str(), o.schedule.c_str(),
                j["image"].get<std::string>().c_str(), B, L, num_threads());
    std::printf("  %s: %.3f s best, %.3f s mean over %d runs, %.1f GFLOP -> %.1f GFLOP/s\n", o.train ? "train step" : "forward", best, mean,
                (int)times.size(), flops / 1e9, flops / best / 1e9);
    std::printf("  SGEMM peak (2048^3): %.1f GFLOP/s -> %.0f%% of peak\n", peak, 100.0 * flops / best / 1e9 / peak);
    std::printf("  activations: %.1f MiB\n", model.activation_bytes() / 1048576.0);
    if (o.twin)
      std::printf("  PyTorch twin: %.3f s best -> oboro is %.2fx the twin's speed\n", j["twin_seconds_per_step"].get<double>(),
                  j["speedup_vs_twin"].get<double>());
    if (o.train)
      std::printf("  throughput: %.1f samples/s (twin %.1f samples/s)\n", B / best,
                  o.twin ? B / j["twin_seconds_per_step"].get<double>() : 0.0);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (speed and memory)");
  bench->require_subcommand(1);
  for (bool train : {false, true}) {
    auto o = std::make_shared<BenchOpts>();
    o->train = train;
    auto* d = bench->add_subcommand(train ? "train" : "dit",
                                    train ? "Training step of the DiT (forward, MSE, backward, AdamW) with random weights"
                                          : "Forward time of one CFG step (batch 2) of the DiT with random weights");
    d->add_option("--config", o->preset, "model preset: oboro-1b, small, tiny")->capture_default_str();
    d->add_option("--schedule", o->schedule, "head schedule: mmh or uniform")->capture_default_str();
    d->add_option("--text-dim", o->text_dim, "text encoder width (4096 for T5-XXL)")->capture_default_str();
    d->add_option("--latent-channels", o->latent_channels, "latent channels (16 FLUX VAE, 12 pixels stride 2)")->capture_default_str();
    d->add_option("--latent-stride", o->latent_stride, "pixels per latent pixel (8 FLUX VAE)")->capture_default_str();
    d->add_option("--height", o->height, "image height in pixels")->capture_default_str();
    d->add_option("--width", o->width, "image width in pixels")->capture_default_str();
    d->add_option("--batch", o->batch, "batch (2 = cond + uncond of one CFG step)")->capture_default_str();
    d->add_option("--text-len", o->text_len, "text tokens")->capture_default_str();
    d->add_option("--repeats", o->repeats, "timed runs")->capture_default_str();
    d->add_option("--warmup", o->warmup, "untimed runs first")->capture_default_str();
    d->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
    d->add_flag("--twin", o->twin, "also time the PyTorch twin in the same run");
    d->add_option("--twin-script", o->twin_script, "path of bench/twin_dit_bench.py")->capture_default_str();
    d->add_option("--python", o->python, "python with torch")->capture_default_str();
    d->add_flag("--json", o->json, "print JSON");
    d->callback([o] { bench_dit(*o); });
  }
}

}  // namespace oboro::cli
