// ProfilingBackend (a timing decorator over any Backend) and the `oboro bench step|t5|attention` CLI contract.
// No timed assertions: only that outputs are unchanged, calls and FLOPs are counted, and the JSON is well formed.
#include "core/error.h"
#include "core/rng.h"
#include "models/dit.h"
#include "models/t5.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "ops/profiling_backend.h"
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

DiTConfig tiny_dit() {
  DiTConfig c;
  c.hidden_size = 64;
  c.heads = {2, 4, 8, 16};
  c.ffn_hidden_size = 96;
  c.text_dim = 24;
  c.latent_channels = 4;
  c.patch_size = 2;
  return c;
}

struct DitRun {
  std::vector<float> v, grads;
};

DitRun run_dit(Backend& be) {
  const DiTConfig c = tiny_dit();
  DiT m(c, be);
  m.init_random_all(21);
  const int B = 2, L = 5, h = 4, w = 6;
  std::vector<float> x((size_t)B * c.latent_channels * h * w), txt((size_t)B * L * c.text_dim), t = {0.25f, 0.8f},
      mask((size_t)B * L, 1.f), v(x.size()), r(x.size());
  fill_normal(x.data(), (int64_t)x.size(), 3, 0);
  fill_normal(txt.data(), (int64_t)txt.size(), 3, 1);
  fill_normal(r.data(), (int64_t)r.size(), 99);
  mask[(size_t)1 * L + 4] = 0.f;
  m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, true);
  m.zero_grads();
  m.backward(r.data());
  return {v, std::vector<float>(m.grads(), m.grads() + m.num_params())};
}

const ProfilingBackend::OpStat* find(const ProfilingBackend& p, const char* op) {
  for (const auto& s : p.stats())
    if (s.op == op) return &s;
  return nullptr;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(ProfilingBackend, DiTForwardBackwardBitwiseIdenticalAndCounted) {
  const DitRun plain = run_dit(cpu_backend());
  ProfilingBackend prof(cpu_backend());
  const DitRun wrapped = run_dit(prof);
  EXPECT_TRUE(bitwise_equal(plain.v, wrapped.v));
  EXPECT_TRUE(bitwise_equal(plain.grads, wrapped.grads));
  const int layers = tiny_dit().layers();
  const auto* af = find(prof, "attention_forward");
  const auto* ab = find(prof, "attention_backward");
  const auto* lf = find(prof, "linear_forward");
  const auto* lb = find(prof, "linear_backward");
  ASSERT_TRUE(af && ab && lf && lb);
  EXPECT_EQ(af->calls, layers);  // one attention per block
  EXPECT_EQ(ab->calls, layers);
  EXPECT_GE(lf->calls, 4 * layers);  // at least qkv, out, w1/w3, w2 per block
  EXPECT_GT(lf->flops, 0);
  EXPECT_GT(prof.total_calls(), lf->calls + af->calls);
  EXPECT_GE(prof.total_seconds(), 0.0);
  EXPECT_GT(prof.peak_bytes(), 0u);  // the model's buffers went through alloc()
  EXPECT_NE(prof.table().find("linear_forward"), std::string::npos);
  prof.reset();
  EXPECT_TRUE(prof.stats().empty());
}

TEST(ProfilingBackend, CountedForwardFlopsMatchTheAnalyticFormula) {
  // linear + attention FLOPs counted op by op over one inference forward = DiT::forward_flops.
  const DiTConfig c = tiny_dit();
  ProfilingBackend prof(cpu_backend());
  DiT m(c, prof);
  m.init_random_all(2);
  const int B = 2, L = 5, h = 4, w = 6;
  std::vector<float> x((size_t)B * c.latent_channels * h * w), txt((size_t)B * L * c.text_dim), t = {0.5f, 0.5f},
      mask((size_t)B * L, 1.f), v(x.size());
  prof.reset();
  m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
  const double counted = find(prof, "linear_forward")->flops + find(prof, "attention_forward")->flops;
  EXPECT_NEAR(counted / DiT::forward_flops(c, B, L, h, w), 1.0, 1e-9);
}

TEST(ProfilingBackend, T5AndVaeRunThroughTheDecorator) {
  T5Config c;
  c.vocab_size = 23, c.d_model = 16, c.d_kv = 6, c.num_heads = 2, c.d_ff = 24, c.num_layers = 2;
  const int B = 2, L = 7;
  std::vector<int32_t> ids(B * L);
  for (int i = 0; i < B * L; ++i) ids[i] = (i * 5 + 1) % c.vocab_size;
  std::vector<float> mask(B * L, 1.f), h1((size_t)B * L * c.d_model), h2(h1.size());
  mask[B * L - 1] = 0.f;
  {
    T5Encoder a(c, cpu_backend());
    a.init_weights(4);
    a.forward(h1.data(), ids.data(), mask.data(), B, L, false);
  }
  ProfilingBackend prof(cpu_backend());
  {
    T5Encoder b(c, prof);
    b.init_weights(4);
    b.forward(h2.data(), ids.data(), mask.data(), B, L, false);
  }
  EXPECT_TRUE(bitwise_equal(h1, h2));
  ASSERT_NE(find(prof, "attention_forward"), nullptr);
  EXPECT_EQ(find(prof, "attention_forward")->calls, c.num_layers);
  EXPECT_EQ(prof.live_bytes(), 0u);  // everything the encoder allocated was freed

  VaeConfig vc;
  vc.ch = 32, vc.ch_mult = {1, 2}, vc.enc_blocks = 1, vc.dec_blocks = 2, vc.z_channels = 4;
  const int lh = 4, lw = 6, s = vc.stride();
  std::vector<float> lat((size_t)vc.z_channels * lh * lw), i1((size_t)3 * lh * s * lw * s), i2(i1.size());
  fill_normal(lat.data(), (int64_t)lat.size(), 5);
  {
    Vae a(vc, cpu_backend());
    a.init_random(6);
    a.decode(i1.data(), lat.data(), 1, lh, lw);
  }
  prof.reset();
  {
    Vae b(vc, prof);
    b.init_random(6);
    b.decode(i2.data(), lat.data(), 1, lh, lw);
  }
  EXPECT_TRUE(bitwise_equal(i1, i2));
  ASSERT_NE(find(prof, "conv2d_forward"), nullptr);
  EXPECT_GT(find(prof, "conv2d_forward")->flops, 0);
}

// ---- CLI (the binary at tiny sizes, no torch) ----
namespace {
struct Result {
  int code;
  std::string out, err;
};
Result run(const std::string& args) {
  fs::path dir = fs::temp_directory_path() / ("oboro_bench_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  const std::string cmd = std::string(OBORO_BINARY) + " " + args + " >" + out + " 2>" + err;
  const int st = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(out), slurp(err)};
}
}  // namespace

TEST(BenchCli, StepJsonHasTheRequiredKeys) {
  auto r = run("bench step --config tiny --size 32x48 --text-dim 32 --text-len 4 --repeats 1 --warmup 0 "
               "--sgemm-size 64 --threads 1 --json --profile");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r.out;  // exactly one JSON value on stdout
  ASSERT_TRUE(j.is_object());
  for (const char* k : {"oboro_s", "torch_s", "gflops", "peak_rss_bytes", "flops", "ratio", "sgemm_peak_gflops"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_GT(j["oboro_s"].get<double>(), 0);
  EXPECT_TRUE(j["torch_s"].is_null());  // no --compare-torch
  EXPECT_TRUE(j["ratio"].is_null());
  EXPECT_GT(j["flops"].get<double>(), 0);
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), 0);
  EXPECT_NEAR(j["gflops"].get<double>(), j["flops"].get<double>() / j["oboro_s"].get<double>() / 1e9,
              1e-6 * j["gflops"].get<double>());
  ASSERT_TRUE(j["profile"].is_array());
  EXPECT_FALSE(j["profile"].empty());
  EXPECT_NE(r.err.find("linear_forward"), std::string::npos);  // the table goes to stderr with --json
}

TEST(BenchCli, T5AndAttentionJson) {
  auto r = run("bench t5 --config tiny --tokens 9 --repeats 1 --warmup 0 --threads 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["oboro_s"].get<double>(), 0);
  EXPECT_TRUE(j["torch_s"].is_null());
  EXPECT_FALSE(j["full_model_extrapolated"].get<bool>());
  r = run("bench t5 --config tiny --layers 1 --tokens 9 --repeats 1 --warmup 0 --threads 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out)["full_model_extrapolated"].get<bool>());
  r = run("bench t5 --config tiny --tokens 9 --repeats 1 --warmup 0 --threads 1 --type q8_0 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["weight_format"].get<std::string>(), "q8_0");
  EXPECT_GT(j["oboro_s"].get<double>(), 0);
  r = run("bench attention --tokens 16,64 --heads 2 --head-dim 8 --threads 1 --backward --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["oboro"].size(), 2u);
  EXPECT_EQ(j["oboro"][1]["tokens"].get<int>(), 64);
  EXPECT_TRUE(j["oboro"][1].contains("forward_extra_bytes"));
  EXPECT_TRUE(j["oboro"][1].contains("backward_extra_bytes"));
}

TEST(BenchCli, BadFlagsFailWithOneClearLine) {
  auto r = run("bench step --config tiny --size 32by48 --json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("HEIGHTxWIDTH"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
  r = run("bench step --config tiny --size 30x48 --json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("multiples of 16"), std::string::npos) << r.err;
  r = run("bench step --config tiny --size 32x48 --compare-torch --python /nonexistent/python3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("apt install python3 python3-torch"), std::string::npos) << r.err;
  r = run("bench attention --tokens 16,x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--tokens"), std::string::npos) << r.err;
  r = run("bench t5 --config huge");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("xxl"), std::string::npos) << r.err;
}

// The quality guard on a trained model (the bundled default model): each format's generated images against the
// F32 model's as PSNR, and the velocity error on the trained weights.
TEST(BenchCli, FormatsGuardOnTheDefaultModel) {
  const std::string model = std::string(OBORO_SOURCE_DIR) + "/models/default/oboro-default.safetensors";
  ASSERT_TRUE(fs::exists(model)) << model;
  auto r = run("bench formats --model " + model + " --types bf16,q8_0 --steps 4 --images 2 --threads 1 "
               "--no-gemm --prompts 'a red apple|flag of japan' --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r.out;
  EXPECT_EQ(j["images"]["count"].get<int>(), 4);  // 2 prompts x 2 images
  for (const char* f : {"bf16", "q8_0"}) {
    ASSERT_TRUE(j["psnr"].contains(f)) << f;
    const double p = j["psnr"][f]["psnr_db"].get<double>(), worst = j["psnr"][f]["worst_psnr_db"].get<double>();
    EXPECT_LE(worst, p + 1e-9) << f;
    EXPECT_GT(worst, 25.0) << f;  // a low-precision model draws the same picture, not just similar statistics
    const double e = j["trained_quality"][f]["rel_err"].get<double>();
    EXPECT_GT(e, 0.0) << f;  // the formats really round something
    EXPECT_LT(e, 0.02) << f;
  }
  EXPECT_LT(j["trained_quality"]["bf16"]["rel_err"].get<double>(), j["trained_quality"]["q8_0"]["rel_err"].get<double>());
  EXPECT_NE(r.err.find("PSNR"), std::string::npos);  // the table goes to stderr with --json
}
