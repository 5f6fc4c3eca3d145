// The DiT benchmark shared by `oboro bench dit|train` (cmd_bench.cpp) and `oboro bench step` (cmd_bench_step.cpp):
// build the preset with random weights of the true size, time forward (or a training step) best-of-N, and time
// the PyTorch twin (bench/twin_dit_bench.py) on the same config.
#pragma once
#include "cli/bench_util.h"
#include "models/dit_config.h"
#include "ops/profiling_backend.h"
#include <string>
#include <vector>

namespace oboro::cli {

struct BenchOpts {
  std::string preset = "oboro-1b", schedule = "mmh", twin_script = OBORO_SOURCE_DIR "/bench/twin_dit_bench.py";
  std::string python = "/usr/bin/python3", twin_dtypes = "float32,bfloat16";
  int text_dim = 4096, height = 416, width = 736, batch = 2, text_len = 64, repeats = 2, warmup = 1, threads = 0;
  int latent_channels = 16, latent_stride = 8;
  bool twin = false, json = false, train = false, profile = false;
  std::string type;  // weight format of the quantisable Linear weights (forward only; "" = f32)
  std::string mixed_precision = "no";  // training step: "no" (F32 GEMMs) or "bf16" (MatmulPrecision::BF16)
};

struct DitTiming {
  DiTConfig cfg;
  int h = 0, w = 0;             // latent size
  double flops = 0;             // per step (forward, or ≈3 forwards for a training step)
  double best = 0, mean = 0;    // seconds per step
  std::vector<double> times;
  size_t activation_bytes = 0;
  std::vector<ProfilingBackend::OpStat> profile;  // the best run's per-op stats when profiled
  double profile_step_seconds = 0;
};

// Check the shape, build the DiT on `be` (a ProfilingBackend when `prof` is given: then prof == &be and the stats
// of the fastest timed run are kept), run warm-up + timed steps.
DitTiming time_dit(const BenchOpts& o, Backend& be, ProfilingBackend* prof = nullptr);

// Run the twin on the same config; returns its JSON (min_seconds = best over o.twin_dtypes, results per dtype).
nlohmann::json run_dit_twin(const BenchOpts& o);

}  // namespace oboro::cli
