// `oboro bench step` (one CFG step of the DiT vs the PyTorch twin, JSON for external checks, per-op profile),
// `oboro bench t5` (T5 v1.1 encode vs the twin) and `oboro bench attention` (attention working memory vs tokens).
#include "cli/bench_dit.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/dit.h"
#include "models/t5.h"
#include "ops/backend.h"
#include "ops/profiling_backend.h"
#include <malloc.h>
#include <unistd.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace oboro::cli {
namespace {

const char* kDitFlopsFormula =
    "per forward, multiply-add = 2, S = L + N tokens (N = (h/p)(w/p) image, L text), M = B*S, "
    "C = cond width, T = text width, D = hidden, F = SwiGLU hidden, P = C_lat*p^2: "
    "2B(256C + 2C^2 + TC) [t, bos embedders] + 2BLTD + 2BNPD [token embedders] "
    "+ layers*(2B*C*4D [adaLN] + 2M(4D^2 + 3DF) [qkv, out, SwiGLU] + 4B*S^2*D [QK^T and PV, all heads]) "
    "+ 2BCD + 2BNDP [final layer] (DiT::forward_flops)";

nlohmann::json profile_json(const std::vector<ProfilingBackend::OpStat>& v, double step_s) {
  nlohmann::json a = nlohmann::json::array();
  std::vector<ProfilingBackend::OpStat> s = v;
  std::sort(s.begin(), s.end(), [](auto& x, auto& y) { return x.seconds > y.seconds; });
  for (const auto& o : s) {
    nlohmann::json r;
    r["op"] = o.op;
    r["calls"] = o.calls;
    r["seconds"] = o.seconds;
    r["fraction_of_step"] = step_s > 0 ? o.seconds / step_s : 0.0;
    r["flops"] = o.flops;
    if (o.flops > 0 && o.seconds > 0) r["gflops"] = o.flops / o.seconds / 1e9;
    a.push_back(r);
  }
  return a;
}

std::string profile_table(const std::vector<ProfilingBackend::OpStat>& v, double step_s) {
  return ProfilingBackend::format_table(v, step_s);
}

// ---------------------------------------------------------------- bench step
struct StepOpts {
  BenchOpts b;
  std::string size = "416x736";
  bool compare_torch = false, profile = false;
  int sgemm_n = 2048;
};

void parse_size(const std::string& s, int& h, int& w) {
  const auto x = s.find('x');
  try {
    if (x == std::string::npos) throw std::invalid_argument(s);
    size_t a = 0, b = 0;
    h = std::stoi(s.substr(0, x), &a);
    w = std::stoi(s.substr(x + 1), &b);
    if (a != x || b != s.size() - x - 1) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    fail("--size must be HEIGHTxWIDTH in pixels, e.g. 416x736; got '", s, "'");
  }
}

void run_bench_step(StepOpts so) {
  BenchOpts& o = so.b;
  parse_size(so.size, o.height, o.width);
  o.train = false;
  if (so.compare_torch) require_python_torch(o.python);  // fail before the long oboro run
  const std::string load0 = load_average();
  std::unique_ptr<ProfilingBackend> prof;
  if (so.profile) prof = std::make_unique<ProfilingBackend>(cli::backend());
  DitTiming r = time_dit(o, prof ? static_cast<Backend&>(*prof) : cli::backend(), prof.get());
  const size_t rss = peak_rss_bytes();
  const double peak = so.sgemm_n > 0 ? sgemm_peak_gflops(cli::backend(), so.sgemm_n) : 0.0;
  nlohmann::json j;
  j["oboro_s"] = r.best;
  j["torch_s"] = nullptr;
  j["ratio"] = nullptr;
  j["flops"] = r.flops;
  j["gflops"] = r.flops / r.best / 1e9;
  j["peak_rss_bytes"] = rss;
  j["sgemm_peak_gflops"] = so.sgemm_n > 0 ? nlohmann::json(peak) : nlohmann::json(nullptr);
  j["fraction_of_sgemm_peak"] = so.sgemm_n > 0 ? nlohmann::json(r.flops / r.best / 1e9 / peak) : nlohmann::json(nullptr);
  j["flops_formula"] = kDitFlopsFormula;
  j["oboro_times_s"] = r.times;
  j["oboro_mean_s"] = r.mean;
  j["config"] = o.preset;
  j["schedule"] = o.schedule;
  j["parameters"] = r.cfg.param_count();
  j["size"] = std::to_string(o.height) + "x" + std::to_string(o.width);
  j["size_order"] = "HxW";
  j["latent"] = std::to_string(r.h) + "x" + std::to_string(r.w);
  j["batch"] = o.batch;
  j["text_len"] = o.text_len;
  j["threads"] = num_threads();
  j["repeats"] = o.repeats;
  j["activation_bytes"] = r.activation_bytes;
  j["dtype"] = "float32";
  j["weight_format"] = o.type.empty() ? "f32" : o.type;
  if (so.profile) {
    j["profile"] = profile_json(r.profile, r.profile_step_seconds);
    j["profiled_step_s"] = r.profile_step_seconds;
  }
  if (so.compare_torch) {
    auto tj = run_dit_twin(o);
    const double ts = tj.at("min_seconds").get<double>();
    j["torch_s"] = ts;
    j["ratio"] = r.best / ts;
    j["torch_dtype"] = tj.value("dtype", "float32");
    j["torch_results"] = tj.value("results", nlohmann::json::object());
    j["torch_gflops"] = r.flops / ts / 1e9;
    if (tj.contains("peak_rss_bytes")) j["torch_peak_rss_bytes"] = tj["peak_rss_bytes"];
    j["torch_version"] = tj.value("torch", "");
  }
  j["load_average_start"] = load0;
  j["load_average_end"] = load_average();
  if (so.profile) {
    std::fprintf(o.json ? stderr : stdout, "per-op profile of the fastest step (%.3f s, through ProfilingBackend):\n%s",
                 r.profile_step_seconds, profile_table(r.profile, r.profile_step_seconds).c_str());
  }
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("bench step: %s (%s), %s px (HxW), batch %d (one CFG step), text %d, %d threads, weights %s\n", o.preset.c_str(),
              o.schedule.c_str(), j["size"].get<std::string>().c_str(), o.batch, o.text_len, num_threads(), o.type.empty() ? "f32" : o.type.c_str());
  std::printf("  oboro: %.3f s best of %d (mean %.3f s), %.1f GFLOP -> %.1f GFLOP/s\n", r.best, (int)r.times.size(),
              r.mean, r.flops / 1e9, r.flops / r.best / 1e9);
  if (so.sgemm_n > 0)
    std::printf("  SGEMM peak (%d^3, oboro's GEMM path): %.1f GFLOP/s -> %.0f%% of peak\n", so.sgemm_n, peak,
                100.0 * r.flops / r.best / 1e9 / peak);
  std::printf("  peak RSS %.1f MiB, activations %.1f MiB\n", rss / 1048576.0, r.activation_bytes / 1048576.0);
  if (so.compare_torch)
    std::printf("  PyTorch twin: %.3f s best (%s) -> ratio oboro/torch %.2f\n", j["torch_s"].get<double>(),
                j["torch_dtype"].get<std::string>().c_str(), j["ratio"].get<double>());
  std::printf("  load average: %s (start) %s (end)\n", load0.c_str(), j["load_average_end"].get<std::string>().c_str());
}

// ---------------------------------------------------------------- bench t5
struct T5BenchOpts {
  std::string config = "xxl", python = "/usr/bin/python3", twin_script = OBORO_SOURCE_DIR "/bench/twin_t5_bench.py";
  std::string twin_dtypes = "float32,bfloat16";
  std::string type;  // weight format of the T5's Linear weights ("" = f32)
  int tokens = 77, layers = 0, batch = 1, repeats = 3, warmup = 1, threads = 0;
  bool compare_torch = false, json = false, profile = false;
};

T5Config t5_preset(const std::string& name) {
  T5Config c;
  c.vocab_size = 32128;
  c.d_kv = 64;
  if (name == "xxl") { c.d_model = 4096; c.num_heads = 64; c.d_ff = 10240; c.num_layers = 24; }
  else if (name == "xl") { c.d_model = 2048; c.num_heads = 32; c.d_ff = 5120; c.num_layers = 24; }
  else if (name == "large") { c.d_model = 1024; c.num_heads = 16; c.d_ff = 2816; c.num_layers = 24; }
  else if (name == "base") { c.d_model = 768; c.num_heads = 12; c.d_ff = 2048; c.num_layers = 12; }
  else if (name == "small") { c.d_model = 512; c.num_heads = 6; c.d_ff = 1024; c.num_layers = 8; }
  else if (name == "tiny") { c.vocab_size = 1000; c.d_model = 64; c.d_kv = 16; c.num_heads = 4; c.d_ff = 96; c.num_layers = 2; }
  else fail("unknown T5 config '", name, "': choose xxl, xl, large, base, small (T5 v1.1) or tiny");
  return c;
}

// FLOPs of one encoder forward: per layer q,k,v,o (2·B·L·4·D·I) + wi_0, wi_1, wo (2·B·L·3·D·F) + QKᵀ, PV (4·B·H·L²·dk).
double t5_flops(const T5Config& c, int B, int L) {
  const double D = c.d_model, I = c.inner(), F = c.d_ff;
  return c.num_layers * (2.0 * B * L * (4 * D * I + 3 * D * F) + 4.0 * B * c.num_heads * (double)L * L * c.d_kv);
}

void run_bench_t5(const T5BenchOpts& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.tokens < 1 || o.batch < 1 || o.repeats < 1 || o.warmup < 0) fail("--tokens, --batch, --repeats must be >= 1");
  if (o.compare_torch) require_python_torch(o.python);
  const T5Config full = t5_preset(o.config);
  T5Config c = full;
  if (o.layers < 0 || o.layers > full.num_layers) fail("--layers must be between 1 and ", full.num_layers);
  if (o.layers > 0) c.num_layers = o.layers;
  const bool partial = c.num_layers != full.num_layers;
  const WFormat fmt = o.type.empty() ? WFormat::F32 : parse_wformat(o.type, "--type");
  const char* fmt_name = wformat_name(fmt);
  const std::string load0 = load_average();
  std::fprintf(stderr, "bench t5: T5 v1.1 %s (d_model %d, %d heads x %d, d_ff %d), %d of %d layers, %lld parameters "
               "timed (%lld full), %d tokens, batch %d, %d threads, %s weights\n",
               o.config.c_str(), c.d_model, c.num_heads, c.d_kv, c.d_ff, c.num_layers, full.num_layers,
               (long long)c.param_count(), (long long)full.param_count(), o.tokens, o.batch, num_threads(), fmt_name);
  std::unique_ptr<ProfilingBackend> prof;
  if (o.profile) prof = std::make_unique<ProfilingBackend>(cli::backend());
  Backend& be = prof ? static_cast<Backend&>(*prof) : cli::backend();
  std::unique_ptr<T5Encoder> encp;
  if (fmt == WFormat::F32) {
    encp = std::make_unique<T5Encoder>(c, be);
    encp->init_weights(1);
  } else {
    // Random weights written straight into the format and loaded as a user's converted file would be (mapped), so
    // the F32 model (T5-XXL: 19 GB) never exists.
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("oboro-bench-t5-" + std::to_string(::getpid()) + ".safetensors")).string();
    std::fprintf(stderr, "  writing the random %s T5 to %s\n", fmt_name, path.c_str());
    write_t5_quantized(path, c, fmt, {{"oboro.t5_config", c.to_json().dump()},
                                      {"modelspec.architecture", "t5-v1.1-encoder"}});
    try {
      encp = T5Encoder::load(path, be, fmt);
    } catch (...) {
      std::filesystem::remove(path);
      throw;
    }
    std::filesystem::remove(path);  // the mapping keeps the pages
  }
  T5Encoder& enc = *encp;
  std::vector<int32_t> ids((size_t)o.batch * o.tokens);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (int32_t)((i * 7919 + 13) % (size_t)c.vocab_size);
  std::vector<float> mask(ids.size(), 1.f);
  Buffer hidden_buf = enc.backend().alloc((size_t)o.batch * o.tokens * c.d_model, DType::F32, "bench.hidden");
  std::vector<double> times;
  std::vector<ProfilingBackend::OpStat> pstats;
  double best = 1e30;
  for (int i = 0; i < o.warmup + o.repeats; ++i) {
    if (prof) prof->reset();
    const double t0 = bench_now();
    enc.forward(hidden_buf.f32(), ids.data(), mask.data(), o.batch, o.tokens, false);
    const double dt = bench_now() - t0;
    std::fprintf(stderr, "  %s %d: %.3f s (load %s)\n", i < o.warmup ? "warmup" : "run", i, dt, load_average().c_str());
    if (i < o.warmup) continue;
    times.push_back(dt);
    if (dt < best) {
      best = dt;
      if (prof) pstats = prof->stats();
    }
  }
  for (float v : download_all(hidden_buf))
    if (!std::isfinite(v)) fail("bench t5: non-finite output");
  const double flops = t5_flops(c, o.batch, o.tokens);
  const double scale = (double)full.num_layers / c.num_layers;
  nlohmann::json j;
  j["config"] = o.config;
  j["weight_format"] = fmt_name;
  j["layers_timed"] = c.num_layers;
  j["layers_full"] = full.num_layers;
  j["tokens"] = o.tokens;
  j["batch"] = o.batch;
  j["threads"] = num_threads();
  j["oboro_s"] = best;
  j["oboro_times_s"] = times;
  j["flops"] = flops;
  j["gflops"] = flops / best / 1e9;
  j["flops_formula"] = "layers*(2BL(4*D*H*dk + 3*D*F) + 4*B*H*L^2*dk); embedding and norms not counted";
  j["oboro_full_model_s"] = best * scale;
  j["full_model_extrapolated"] = partial;
  j["peak_rss_bytes"] = peak_rss_bytes();
  j["torch_s"] = nullptr;
  j["ratio"] = nullptr;
  if (o.profile) j["profile"] = profile_json(pstats, best);
  if (o.compare_torch) {
    const std::string args = "--vocab " + std::to_string(c.vocab_size) + " --d-model " + std::to_string(c.d_model) +
                             " --d-kv " + std::to_string(c.d_kv) + " --heads " + std::to_string(c.num_heads) +
                             " --d-ff " + std::to_string(c.d_ff) + " --layers " + std::to_string(c.num_layers) +
                             " --tokens " + std::to_string(o.tokens) + " --batch " + std::to_string(o.batch) +
                             " --threads " + std::to_string(num_threads()) + " --repeats " + std::to_string(o.repeats) +
                             " --warmup " + std::to_string(o.warmup) + " --dtypes " + o.twin_dtypes;
    auto tj = run_twin_script(o.python, o.twin_script, args, "the PyTorch twin (T5)");
    const double ts = tj.at("min_seconds").get<double>();
    j["torch_s"] = ts;
    j["torch_full_model_s"] = ts * scale;
    j["ratio"] = best / ts;
    j["torch_dtype"] = tj.value("dtype", "float32");
    j["torch_results"] = tj.value("results", nlohmann::json::object());
    if (tj.contains("peak_rss_bytes")) j["torch_peak_rss_bytes"] = tj["peak_rss_bytes"];
  }
  j["load_average_start"] = load0;
  j["load_average_end"] = load_average();
  if (o.profile)
    std::fprintf(o.json ? stderr : stdout, "per-op profile of the fastest encode:\n%s", profile_table(pstats, best).c_str());
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("T5 v1.1 %s encode, %d tokens, batch %d, %d threads, %s weights\n", o.config.c_str(), o.tokens, o.batch,
              num_threads(), fmt_name);
  std::printf("  oboro: %.3f s for %d layers (%.1f GFLOP -> %.1f GFLOP/s); full %d layers: %.3f s%s\n", best,
              c.num_layers, flops / 1e9, flops / best / 1e9, full.num_layers, best * scale,
              partial ? " (extrapolated)" : "");
  if (o.compare_torch)
    std::printf("  PyTorch twin: %.3f s (%s); full model %.3f s%s -> ratio oboro/torch %.2f\n",
                j["torch_s"].get<double>(), j["torch_dtype"].get<std::string>().c_str(),
                j["torch_full_model_s"].get<double>(), partial ? " (extrapolated)" : "", j["ratio"].get<double>());
  std::printf("  peak RSS %.1f MiB; load average %s (start) %s (end)\n", j["peak_rss_bytes"].get<size_t>() / 1048576.0,
              load0.c_str(), j["load_average_end"].get<std::string>().c_str());
}

// ---------------------------------------------------------------- bench attention
struct AttnOpts {
  std::string tokens = "256,1024,4096", python = "/usr/bin/python3",
              twin_script = OBORO_SOURCE_DIR "/bench/twin_attention_mem.py";
  std::string precision = "f32";
  int heads = 24, head_dim = 64, batch = 1, threads = 0, repeats = 1;
  bool compare_torch = false, json = false, backward = false;
};

std::vector<int> parse_int_list(const std::string& s, const char* flag) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const int x = std::stoi(item, &used);
      if (used != item.size() || x < 1) throw std::invalid_argument(item);
      v.push_back(x);
    } catch (const std::exception&) {
      fail(flag, " must be a comma-separated list of positive integers, got '", s, "'");
    }
  }
  if (v.empty()) fail(flag, " is empty");
  return v;
}

void run_bench_attention(const AttnOpts& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.heads < 1 || o.head_dim < 1 || o.batch < 1 || o.repeats < 1)
    fail("--heads, --head-dim, --batch and --repeats must be at least 1");
  if (o.precision != "f32" && o.precision != "bf16") fail("--precision must be f32 or bf16, got '", o.precision, "'");
  const AttnPrecision prec = o.precision == "bf16" ? AttnPrecision::BF16 : AttnPrecision::F32;
  if (o.backward && prec != AttnPrecision::F32)
    fail("--backward needs --precision f32 (the BF16 forward is for inference; its lse is not for the backward)");
  if (o.compare_torch) require_python_torch(o.python);
  const std::vector<int> tokens = parse_int_list(o.tokens, "--tokens");
  // Every large block mmapped and unmapped on free: a call's peak-RSS increase is its working memory, not what
  // glibc kept from an earlier call.
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  Backend& be = cli::backend();
  const int B = o.batch, H = o.heads, dh = o.head_dim, D = H * dh;
  nlohmann::json rows = nlohmann::json::array();
  const std::string load0 = load_average();
  bool reset_ok = true;
  for (int S : tokens) {
    const size_t n = (size_t)B * S * D;
    Buffer qb = be.alloc(n), kb = be.alloc(n), vb = be.alloc(n), ob = be.alloc(n), lb = be.alloc((size_t)B * H * S);
    float *q = qb.f32(), *k = kb.f32(), *v = vb.f32(), *out = ob.f32(), *lse = lb.f32();
    std::vector<float> host(n);
    for (float* p : {q, k, v}) {
      fill_normal(host.data(), (int64_t)n, (uint64_t)(p == q ? 1 : p == k ? 2 : 3) * 1000 + S);
      be.upload(p, host.data(), n);
    }
    be.zero(out, n);
    be.zero(lse, (size_t)B * H * S);
    float *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr;
    Buffer grads[4];
    if (o.backward) {
      for (Buffer& g : grads) g = be.alloc(n);
      dq = grads[0].f32(), dk = grads[1].f32(), dv = grads[2].f32(), dout = grads[3].f32();
      be.zero(dq, n), be.zero(dk, n), be.zero(dv, n);
      be.upload(dout, host.data(), n);
    }
    std::vector<float>().swap(host);
    const float scale = 1.f / std::sqrt((float)dh);
    reset_ok = reset_peak_rss() && reset_ok;
    const size_t base = current_rss_bytes();
    double t0 = bench_now();
    be.attention_forward(out, lse, q, k, v, nullptr, B, S, H, dh, scale, nullptr, prec);
    double tf = bench_now() - t0;
    const size_t peak_f = peak_rss_bytes();  // the first call's working memory
    for (int rep = 1; rep < o.repeats; ++rep) {  // best time of --repeats calls
      t0 = bench_now();
      be.attention_forward(out, lse, q, k, v, nullptr, B, S, H, dh, scale, nullptr, prec);
      tf = std::min(tf, bench_now() - t0);
    }
    nlohmann::json r;
    r["tokens"] = S;
    r["forward_extra_bytes"] = reset_ok ? nlohmann::json(peak_f > base ? peak_f - base : 0) : nlohmann::json(nullptr);
    r["forward_seconds"] = tf;
    r["forward_gflops"] = ProfilingBackend::attention_flops(B, S, H, dh) / tf / 1e9;
    r["scores_matrix_bytes"] = (double)B * H * S * S * sizeof(float);  // what a naive S×S softmax would hold
    r["qkvo_bytes"] = 4.0 * n * sizeof(float);
    if (o.backward) {
      reset_peak_rss();
      const size_t base_b = current_rss_bytes();
      t0 = bench_now();
      be.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, nullptr, B, S, H, dh, scale);
      r["backward_seconds"] = bench_now() - t0;
      const size_t peak_b = peak_rss_bytes();
      r["backward_extra_bytes"] = reset_ok ? nlohmann::json(peak_b > base_b ? peak_b - base_b : 0) : nlohmann::json(nullptr);
      for (Buffer& g : grads) g.reset();
    }
    for (Buffer* b : {&qb, &kb, &vb, &ob, &lb}) b->reset();
    std::fprintf(stderr, "  %d tokens: forward %.3f s (%.1f GFLOP/s, %s), extra %.2f MiB (load %s)\n", S, tf,
                 r["forward_gflops"].get<double>(), o.precision.c_str(),
                 reset_ok ? (peak_f - std::min(peak_f, base)) / 1048576.0 : -1.0, load_average().c_str());
    rows.push_back(r);
  }
  nlohmann::json j;
  j["batch"] = B;
  j["heads"] = H;
  j["head_dim"] = dh;
  j["threads"] = num_threads();
  j["precision"] = o.precision;
  j["repeats"] = o.repeats;
  j["method"] = "peak RSS (VmHWM, reset through /proc/self/clear_refs) minus RSS before the call, inputs resident, "
                "glibc mmap threshold fixed at 64 KiB";
  j["oboro"] = rows;
  if (o.compare_torch) {
    const std::string args = "--tokens " + o.tokens + " --heads " + std::to_string(H) + " --head-dim " +
                             std::to_string(dh) + " --batch " + std::to_string(B) + " --threads " +
                             std::to_string(num_threads());
    j["torch"] = run_twin_script(o.python, o.twin_script, args, "the PyTorch twin (attention memory)");
  }
  j["load_average_start"] = load0;
  j["load_average_end"] = load_average();
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("attention working memory, batch %d, %d heads x %d, %d threads (%s)\n", B, H, dh, num_threads(),
              prec == AttnPrecision::BF16 ? "BF16 products, F32 softmax" : "F32");
  std::printf("  %7s %14s %14s %12s %10s", "tokens", "oboro extra", "per token", "fwd s", "GFLOP/s");
  if (o.backward) std::printf(" %14s", "oboro bwd");
  std::printf(" %14s", "S^2 scores");
  if (o.compare_torch) std::printf(" %14s %14s %14s", "torch naive", "torch fast", "torch sdpa");
  std::printf("\n");
  auto mib = [](const nlohmann::json& x) { return x.is_null() ? -1.0 : x.get<double>() / 1048576.0; };
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    std::printf("  %7d %11.2f MiB %10.1f KiB %12.3f %10.1f", r["tokens"].get<int>(), mib(r["forward_extra_bytes"]),
                mib(r["forward_extra_bytes"]) * 1024.0 / r["tokens"].get<int>(), r["forward_seconds"].get<double>(),
                r["forward_gflops"].get<double>());
    if (o.backward) std::printf(" %10.2f MiB", mib(r["backward_extra_bytes"]));
    std::printf(" %10.2f MiB", mib(r["scores_matrix_bytes"]));
    if (o.compare_torch) {
      const auto& t = j["torch"]["rows"][i];
      for (const char* k : {"naive", "fast", "sdpa"})
        std::printf(" %10.2f MiB", t.contains(k) ? mib(t[k]["extra_bytes"]) : -1.0);
    }
    std::printf("\n");
  }
  std::printf("  (extra = peak RSS increase during one call with q, k, v, o resident; load %s -> %s)\n", load0.c_str(),
              j["load_average_end"].get<std::string>().c_str());
}

}  // namespace

void register_bench_step(CLI::App& app) {
  auto* bench = app.get_subcommand("bench");
  {
    auto so = std::make_shared<StepOpts>();
    so->b.repeats = 2;
    auto* d = bench->add_subcommand("step", "One CFG step (batch 2) of the DiT with random weights of the preset's "
                                            "true size: time, achieved GFLOP/s, peak RSS, the PyTorch twin's time");
    d->add_option("--config", so->b.preset, "model preset: oboro-1b, small, tiny")->capture_default_str();
    d->add_option("--size", so->size, "image HEIGHTxWIDTH in pixels")->capture_default_str();
    d->add_option("--schedule", so->b.schedule, "head schedule: mmh or uniform")->capture_default_str();
    d->add_option("--text-dim", so->b.text_dim, "text encoder width (4096 for T5-XXL)")->capture_default_str()
      ->check(int_in(1, 65536));
    d->add_option("--text-len", so->b.text_len, "text tokens")->capture_default_str()
      ->check(int_in(1, 4096));
    d->add_option("--batch", so->b.batch, "batch (2 = cond + uncond of one CFG step)")->capture_default_str()
      ->check(int_in(1, 4096));
    d->add_option("--repeats", so->b.repeats, "timed steps (best reported)")->capture_default_str()
      ->check(int_in(1, 100000));
    d->add_option("--warmup", so->b.warmup, "untimed steps first")->capture_default_str()
      ->check(int_in(0, 100000));
    d->add_option("--threads", so->b.threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
    d->add_option("--sgemm-size", so->sgemm_n, "n of the n^3 SGEMM peak measurement (0 = skip)")->capture_default_str()
      ->check(int_in(0, 65536, " (0 = skip)"));
    d->add_flag("--compare-torch", so->compare_torch, "also time the PyTorch twin (best of F32 and BF16 autocast)");
    d->add_option("--twin-dtypes", so->b.twin_dtypes, "the twin's precisions")->capture_default_str();
    d->add_option("--twin-script", so->b.twin_script, "path of bench/twin_dit_bench.py")->capture_default_str();
    d->add_option("--python", so->b.python, "python with torch")->capture_default_str();
    d->add_flag("--profile", so->profile, "per-op table (op, calls, ms, % of step, GFLOP/s) of the fastest step");
    d->add_option("--type", so->b.type, "DiT weight format: f32, bf16, f16, f8, q8_0 (docs/formats.md)")->capture_default_str();
    d->add_flag("--json", so->b.json, "print one JSON object on stdout (progress on stderr)");
    d->callback([so] { run_bench_step(*so); });
  }
  {
    auto o = std::make_shared<T5BenchOpts>();
    auto* d = bench->add_subcommand("t5", "T5 v1.1 encoder forward with random weights (F32 or --type), optionally vs the "
                                          "PyTorch twin");
    d->add_option("--config", o->config, "xxl, xl, large, base, small (T5 v1.1 shapes) or tiny")->capture_default_str();
    d->add_option("--tokens", o->tokens, "prompt tokens (all valid)")->capture_default_str()
      ->check(int_in(1, 4096));
    d->add_option("--type", o->type, "Linear weight format: f32, bf16, f16, f8, q8_0 (docs/formats.md)");
    d->add_option("--layers", o->layers, "time only N layers and extrapolate the full model (0 = all)")
        ->capture_default_str()
      ->check(int_in(0, 1024, " (0 = all)"));
    d->add_option("--batch", o->batch, "prompts")->capture_default_str()->check(int_in(1, 4096));
    d->add_option("--repeats", o->repeats, "timed runs (best reported)")->capture_default_str()
      ->check(int_in(1, 100000));
    d->add_option("--warmup", o->warmup, "untimed runs first")->capture_default_str()
      ->check(int_in(0, 100000));
    d->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
    d->add_flag("--compare-torch", o->compare_torch, "also time the PyTorch twin (best of F32 and BF16 autocast)");
    d->add_option("--twin-dtypes", o->twin_dtypes, "the twin's precisions")->capture_default_str();
    d->add_option("--twin-script", o->twin_script, "path of bench/twin_t5_bench.py")->capture_default_str();
    d->add_option("--python", o->python, "python with torch")->capture_default_str();
    d->add_flag("--profile", o->profile, "per-op table of the fastest run");
    d->add_flag("--json", o->json, "print one JSON object on stdout");
    d->callback([o] { run_bench_t5(*o); });
  }
  {
    auto o = std::make_shared<AttnOpts>();
    auto* d = bench->add_subcommand("attention", "Attention working memory (peak RSS increase) and time vs tokens, "
                                                 "optionally vs the PyTorch twin's S x S attention");
    d->add_option("--tokens", o->tokens, "comma-separated sequence lengths")->capture_default_str();
    d->add_option("--heads", o->heads, "heads")->capture_default_str()->check(int_in(1, 1024));
    d->add_option("--head-dim", o->head_dim, "head width")->capture_default_str()
      ->check(int_in(1, 4096));
    d->add_option("--batch", o->batch, "batch")->capture_default_str()->check(int_in(1, 4096));
    d->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str()
      ->check(int_in(0, 4096, " (0 = all cores)"));
    d->add_option("--precision", o->precision,
                  "forward arithmetic: f32, or bf16 (BF16 Q·Kᵀ and P·V with F32 softmax, the low-precision DiT's "
                  "inference attention)")
        ->capture_default_str();
    d->add_option("--repeats", o->repeats, "timed forward calls per length (best time reported; memory from the first)")
        ->capture_default_str()
      ->check(int_in(1, 100000));
    d->add_flag("--backward", o->backward, "also measure attention_backward");
    d->add_flag("--compare-torch", o->compare_torch, "also measure the twin (naive, baddbmm+softmax, SDPA)");
    d->add_option("--twin-script", o->twin_script, "path of bench/twin_attention_mem.py")->capture_default_str();
    d->add_option("--python", o->python, "python with torch")->capture_default_str();
    d->add_flag("--json", o->json, "print one JSON object on stdout");
    d->callback([o] { run_bench_attention(*o); });
  }
}

}  // namespace oboro::cli
