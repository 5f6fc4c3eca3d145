// DiT: parameter counts of §5, config validation, save/load, load errors naming file and
// tensor, determinism, inference == training forward, and an end-to-end finite-difference
// check of the backward (beside the PyTorch twin test, which checks every gradient).
#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include "ops/backend.h"
#include <gtest/gtest.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_test_dit_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / name).string();
}

DiTConfig small_cfg() {
  DiTConfig c;
  c.hidden_size = 64;
  c.heads = {2, 4, 8, 16};
  c.ffn_hidden_size = 96;
  c.text_dim = 24;
  c.latent_channels = 4;
  c.patch_size = 2;
  return c;
}

struct Batch {
  int B = 2, L = 5, h = 4, w = 6;
  std::vector<float> x, t, txt, mask, v;
  explicit Batch(const DiTConfig& c, uint64_t seed = 3) {
    x.resize((size_t)B * c.latent_channels * h * w);
    txt.resize((size_t)B * L * c.text_dim);
    fill_normal(x.data(), (int64_t)x.size(), seed, 0);
    fill_normal(txt.data(), (int64_t)txt.size(), seed, 1);
    t = {0.25f, 0.8f};
    mask.assign((size_t)B * L, 1.f);
    mask[(size_t)1 * L + 4] = 0.f;  // sample 1 has one padded text token
    mask[(size_t)1 * L + 3] = 0.f;
    v.resize(x.size());
  }
  void run(DiT& m, bool training) {
    m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, training);
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DiTConfig, ParameterCountsOfSpecPresets) {
  // §5: oboro-1b has exactly 1,122,513,472 parameters with T5-XXL (d_text 4096).
  EXPECT_EQ(DiTConfig::preset("oboro-1b").param_count(), 1122513472LL);
  DiTConfig c = DiTConfig::preset("oboro-1b");
  EXPECT_EQ(c.ffn_hidden_size, 4096);
  EXPECT_EQ(c.cond(), 1024);
  int64_t block = 0;
  const ParamLayout layout = dit_param_layout(c);
  for (const auto& v : layout.views())
    if (v.name.rfind("layers.0.", 0) == 0) block += (int64_t)v.numel();
  EXPECT_EQ(block, 34621440LL);  // per-block figure of §5
  // ≈22.7M and ≈4.1M, as rounded in the spec table.
  EXPECT_NEAR(DiTConfig::preset("small").param_count() / 1e6, 22.7, 0.05);
  EXPECT_NEAR(DiTConfig::preset("tiny").param_count() / 1e6, 4.1, 0.05);
  EXPECT_EQ(DiTConfig::preset("small").ffn_hidden_size, 1024);
  EXPECT_EQ(DiTConfig::preset("tiny").ffn_hidden_size, 512);
  EXPECT_EQ(DiTConfig::mmh_heads(8), (std::vector<int>{8, 8, 16, 16, 24, 24, 48, 48}));
}

TEST(DiTConfig, ValidationNamesTheProblem) {
  DiTConfig c = small_cfg();
  c.hidden_size = 96;  // 4·max(heads) = 64 does not divide 96
  std::string e = error_of([&] { c.validate("m.safetensors"); });
  EXPECT_NE(e.find("m.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("not divisible by 4·max(heads) = 64"), std::string::npos) << e;
  nlohmann::json j = small_cfg().to_json();
  j.erase("ffn_hidden_size");
  e = error_of([&] { DiTConfig::from_json(j, "x.safetensors"); });
  EXPECT_NE(e.find("ffn_hidden_size"), std::string::npos) << e;
  j = small_cfg().to_json();
  j["heads"] = "eight";
  e = error_of([&] { DiTConfig::from_json(j, "x.safetensors"); });
  EXPECT_NE(e.find("heads"), std::string::npos) << e;
  EXPECT_NE(error_of([] { DiTConfig::preset("huge"); }).find("oboro-1b, small or tiny"), std::string::npos);
}

TEST(DiTConfig, UnknownFieldsAreKept) {
  nlohmann::json j = small_cfg().to_json();
  j["future_field"] = {1, 2};
  DiTConfig c = DiTConfig::from_json(j, "x");
  EXPECT_EQ(c.to_json()["future_field"], j["future_field"]);
}

TEST(DiT, SaveLoadRoundTripIsExact) {
  DiT m(small_cfg(), cpu_backend());
  m.init_random_all(11);
  std::string p = tmp_path("rt.safetensors");
  m.save(p, {{"modelspec.title", "t"}});
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->metadata().at("modelspec.architecture"), "oboro-dit-v1");
  EXPECT_EQ(nlohmann::json::parse(f->metadata().at("oboro.config"))["heads"], (std::vector<int>{2, 4, 8, 16}));
  auto m2 = DiT::load(p, cpu_backend());
  ASSERT_EQ(m2->num_params(), m.num_params());
  EXPECT_EQ(0, std::memcmp(m.params(), m2->params(), m.num_params() * 4));
}

TEST(DiT, LoadErrorsNameFileTensorAndFix) {
  DiT m(small_cfg(), cpu_backend());
  m.init_random_all(1);
  auto host = download_params(m.layout(), m.params(), cpu_backend());
  std::string cfg = small_cfg().to_json().dump();
  auto write = [&](const std::string& name, auto edit, std::string config) {
    SafetensorsWriter wr;
    std::vector<std::pair<std::string, Tensor>> ts = host;
    edit(ts);
    for (auto& [n, t] : ts) wr.add(n, t);
    if (!config.empty()) wr.set_metadata("oboro.config", config);
    std::string p = tmp_path(name);
    wr.write(p);
    return p;
  };
  auto noop = [](auto&) {};
  // Missing tensor.
  std::string p = write("missing.safetensors", [](auto& ts) { ts.erase(ts.begin() + 3); }, cfg);
  std::string e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find(host[3].first), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  // Wrong shape.
  p = write("shape.safetensors", [](auto& ts) { ts[0].second = Tensor::zeros({3, 3}); }, cfg);
  e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find(host[0].first), std::string::npos) << e;
  EXPECT_NE(e.find("(3, 3)"), std::string::npos) << e;
  // Unknown key.
  p = write("unknown.safetensors", [](auto& ts) { ts.emplace_back("layers.9.extra.weight", Tensor::zeros({2})); }, cfg);
  e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find("unknown tensor"), std::string::npos) << e;
  EXPECT_NE(e.find("layers.9.extra.weight"), std::string::npos) << e;
  // No config.
  p = write("noconfig.safetensors", noop, "");
  e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find("oboro.config"), std::string::npos) << e;
  // Config inconsistent with tensors: claims width 128.
  DiTConfig wide = small_cfg();
  wide.hidden_size = 128;
  p = write("inconsistent.safetensors", noop, wide.to_json().dump());
  e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find("does not match"), std::string::npos) << e;
  // Config rule violated: width not divisible by 4·max(heads).
  DiTConfig bad = small_cfg();
  bad.heads = {2, 4, 8, 32};
  p = write("badheads.safetensors", noop, bad.to_json().dump());
  e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find("4·max(heads) = 128"), std::string::npos) << e;
  // Not JSON.
  p = write("badjson.safetensors", noop, "{hidden_size: 64");
  e = error_of([&] { DiT::load(p, cpu_backend()); });
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
}

TEST(DiT, ForwardIsDeterministicAndInferenceMatchesTraining) {
  DiT m(small_cfg(), cpu_backend());
  m.init_random_all(5);
  Batch b1(small_cfg()), b2(small_cfg()), b3(small_cfg());
  b1.run(m, false);
  b2.run(m, false);
  b3.run(m, true);
  EXPECT_EQ(0, std::memcmp(b1.v.data(), b2.v.data(), b1.v.size() * 4));
  EXPECT_EQ(0, std::memcmp(b1.v.data(), b3.v.data(), b1.v.size() * 4));
  int saved = num_threads();
  set_num_threads(1);
  Batch b4(small_cfg());
  b4.run(m, false);
  set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(b1.v.data(), b4.v.data(), b1.v.size() * 4)) << "output depends on thread count";
}

TEST(DiT, PaddedTextDoesNotChangeImageOutput) {
  DiTConfig c = small_cfg();
  DiT m(c, cpu_backend());
  m.init_random_all(9);
  Batch b(c);
  b.run(m, false);
  // Sample 1 alone with only its 3 valid tokens.
  int L = 3;
  std::vector<float> txt((size_t)L * c.text_dim), mask(L, 1.f), v((size_t)c.latent_channels * b.h * b.w);
  std::copy_n(b.txt.begin() + (size_t)b.L * c.text_dim, txt.size(), txt.begin());
  const float* x1 = b.x.data() + v.size();
  m.forward(v.data(), x1, &b.t[1], txt.data(), mask.data(), 1, L, b.h, b.w, false);
  double num = 0, den = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    num += std::pow(v[i] - b.v[v.size() + i], 2);
    den += std::pow(v[i], 2);
  }
  EXPECT_LT(std::sqrt(num / den), 1e-5);
}

TEST(DiT, BackwardMatchesFiniteDifferences) {
  // Loss = Σ v ⊙ r. Perturb a few entries of several parameter tensors; central difference in fp32
  // over the whole network, compared with the analytic gradient.
  DiTConfig c = small_cfg();
  DiT m(c, cpu_backend());
  m.init_random_all(21);
  Batch b(c);
  std::vector<float> r(b.v.size());
  fill_normal(r.data(), (int64_t)r.size(), 99);
  b.run(m, true);
  m.zero_grads();
  m.backward(r.data());
  std::vector<float> g(m.grads(), m.grads() + m.num_params());
  auto loss = [&] {
    b.run(m, false);
    double s = 0;
    for (size_t i = 0; i < r.size(); ++i) s += (double)b.v[i] * r[i];
    return s;
  };
  const char* names[] = {"t_embedder.mlp.0.weight", "bos_embedder.mlp.2.bias", "cap_embedder.0.weight",
                         "x_embedder.weight", "layers.0.attention.qkv.weight", "layers.1.attention.k_norm.bias",
                         "layers.2.feed_forward.w3.weight", "layers.3.adaLN_modulation.1.weight",
                         "layers.3.ffn_norm2.weight", "final_layer.linear.bias"};
  int checked = 0;
  for (const char* n : names) {
    const ParamView& pv = m.layout().at(n);
    for (int k = 0; k < 3; ++k) {
      size_t idx = pv.offset + (size_t)(uniform_at(7, checked, 0) * pv.numel());
      float orig = m.params()[idx];
      const float eps = 1e-2f;
      m.params()[idx] = orig + eps;
      double lp = loss();
      m.params()[idx] = orig - eps;
      double lm = loss();
      m.params()[idx] = orig;
      double fd = (lp - lm) / (2 * eps);
      EXPECT_NEAR(g[idx], fd, 2e-2 * std::max(1.0, std::fabs(fd))) << n << "[" << idx - pv.offset << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 30);
}

TEST(DiT, BadShapesAreClearErrors) {
  DiT m(small_cfg(), cpu_backend());
  std::vector<float> buf(4096, 0.f), mask(8, 1.f);
  // latent 5x6 is not divisible by the patch size 2
  std::string e = error_of([&] { m.forward(buf.data(), buf.data(), buf.data(), buf.data(), mask.data(), 1, 2, 5, 6, false); });
  EXPECT_NE(e.find("not divisible by the patch size 2"), std::string::npos) << e;
  // Text batches are made valid where they are built (the DiT only sees backend buffers): every row needs its first
  // token (the pooled BOS vector).
  e = error_of([&] { alloc_text_batch(cpu_backend(), 2, 3, 4, {2, 0}); });
  EXPECT_NE(e.find("text row 1 has no valid token"), std::string::npos) << e;
}

// Issue 15: every DiT tensor is declared once (the tensor table in dit.cpp). The layout — names, shapes, order and
// offsets of the flat buffer that checkpoints and the optimiser's moments keep — is pinned to the one the
// hand-written dit_param_layout produced before the table (sha256 of "name:shape@offset[Q]" lines, Q = quantisable).
TEST(DiTConfig, LayoutAndQuantisableSetArePinned) {
  auto dump = [](const ParamLayout& L) {
    std::string s;
    for (const auto& v : L.views())
      s += v.name + ":" + shape_str(v.shape) + "@" + std::to_string(v.offset) + (dit_quantizable(v.name) ? "Q" : "") + "\n";
    return sha256_hex(s).substr(0, 16);
  };
  EXPECT_EQ(dump(dit_param_layout(DiTConfig::preset("tiny", 64))), "bdb526dc26916e96");
  EXPECT_EQ(dump(dit_param_layout(DiTConfig::preset("small", 64))), "67fed843e81d638e");
  EXPECT_EQ(dump(dit_param_layout(DiTConfig::preset("oboro-1b", 64))), "9bdd1993268602ac");
  // Quantisable: exactly the six big Linear weights of each block.
  const DiTConfig c = small_cfg();
  int q = 0;
  const ParamLayout layout = dit_param_layout(c);  // keep alive: views() returns a reference
  for (const auto& v : layout.views()) q += dit_quantizable(v.name);
  EXPECT_EQ(q, 6 * c.layers());
  EXPECT_TRUE(dit_quantizable("layers.3.feed_forward.w2.weight"));
  EXPECT_TRUE(dit_quantizable("layers.0.adaLN_modulation.1.weight"));
  for (const char* n : {"layers.3.attention_norm1.weight", "layers.0.adaLN_modulation.1.bias", "final_layer.linear.weight",
                        "x_embedder.weight", "layers.x.attention.qkv.weight", "layers.1.attention.qkv.weight.x",
                        "attention.qkv.weight", "layers..attention.qkv.weight"})
    EXPECT_FALSE(dit_quantizable(n)) << n;
}

// init_weights follows the spec rules, written here independently of the table: adaLN modulation and the final layer
// zero, biases zero, norm scales one, the t_embedder N(0, 0.02²), other matrices N(0, 2/(fan_in + fan_out)).
TEST(DiT, InitWeightsFollowsTheSpecRules) {
  DiTConfig c = small_cfg();
  c.hidden_size = 128;
  c.ffn_hidden_size = 256;
  c.text_dim = 96;
  DiT m(c, cpu_backend());
  m.init_weights(5);
  for (const auto& v : m.layout().views()) {
    const float* p = m.params() + v.offset;
    const std::string& n = v.name;
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < v.numel(); ++i) s1 += p[i], s2 += (double)p[i] * p[i];
    const bool bias = n.ends_with(".bias");
    if (bias || n.find("adaLN_modulation") != std::string::npos || n.rfind("final_layer.linear", 0) == 0) {
      EXPECT_EQ(s2, 0.0) << n;
    } else if (v.shape.size() == 1) {
      EXPECT_EQ(s1, (double)v.numel()) << n;
      EXPECT_EQ(s2, (double)v.numel()) << n;
    } else {
      const double want = n.rfind("t_embedder", 0) == 0 ? 0.02 : std::sqrt(2.0 / (v.shape[0] + v.shape[1]));
      EXPECT_NEAR(std::sqrt(s2 / v.numel()), want, want * 0.1) << n;
    }
  }
}

// The activation plan the memory plan uses (DiT::activation_bytes(cfg, ...), a dry run) is exactly what forward()
// allocates, for inference and training, for F32 and low-precision weights.
TEST(DiT, PlannedActivationBytesEqualTheAllocation) {
  Backend& be = cpu_backend();
  const DiTConfig c = small_cfg();
  DiT m(c, be);
  m.init_random_all(2);
  auto bf16 = m.converted(WFormat::BF16);
  for (auto [B, L, h, w] : {std::array<int, 4>{2, 5, 4, 6}, std::array<int, 4>{1, 3, 8, 2}, std::array<int, 4>{3, 1, 2, 2}}) {
    std::vector<float> x((size_t)B * c.latent_channels * h * w), t(B, 0.5f), txt((size_t)B * L * c.text_dim),
        mask((size_t)B * L, 1.f), v(x.size());
    fill_normal(x.data(), (int64_t)x.size(), 1, 0);
    fill_normal(txt.data(), (int64_t)txt.size(), 1, 1);
    for (bool training : {false, true}) {
      m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, training);
      EXPECT_EQ(DiT::activation_bytes(c, B, L, h, w, training), m.activation_bytes())
          << B << " " << L << " " << h << "x" << w << " training " << training;
    }
    bf16->forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
    EXPECT_EQ(DiT::activation_bytes(c, B, L, h, w, false), bf16->activation_bytes());
  }
  EXPECT_GT(DiT::activation_bytes(c, 1, 4, 8, 8, true), DiT::activation_bytes(c, 1, 4, 8, 8, false));
  std::string e = error_of([&] { DiT::activation_bytes(c, 1, 2, 5, 6, false); });
  EXPECT_NE(e.find("not divisible by the patch size 2"), std::string::npos) << e;
}
