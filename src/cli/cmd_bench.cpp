// `oboro bench dit|train`: forward time of one CFG step (or one training step) against the FLOP count, the
// machine's measured SGEMM peak and (optionally) the PyTorch twin timed in the same run. The timing code is
// shared with `oboro bench step` (cmd_bench_step.cpp) through cli/bench_dit.h.
#include "cli/bench_dit.h"
#include "cli/bench_util.h"
#include "flow/memory_plan.h"
#include "ops/weights.h"
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/dit.h"
#include "train/optim.h"
#include "ops/backend.h"
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

namespace oboro::cli {

DitTiming time_dit(const BenchOpts& o, Backend& be, ProfilingBackend* prof) {
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.repeats < 1) fail("--repeats must be at least 1");
  if (o.warmup < 0) fail("--warmup must be 0 or more");
  DitTiming r;
  r.cfg = DiTConfig::preset(o.preset, o.text_dim, o.schedule);
  DiTConfig& cfg = r.cfg;
  cfg.latent_channels = o.latent_channels;
  const int m = o.latent_stride * cfg.patch_size;
  if (o.height <= 0 || o.width <= 0 || o.height % m || o.width % m)
    fail("the image height and width must be positive multiples of ", m, ", got ", o.height, "x", o.width,
         " (height x width)");
  if (o.batch < 1 || o.text_len < 1) fail("--batch and --text-len must be at least 1");
  const int h = o.height / o.latent_stride, w = o.width / o.latent_stride, B = o.batch, L = o.text_len;
  r.h = h;
  r.w = w;
  std::fprintf(stderr, "bench %s: %s (%s heads), %lld parameters, %dx%d px (WxH) -> latent %dx%d, batch %d, text %d, %d threads\n",
               o.train ? "train" : "dit", o.preset.c_str(), o.schedule.c_str(), (long long)cfg.param_count(), o.width,
               o.height, w, h, B, L, num_threads());
  std::unique_ptr<DiT> owned = std::make_unique<DiT>(cfg, be);
  owned->init_random_all(1);
  if (!o.type.empty() && o.type != "f32") {  // quantise, then free the F32 model: the step runs on the format alone
    if (o.train) fail("--type ", o.type, " is for inference: a training step keeps F32 weights");
    const WFormat fmt = parse_wformat(o.type, "--type");
    owned = owned->converted(fmt);
    trim_heap();
    // The reported peak RSS is the converted model's run, not the moment the F32 model and its copy coexisted
    // (a converted file loaded by `generate` never holds the F32 model).
    reset_peak_rss();
  }
  DiT& model = *owned;
  std::vector<float> x((size_t)B * cfg.latent_channels * h * w), t(B), txt((size_t)B * L * cfg.text_dim),
      mask((size_t)B * L, 1.f);
  fill_normal(x.data(), (int64_t)x.size(), 7);
  fill_normal(txt.data(), (int64_t)txt.size(), 8);
  for (int b = 0; b < B; ++b) t[b] = 0.5f;
  if (B >= 2)  // the uncond half holds the empty prompt: one token, the rest padding (as the twin bench)
    for (int b = B / 2; b < B; ++b)
      for (int j = 1; j < L; ++j) mask[(size_t)b * L + j] = 0.f;
  // A training step costs about 3 forwards (backward = 2x forward in GEMM FLOPs).
  r.flops = DiT::forward_flops(cfg, B, L, h, w) * (o.train ? 3.0 : 1.0);
  std::vector<float> target(x.size());
  fill_normal(target.data(), (int64_t)target.size(), 9);
  // The step's tensors on the backend (uploaded once, outside the timing).
  Buffer xb = upload_new(be, x, "bench.x"), tb = upload_new(be, t, "bench.t"), txtb = upload_new(be, txt, "bench.txt"),
         maskb = upload_new(be, mask, "bench.mask"), vb = be.alloc(x.size(), DType::F32, "bench.v"),
         targetb = upload_new(be, target, "bench.target"), dvb = be.alloc(x.size(), DType::F32, "bench.dv");
  AdamW opt;
  if (o.train) opt.init(be, model.layout(), AdamWConfig{});
  if (o.mixed_precision != "no" && o.mixed_precision != "bf16")
    fail("--mixed-precision ", o.mixed_precision, " is unknown: use no or bf16");
  if (o.mixed_precision == "bf16" && !o.train) fail("--mixed-precision is for bench train (inference uses --type bf16)");
  MatmulPrecisionScope precision(be, o.mixed_precision == "bf16" ? MatmulPrecision::BF16 : MatmulPrecision::F32);
  double best = 1e30;
  for (int i = 0; i < o.warmup + o.repeats; ++i) {
    if (prof) prof->reset();
    double t0 = bench_now();
    model.forward(vb.f32(), xb.f32(), tb.f32(), txtb.f32(), maskb.f32(), B, L, h, w, o.train);
    if (o.train) {
      be.zero(dvb.f32(), dvb.size());
      be.mse_backward(dvb.f32(), vb.f32(), targetb.f32(), vb.size(), 1.f);
      model.zero_grads();
      model.backward(dvb.f32());
      opt.step(model.params(), model.grads(), 1e-4f, i + 1);
    }
    double dt = bench_now() - t0;
    std::fprintf(stderr, "  %s %d: %.3f s (load %s)\n", i < o.warmup ? "warmup" : "run", i, dt, load_average().c_str());
    if (i < o.warmup) continue;
    r.times.push_back(dt);
    if (dt < best) {
      best = dt;
      if (prof) {
        r.profile = prof->stats();
        r.profile_step_seconds = dt;
      }
    }
  }
  r.best = best;
  for (double d : r.times) r.mean += d;
  r.mean /= r.times.size();
  r.activation_bytes = model.activation_bytes();
  return r;
}

nlohmann::json run_dit_twin(const BenchOpts& o) {
  require_python_torch(o.python);
  const std::string args = "--config " + o.preset + " --schedule " + o.schedule + " --text-dim " +
                           std::to_string(o.text_dim) + " --height " + std::to_string(o.height) + " --width " +
                           std::to_string(o.width) + " --batch " + std::to_string(o.batch) + " --text-len " +
                           std::to_string(o.text_len) + " --threads " + std::to_string(num_threads()) +
                           " --repeats " + std::to_string(o.repeats) + " --warmup " + std::to_string(o.warmup) +
                           " --latent-channels " + std::to_string(o.latent_channels) + " --latent-stride " +
                           std::to_string(o.latent_stride) + " --dtypes " + o.twin_dtypes +
                           (o.train ? " --train" : "");
  auto tj = run_twin_script(o.python, o.twin_script, args, "the PyTorch twin (DiT)");
  if (!tj.contains("min_seconds")) fail("the PyTorch twin's JSON lacks min_seconds");
  return tj;
}

namespace {

void bench_dit(const BenchOpts& o) {
  std::unique_ptr<ProfilingBackend> prof;
  if (o.profile) prof = std::make_unique<ProfilingBackend>(cli::backend());
  DitTiming r = prof ? time_dit(o, *prof, prof.get()) : time_dit(o, cli::backend());
  if (prof)
    std::fprintf(stderr, "per-op profile of the fastest step (%.3f s, through ProfilingBackend):\n%s",
                 r.profile_step_seconds, ProfilingBackend::format_table(r.profile, r.profile_step_seconds).c_str());
  const double best = r.best, flops = r.flops;
  const int B = o.batch, L = o.text_len;
  double peak = sgemm_peak_gflops(cli::backend(), 2048);
  nlohmann::json j;
  j["mode"] = o.train ? "train" : "forward";
  if (o.train) j["mixed_precision"] = o.mixed_precision;
  j["model"] = o.preset;
  j["schedule"] = o.schedule;
  j["parameters"] = r.cfg.param_count();
  j["image"] = std::to_string(o.width) + "x" + std::to_string(o.height);
  j["batch"] = B;
  j["text_len"] = L;
  j["threads"] = num_threads();
  j["flops_per_step"] = flops;
  j["seconds_per_step_best"] = best;
  j["seconds_per_step_mean"] = r.mean;
  j["gflops_achieved"] = flops / best / 1e9;
  j["sgemm_peak_gflops_2048"] = peak;
  j["fraction_of_sgemm_peak"] = flops / best / 1e9 / peak;
  j["activation_bytes"] = r.activation_bytes;
  j["peak_rss_bytes"] = peak_rss_bytes();
  if (o.twin) {
    auto tj = run_dit_twin(o);
    // best against best: the twin's fastest run over its precisions
    double ts = tj.at("min_seconds").get<double>();
    j["twin_seconds_per_step"] = ts;
    j["twin_dtype"] = tj.value("dtype", "float32");
    j["twin_results"] = tj.value("results", nlohmann::json::object());
    j["twin_gflops"] = flops / ts / 1e9;
    j["speedup_vs_twin"] = ts / best;
    j["ratio"] = best / ts;  // oboro time / twin time (issue 6: ≤ 0.67 for a training step, ≤ 0.5 for inference)
  }
  j["load_average"] = load_average();
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("model %s (%s), %s px, batch %d, text %d, %d threads%s\n", o.preset.c_str(), o.schedule.c_str(),
                j["image"].get<std::string>().c_str(), B, L, num_threads(),
                o.train && o.mixed_precision == "bf16" ? ", mixed precision bf16" : "");
    std::printf("  %s: %.3f s best, %.3f s mean over %d runs, %.1f GFLOP -> %.1f GFLOP/s\n",
                o.train ? "train step" : "forward", best, r.mean, (int)r.times.size(), flops / 1e9, flops / best / 1e9);
    std::printf("  SGEMM peak (2048^3): %.1f GFLOP/s -> %.0f%% of peak\n", peak, 100.0 * flops / best / 1e9 / peak);
    std::printf("  activations: %.1f MiB, peak RSS %.1f MiB\n", r.activation_bytes / 1048576.0,
                j["peak_rss_bytes"].get<size_t>() / 1048576.0);
    if (o.twin)
      std::printf("  PyTorch twin: %.3f s best (%s) -> oboro/twin time ratio %.2f (oboro is %.2fx the twin's speed)\n",
                  j["twin_seconds_per_step"].get<double>(), j["twin_dtype"].get<std::string>().c_str(),
                  j["ratio"].get<double>(), j["speedup_vs_twin"].get<double>());
    if (o.train)
      std::printf("  throughput: %.1f samples/s (twin %.1f samples/s)\n", B / best,
                  o.twin ? B / j["twin_seconds_per_step"].get<double>() : 0.0);
    std::printf("  load average: %s\n", j["load_average"].get<std::string>().c_str());
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
    d->add_option("--text-dim", o->text_dim, "text encoder width (4096 for T5-XXL)")->capture_default_str()
      ->check(int_in(1, 65536));
    d->add_option("--latent-channels", o->latent_channels, "latent channels (16 FLUX VAE, 12 pixels stride 2)")->capture_default_str()
      ->check(int_in(1, 1024));
    d->add_option("--latent-stride", o->latent_stride, "pixels per latent pixel (8 FLUX VAE)")->capture_default_str()
      ->check(int_in(1, 64));
    d->add_option("--height", o->height, "image height in pixels")->capture_default_str()
      ->check(int_in(1, 16384));
    d->add_option("--width", o->width, "image width in pixels")->capture_default_str()
      ->check(int_in(1, 16384));
    d->add_option("--batch", o->batch, "batch (2 = cond + uncond of one CFG step)")->capture_default_str()
      ->check(int_in(1, 4096));
    d->add_option("--text-len", o->text_len, "text tokens")->capture_default_str()
      ->check(int_in(1, 4096));
    d->add_option("--repeats", o->repeats, "timed runs")->capture_default_str()
      ->check(int_in(1, 100000));
    d->add_option("--warmup", o->warmup, "untimed runs first")->capture_default_str()
      ->check(int_in(0, 100000));
    d->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
    d->add_flag("--twin", o->twin, "also time the PyTorch twin in the same run");
    d->add_option("--twin-dtypes", o->twin_dtypes, "the twin's precisions, best taken: float32,bfloat16 (autocast)")
        ->capture_default_str();
    d->add_option("--twin-script", o->twin_script, "path of bench/twin_dit_bench.py")->capture_default_str();
    d->add_option("--python", o->python, "python with torch")->capture_default_str();
    d->add_flag("--json", o->json, "print JSON");
    d->add_flag("--profile", o->profile, "per-op table (op, calls, ms, % of step, GFLOP/s) of the fastest step, on stderr");
    if (train)
      d->add_option("--mixed-precision", o->mixed_precision,
                    "no (F32 GEMMs) or bf16 (BF16 GEMM operands, F32 accumulation and master weights)")
          ->capture_default_str();
    d->callback([o] { bench_dit(*o); });
  }
}

}  // namespace oboro::cli
