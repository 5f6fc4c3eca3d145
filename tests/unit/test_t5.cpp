// T5 v1.1 encoder (spec §7): bucket function, config inference, loading rules and errors, hand-written
// backward vs finite differences, padding invariance, thread-count determinism, debug CLI errors.
#include "test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "models/t5.h"
#include "ops/backend.h"
#include "op_test_util.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

using oboro::test::error_of;

fs::path tmpdir() { return oboro::test::process_tmpdir("oboro_t5"); }

T5Config tiny_cfg() {
  T5Config c;
  c.vocab_size = 23;
  c.d_model = 16;
  c.d_kv = 6;
  c.num_heads = 2;  // H·d_kv = 12 ≠ d_model
  c.d_ff = 24;
  c.num_layers = 2;
  return c;
}

// Random everything (norms 1 + 0.1 N, bias table N(0, 1)) so no gradient is trivially zero.
void randomize(T5Encoder& m, uint64_t seed) {
  m.init_weights(seed);
  uint64_t s = 100;
  for (const auto& v : m.layout().views()) {
    float* p = m.params() + v.offset;
    if (v.shape.size() == 1) {
      fill_normal(p, (int64_t)v.numel(), seed, s++, 0, 1.f, 0.1f);
    } else if (v.name.find("relative_attention_bias") != std::string::npos) {
      fill_normal(p, (int64_t)v.numel(), seed, s++, 0, 0.f, 1.f);
    }
  }
}

// Write the model's tensors without oboro metadata (HF-style file), optionally renaming / dropping / adding.
void save_bare(T5Encoder& m, const std::string& path, const std::map<std::string, std::string>& rename = {},
               const std::set<std::string>& drop = {}, const std::vector<std::pair<std::string, Tensor>>& extra = {}) {
  auto host = download_params(m.layout(), m.params(), cpu_backend());
  SafetensorsWriter wr;
  for (auto& [n, t] : host) {
    if (drop.count(n)) continue;
    auto it = rename.find(n);
    wr.add(it == rename.end() ? n : it->second, t);
  }
  for (auto& [n, t] : extra) wr.add(n, t);
  wr.write(path);
}

struct Batch {
  int B, L;
  std::vector<int32_t> ids;
  std::vector<float> mask;
};

Batch make_batch(const T5Config& c, int B, int L, const std::vector<int>& pads, uint64_t seed) {
  Batch b{B, L, std::vector<int32_t>((size_t)B * L), std::vector<float>((size_t)B * L, 1.f)};
  for (int i = 0; i < B * L; ++i) b.ids[i] = 3 + (int32_t)(uniform_at(seed, 1, i) * (c.vocab_size - 3)) % (c.vocab_size - 3);
  for (int s = 0; s < B; ++s)
    for (int l = L - pads[s]; l < L; ++l) {
      b.mask[(size_t)s * L + l] = 0.f;
      b.ids[(size_t)s * L + l] = (int32_t)(uniform_at(seed, 2, l) * c.vocab_size) % c.vocab_size;  // garbage
    }
  return b;
}

std::vector<float> run_fwd(T5Encoder& m, const Batch& b, bool training = false) {
  std::vector<float> h((size_t)b.B * b.L * m.config().d_model);
  m.forward(h.data(), b.ids.data(), b.mask.data(), b.B, b.L, training);
  return h;
}

// ---------------------------------------------------------------------------------------------
// Bucket function

// Hand-derived table for 32 buckets / max distance 128: |n| < 8 exact; then ⌊ln(a/8)/ln16·8⌋ steps at
// a = 12, 16, 23, 32, 46, 64, 91 (8 + k for k = 0..7), clamped to 15 from 91 on; +16 when n > 0.
int hand_bucket(int n) {
  int b = n > 0 ? 16 : 0, a = std::abs(n);
  if (a < 8) return b + a;
  const int edges[] = {12, 16, 23, 32, 46, 64, 91};
  int k = 8;
  for (int e : edges)
    if (a >= e) ++k;
  return b + k;
}

TEST(T5Bucket, MatchesHandComputedTable) {
  for (int n = -200; n <= 200; ++n) ASSERT_EQ(t5_relative_bucket(n, 32, 128), hand_bucket(n)) << "n = " << n;
  struct Spot { int n, b; };
  for (Spot s : {Spot{0, 0}, Spot{1, 17}, Spot{-1, 1}, Spot{7, 23}, Spot{-7, 7}, Spot{8, 24}, Spot{-8, 8},
                 Spot{11, 24}, Spot{12, 25}, Spot{-22, 10}, Spot{23, 27}, Spot{-45, 12}, Spot{46, 29},
                 Spot{-90, 14}, Spot{91, 31}, Spot{127, 31}, Spot{-127, 15}, Spot{128, 31}, Spot{-128, 15},
                 Spot{500, 31}, Spot{-500, 15}, Spot{100000, 31}, Spot{-100000, 15}})
    EXPECT_EQ(t5_relative_bucket(s.n, 32, 128), s.b) << "n = " << s.n;
}

TEST(T5Bucket, OtherBucketCountsAndDistances) {
  // max distance 40: large = 8 + ⌊ln(a/8)/ln5·8⌋ → a = 12: 10, 32: 14, 33: 15 (clamp).
  EXPECT_EQ(t5_relative_bucket(12, 32, 40), 26);
  EXPECT_EQ(t5_relative_bucket(-32, 32, 40), 14);
  EXPECT_EQ(t5_relative_bucket(33, 32, 40), 31);
  EXPECT_EQ(t5_relative_bucket(-1000, 32, 40), 15);
  // 64 buckets: half 32, exact 16, large = 16 + ⌊ln(a/16)/ln8·16⌋ → a = 32: 21, 127: 31, 128: 31.
  EXPECT_EQ(t5_relative_bucket(-15, 64, 128), 15);
  EXPECT_EQ(t5_relative_bucket(32, 64, 128), 53);
  EXPECT_EQ(t5_relative_bucket(-127, 64, 128), 31);
  EXPECT_EQ(t5_relative_bucket(128, 64, 128), 63);
}

// ---------------------------------------------------------------------------------------------
// Config

TEST(T5Config, InferredFromShapesAndConfigJson) {
  T5Config c = tiny_cfg();
  c.num_layers = 3;
  T5Encoder m(c, cpu_backend());
  m.init_weights(1);
  fs::path d = tmpdir() / "infer";
  fs::create_directories(d);
  std::string p = (d / "model.safetensors").string();
  save_bare(m, p);
  T5Config got = T5Config::infer(TensorSource::open(p));
  EXPECT_EQ(got.to_json(), c.to_json());
  EXPECT_EQ(got.inner(), 12);

  { std::ofstream f(d / "config.json"); f << R"({"relative_attention_max_distance": 64, "layer_norm_epsilon": 1e-5,
      "d_model": 16, "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32})"; }
  got = T5Config::infer(TensorSource::open(d.string()));  // the directory works too
  EXPECT_EQ(got.rel_max_distance, 64);
  EXPECT_FLOAT_EQ(got.eps, 1e-5f);

  { std::ofstream f(d / "config.json"); f << R"({"feed_forward_proj": "relu"})"; }
  std::string e = error_of([&] { T5Config::infer(TensorSource::open(p)); });
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("relu"), std::string::npos) << e;
  { std::ofstream f(d / "config.json"); f << "{not json"; }
  e = error_of([&] { T5Config::infer(TensorSource::open(p)); });
  EXPECT_NE(e.find("config.json: not valid JSON"), std::string::npos) << e;
  fs::remove(d / "config.json");
}

TEST(T5Config, JsonRoundTripAndValidation) {
  T5Config c = tiny_cfg();
  c.rel_max_distance = 77;
  c.eps = 1e-5f;
  T5Config back = T5Config::from_json(c.to_json(), "x");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(T5Config::from_json(c.to_json(), "x").param_count(), (int64_t)(23 * 16 + 2 * (4 * 12 * 16 + 2 * 16 + 3 * 24 * 16) + 32 * 2 + 16));
  nlohmann::json j = c.to_json();
  j.erase("d_kv");
  EXPECT_NE(error_of([&] { T5Config::from_json(j, "f.safetensors"); }).find("f.safetensors: T5 config is missing the required field 'd_kv'"),
            std::string::npos);
  j = c.to_json();
  j["relative_attention_num_buckets"] = 7;
  EXPECT_NE(error_of([&] { T5Config::from_json(j, "f"); }).find("even"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Loading

TEST(T5Load, SaveLoadRoundTripIsExact) {
  T5Encoder m(tiny_cfg(), cpu_backend());
  randomize(m, 3);
  std::string p = (tmpdir() / "rt.safetensors").string();
  m.save(p);
  TensorSource src = TensorSource::open(p);
  EXPECT_EQ(src.metadata().at("modelspec.architecture"), "t5-v1.1-encoder");
  EXPECT_EQ(nlohmann::json::parse(src.metadata().at("oboro.t5_config")), tiny_cfg().to_json());
  EXPECT_TRUE(src.has("shared.weight"));
  auto back = T5Encoder::load(p, cpu_backend());
  ASSERT_EQ(back->num_params(), m.num_params());
  EXPECT_EQ(0, std::memcmp(back->params(), m.params(), m.num_params() * 4));
}

TEST(T5Load, HuggingFaceNamesAndIgnoredKeys) {
  T5Encoder m(tiny_cfg(), cpu_backend());
  randomize(m, 4);
  std::vector<std::pair<std::string, Tensor>> extra = {
      {"decoder.block.0.layer.0.SelfAttention.q.weight", Tensor::zeros({12, 16})},
      {"decoder.final_layer_norm.weight", Tensor::zeros({16})},
      {"lm_head.weight", Tensor::zeros({23, 16})}};
  std::string p = (tmpdir() / "hf.safetensors").string();
  save_bare(m, p, {{"shared.weight", "encoder.embed_tokens.weight"}}, {}, extra);
  auto back = T5Encoder::load(p, cpu_backend());
  EXPECT_EQ(back->config().to_json(), tiny_cfg().to_json());
  EXPECT_EQ(0, std::memcmp(back->params(), m.params(), m.num_params() * 4));
  // Saving writes shared.weight.
  std::string p2 = (tmpdir() / "hf_resaved.safetensors").string();
  back->save(p2);
  EXPECT_TRUE(TensorSource::open(p2).has("shared.weight"));
  EXPECT_FALSE(TensorSource::open(p2).has("encoder.embed_tokens.weight"));
}

TEST(T5Load, ErrorsNameFileAndTensor) {
  T5Encoder m(tiny_cfg(), cpu_backend());
  m.init_weights(5);
  const std::string wo1 = "encoder.block.1.layer.1.DenseReluDense.wo.weight";
  // Missing tensor (config from metadata, so the loader itself reports it).
  std::string full = (tmpdir() / "full.safetensors").string();
  m.save(full);
  {
    TensorSource src = TensorSource::open(full);
    SafetensorsWriter wr;
    std::vector<Tensor> keep;
    for (const auto& n : src.names())
      if (n != wo1) { keep.push_back(src.tensor_f32(n)); wr.add(n, keep.back()); }
    for (const auto& [k, v] : src.metadata()) wr.set_metadata(k, v);
    std::string p = (tmpdir() / "missing.safetensors").string();
    wr.write(p);
    std::string e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
    EXPECT_NE(e.find(p), std::string::npos) << e;
    EXPECT_NE(e.find(wo1 + " is missing"), std::string::npos) << e;
  }
  // Missing tensor needed for inference (no metadata).
  std::string p = (tmpdir() / "missing_bare.safetensors").string();
  save_bare(m, p, {}, {"encoder.block.0.layer.1.DenseReluDense.wi_0.weight"});
  std::string e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
  EXPECT_NE(e.find(p + ": tensor encoder.block.0.layer.1.DenseReluDense.wi_0.weight is missing"), std::string::npos)
      << e;
  // No embedding at all.
  save_bare(m, p, {}, {"shared.weight"});
  e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
  EXPECT_NE(e.find("shared.weight (or encoder.embed_tokens.weight) is missing"), std::string::npos) << e;
  // Unknown key (not decoder.* / lm_head.*).
  save_bare(m, p, {}, {}, {{"encoder.block.0.layer.0.SelfAttention.extra.weight", Tensor::zeros({2, 2})}});
  e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("unknown tensor(s)"), std::string::npos) << e;
  EXPECT_NE(e.find("encoder.block.0.layer.0.SelfAttention.extra.weight"), std::string::npos) << e;
  // umT5-style per-layer bias tables are unknown keys too.
  save_bare(m, p, {}, {}, {{"encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", Tensor::zeros({32, 2})}});
  e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
  EXPECT_NE(e.find("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"), std::string::npos) << e;
  // Wrong shape.
  save_bare(m, p, {}, {wo1}, {{wo1, Tensor::zeros({16, 25})}});
  e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
  EXPECT_NE(e.find(wo1 + " has shape (16, 25)"), std::string::npos) << e;
  // T5 v1.0 (ReLU `wi`).
  save_bare(m, p, {{"encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "encoder.block.0.layer.1.DenseReluDense.wi.weight"}});
  e = error_of([&] { T5Encoder::load(p, cpu_backend()); });
  EXPECT_NE(e.find("T5 v1.0"), std::string::npos) << e;
}

// ---------------------------------------------------------------------------------------------
// Forward / backward

TEST(T5Encoder, IdsOutOfRangeAreErrors) {
  T5Encoder m(tiny_cfg(), cpu_backend());
  Batch b = make_batch(tiny_cfg(), 2, 5, {0, 1}, 1);
  b.ids[7] = 23;
  std::string e = error_of([&] { run_fwd(m, b); });
  EXPECT_NE(e.find("token id 23 at (1, 2)"), std::string::npos) << e;
  EXPECT_NE(e.find("vocabulary of size 23"), std::string::npos) << e;
  b.ids[7] = -1;
  EXPECT_NE(error_of([&] { run_fwd(m, b); }).find("token id -1"), std::string::npos);
  EXPECT_NE(error_of([&] { m.backward(nullptr); }).find("forward(training = true)"), std::string::npos);
}

TEST(T5Encoder, InitWeightsFollowsHuggingFaceScheme) {
  T5Config c = tiny_cfg();
  c.vocab_size = 400;
  c.d_model = 64;
  c.d_kv = 32;
  c.d_ff = 256;
  T5Encoder a(c, cpu_backend()), b(c, cpu_backend());
  a.init_weights(7);
  b.init_weights(7);
  EXPECT_EQ(0, std::memcmp(a.params(), b.params(), a.num_params() * 4));
  auto stdev = [&](const std::string& n) {
    const ParamView& v = a.layout().at(n);
    double s = 0;
    for (size_t i = 0; i < v.numel(); ++i) s += (double)a.params()[v.offset + i] * a.params()[v.offset + i];
    return std::sqrt(s / v.numel());
  };
  EXPECT_NEAR(stdev("shared.weight"), 1.0, 0.03);
  EXPECT_NEAR(stdev("encoder.block.0.layer.0.SelfAttention.q.weight"), 1.0 / std::sqrt(64.0 * 32), 0.01 / std::sqrt(64.0 * 32) * 5);
  EXPECT_NEAR(stdev("encoder.block.1.layer.0.SelfAttention.k.weight"), 1.0 / 8, 0.005);
  EXPECT_NEAR(stdev("encoder.block.1.layer.1.DenseReluDense.wo.weight"), 1.0 / 16, 0.003);
  EXPECT_DOUBLE_EQ(stdev("encoder.final_layer_norm.weight"), 1.0);
}

// L = Σ hidden ⊙ r over valid rows; central differences on entries of every parameter tensor.
TEST(T5Encoder, BackwardMatchesFiniteDifferences) {
  T5Config c = tiny_cfg();
  T5Encoder m(c, cpu_backend());
  randomize(m, 11);
  Batch b = make_batch(c, 2, 11, {0, 3}, 12);
  const size_t n = (size_t)b.B * b.L * c.d_model;
  std::vector<float> r(n);
  fill_normal(r.data(), (int64_t)n, 99);
  for (size_t row = 0; row < (size_t)b.B * b.L; ++row)
    if (b.mask[row] == 0.f) std::fill_n(r.begin() + row * c.d_model, c.d_model, 0.f);
  run_fwd(m, b, true);
  m.zero_grads();
  m.backward(r.data());
  std::vector<float> g(m.grads(), m.grads() + m.num_params());
  auto loss = [&] {
    std::vector<float> h = run_fwd(m, b);
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += (double)h[i] * r[i];
    return s;
  };
  int checked = 0;
  double worst = 0, worst_tensor = 0;
  for (const auto& v : m.layout().views()) {
    std::vector<float> fds, ans;
    for (int k = 0; k < 4; ++k) {
      size_t idx = v.offset + (size_t)(uniform_at(17, checked, 0) * v.numel());
      if (v.name == "shared.weight") idx = v.offset + (size_t)b.ids[k * 3] * c.d_model + k;  // a used row
      float orig = m.params()[idx];
      const float eps = 1e-2f;
      m.params()[idx] = orig + eps;
      double lp = loss();
      m.params()[idx] = orig - eps;
      double lm = loss();
      m.params()[idx] = orig;
      double fd = (lp - lm) / (2.0 * eps);
      double err = std::fabs(g[idx] - fd) / std::max(1.0, std::fabs(fd));
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-2) << v.name << "[" << idx - v.offset << "] analytic " << g[idx] << " fd " << fd;
      fds.push_back((float)fd);
      ans.push_back(g[idx]);
      ++checked;
    }
    // Per tensor, relative to the size of its gradient (so small gradients cannot hide behind max(1, ·)).
    double te = test::rel_err(ans, fds);
    worst_tensor = std::max(worst_tensor, te);
    EXPECT_LE(te, 2e-2) << v.name << ": |fd| " << std::sqrt(test::dot(fds, fds));
  }
  EXPECT_EQ(checked, 4 * (int)m.layout().views().size());
  std::printf("[ t5 ] backward vs finite differences: %d entries, worst |Δ|/max(1,|fd|) = %.2e, worst per-tensor "
              "relative error %.2e\n", checked, worst, worst_tensor);
  // The shared bias table receives gradient from every layer: zeroing layer 1's use would change it.
  const ParamView& rb = m.layout().at("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
  double gn = 0;
  for (size_t i = 0; i < rb.numel(); ++i) gn += std::fabs(g[rb.offset + i]);
  EXPECT_GT(gn, 0.0);
}

TEST(T5Encoder, PaddingNeverChangesValidRowsOrGradients) {
  T5Config c = tiny_cfg();
  T5Encoder m(c, cpu_backend());
  randomize(m, 21);
  Batch full = make_batch(c, 1, 9, {0}, 22);
  Batch padded{2, 14, std::vector<int32_t>(28), std::vector<float>(28, 0.f)};
  for (int l = 0; l < 14; ++l) {
    padded.ids[l] = l < 9 ? full.ids[l] : (int32_t)((l * 5) % c.vocab_size);  // garbage pads
    padded.mask[l] = l < 9 ? 1.f : 0.f;
    padded.ids[14 + l] = (int32_t)((l * 7 + 3) % c.vocab_size);
    padded.mask[14 + l] = 1.f;
  }
  std::vector<float> h1 = run_fwd(m, full), h2 = run_fwd(m, padded);
  h2.resize(h1.size());
  EXPECT_LE(test::rel_err(h2, h1), 1e-6);
  // Gradient of Σ hidden ⊙ r over sample 0's valid rows: identical parameter gradients.
  const int D = c.d_model;
  std::vector<float> r1((size_t)9 * D), r2((size_t)2 * 14 * D, 0.f);
  fill_normal(r1.data(), (int64_t)r1.size(), 23);
  std::copy(r1.begin(), r1.end(), r2.begin());
  run_fwd(m, full, true);
  m.zero_grads();
  m.backward(r1.data());
  std::vector<float> g1(m.grads(), m.grads() + m.num_params());
  run_fwd(m, padded, true);
  m.zero_grads();
  m.backward(r2.data());
  std::vector<float> g2(m.grads(), m.grads() + m.num_params());
  EXPECT_LE(test::rel_err(g2, g1), 1e-5);
}

TEST(T5Encoder, BitwiseIdenticalForAnyThreadCountAndMode) {
  T5Config c = tiny_cfg();
  c.num_layers = 3;
  T5Encoder m(c, cpu_backend());
  randomize(m, 31);
  Batch b = make_batch(c, 3, 40, {0, 7, 30}, 32);
  std::vector<float> r((size_t)b.B * b.L * c.d_model);
  fill_normal(r.data(), (int64_t)r.size(), 33);
  auto run = [&](int threads, bool training) {
    test::ThreadCount tc(threads);
    std::vector<float> h = run_fwd(m, b, training);
    std::vector<float> g;
    if (training) {
      m.zero_grads();
      m.backward(r.data());
      g.assign(m.grads(), m.grads() + m.num_params());
    }
    return std::make_pair(h, g);
  };
  auto a = run(1, true), b2 = run(2, true), c3 = run(3, true), inf = run(2, false);
  EXPECT_TRUE(test::bitwise_equal(a.first, b2.first));
  EXPECT_TRUE(test::bitwise_equal(a.first, c3.first));
  EXPECT_TRUE(test::bitwise_equal(a.first, inf.first)) << "inference differs from the training forward";
  EXPECT_TRUE(test::bitwise_equal(a.second, b2.second)) << "gradients depend on the thread count";
  EXPECT_TRUE(test::bitwise_equal(a.second, c3.second));
}

// ---------------------------------------------------------------------------------------------
// `oboro debug t5` errors

struct Result {
  int code;
  std::string err;
};
Result run_cli(const std::string& args) {
  std::string errf = (tmpdir() / "stderr").string();
  std::string cmd = std::string(OBORO_BINARY) + " " + args + " >/dev/null 2>" + errf;
  int st = std::system(cmd.c_str());
  std::ifstream f(errf);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), std::string(std::istreambuf_iterator<char>(f), {})};
}

TEST(T5Cli, DebugT5ErrorsNameFileAndTensor) {
  T5Encoder m(tiny_cfg(), cpu_backend());
  m.init_weights(41);
  std::string model = (tmpdir() / "cli_model.safetensors").string();
  m.save(model);
  auto write_inputs = [&](const std::string& name, const std::vector<std::pair<std::string, Tensor>>& ts) {
    std::string p = (tmpdir() / name).string();
    SafetensorsWriter wr;
    for (auto& [n, t] : ts) wr.add(n, t);
    wr.write(p);
    return p;
  };
  Tensor ids = Tensor::zeros({2, 3}, DType::I64), mask = Tensor::from_f32({1, 1, 1, 1, 1, 0}, {2, 3});
  for (int i = 0; i < 6; ++i) ids.data<int64_t>()[i] = 3 + i;
  std::string out = (tmpdir() / "cli_out.safetensors").string();
  auto dbg = [&](const char* sub, const std::string& in) {
    return run_cli(std::string("debug ") + sub + " --model " + model + " --inputs " + in + " --output " + out);
  };
  // OK.
  Result r = dbg("t5", write_inputs("ok.safetensors", {{"ids", ids}, {"mask", mask}}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(TensorSource::open(out).info("hidden").shape, (Shape{2, 3, 16}));
  // Missing ids.
  std::string in = write_inputs("noids.safetensors", {{"mask", mask}});
  r = dbg("t5", in);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(in + ": input tensor 'ids' is missing"), std::string::npos) << r.err;
  // Float ids.
  in = write_inputs("fids.safetensors", {{"ids", mask}, {"mask", mask}});
  r = dbg("t5", in);
  EXPECT_NE(r.err.find("'ids' has dtype F32, expected I32 or I64"), std::string::npos) << r.err;
  // Out-of-range id.
  Tensor bad = ids.clone();
  bad.data<int64_t>()[4] = 5000000000LL;
  in = write_inputs("badid.safetensors", {{"ids", bad}, {"mask", mask}});
  r = dbg("t5", in);
  EXPECT_NE(r.err.find("ids[1][1] = 5000000000 is out of range for the T5 vocabulary of size 23"), std::string::npos)
      << r.err;
  // Mask shape.
  in = write_inputs("badmask.safetensors", {{"ids", ids}, {"mask", Tensor::zeros({2, 4})}});
  r = dbg("t5", in);
  EXPECT_NE(r.err.find("mask has shape (2, 4), expected (2, 3)"), std::string::npos) << r.err;
  // t5-grad without target.
  in = write_inputs("notarget.safetensors", {{"ids", ids}, {"mask", mask}});
  r = dbg("t5-grad", in);
  EXPECT_NE(r.err.find("input tensor 'target' is missing"), std::string::npos) << r.err;
  // Not a T5 file.
  r = run_cli("debug t5 --model " + in + " --inputs " + in + " --output " + out);
  EXPECT_NE(r.err.find(in + ": tensor shared.weight (or encoder.embed_tokens.weight) is missing"), std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace

// Issue 15: every T5 tensor is declared once (the tensor table in t5.cpp). The layout (HF names, shapes, order and
// offsets of the flat buffer) is pinned to the one the hand-written t5_param_layout produced before the table.
TEST(T5Config, LayoutQuantisableSetAndInitRulesComeFromOneTable) {
  T5Config c;
  c.vocab_size = 50;
  c.d_model = 32;
  c.d_kv = 8;
  c.num_heads = 4;
  c.d_ff = 64;
  c.num_layers = 3;
  std::string s;
  int q = 0;
  const ParamLayout layout = t5_param_layout(c);  // keep alive: views() returns a reference
  for (const auto& v : layout.views()) {
    s += v.name + ":" + shape_str(v.shape) + "@" + std::to_string(v.offset) + (t5_quantizable(v.name) ? "Q" : "") + "\n";
    q += t5_quantizable(v.name);
  }
  EXPECT_EQ(sha256_hex(s).substr(0, 16), "1cf87bdc10ec6f7a");
  EXPECT_EQ(q, 7 * c.num_layers);
  const std::string rel = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
  EXPECT_FALSE(t5_quantizable(rel));
  EXPECT_FALSE(t5_quantizable("shared.weight"));
  EXPECT_FALSE(t5_quantizable("encoder.block.2.layer.1.layer_norm.weight"));
  EXPECT_TRUE(t5_quantizable("encoder.block.2.layer.1.DenseReluDense.wo.weight"));
  EXPECT_DOUBLE_EQ(t5_init_stddev(c, "shared.weight"), 1.0);
  EXPECT_DOUBLE_EQ(t5_init_stddev(c, "encoder.block.1.layer.0.SelfAttention.q.weight"), 1.0 / std::sqrt(32.0 * 8));
  EXPECT_DOUBLE_EQ(t5_init_stddev(c, "encoder.block.1.layer.0.SelfAttention.o.weight"), 1.0 / std::sqrt(32.0));
  EXPECT_DOUBLE_EQ(t5_init_stddev(c, "encoder.block.2.layer.1.DenseReluDense.wo.weight"), 1.0 / 8);
  EXPECT_DOUBLE_EQ(t5_init_stddev(c, rel), 1.0 / std::sqrt(32.0));
  EXPECT_EQ(t5_init_stddev(c, "encoder.final_layer_norm.weight"), 0.0);  // norms: 1
  // The bias table exists in block 0 only.
  EXPECT_NE(error_of([&] { t5_init_stddev(c, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"); })
                .find("no T5 tensor"),
            std::string::npos);
}

// The activation plan the memory plan uses (T5Encoder::activation_bytes(cfg, ...), a dry run) is exactly what
// forward() allocates, for inference and training; the backward's scratch comes on top.
TEST(T5Encoder, PlannedActivationBytesEqualTheAllocation) {
  const T5Config c = tiny_cfg();
  T5Encoder m(c, cpu_backend());
  randomize(m, 4);
  for (auto [B, L] : {std::pair{1, 1}, std::pair{2, 5}, std::pair{3, 9}}) {
    const Batch b = make_batch(c, B, L, std::vector<int>(B, 0), 6);
    for (bool training : {false, true}) {
      run_fwd(m, b, training);
      EXPECT_EQ(T5Encoder::activation_bytes(c, B, L, training), m.activation_bytes())
          << B << "x" << L << " training " << training;
    }
    std::vector<float> dh((size_t)B * L * c.d_model, 0.1f);
    m.zero_grads();
    m.backward(dh.data());
    EXPECT_GT(m.activation_bytes(), T5Encoder::activation_bytes(c, B, L, true));
  }
  EXPECT_NE(error_of([&] { T5Encoder::activation_bytes(c, 0, 3, false); }).find("empty batch"), std::string::npos);
}
