// oboro merge (issue 19, src/merge): the done-when identities (weighted sum of a model with itself at any M is the
// model bitwise; add-difference A + 1·(B − B) is A bitwise), the formulas against direct evaluation, triple sum, block
// weights, baking a LoRA = generate's merge bitwise, extract-then-bake within the stated SVD error, the refusals
// (shapes, architecture, overwrite), dtype, and the metadata (recipe, models, provenance union read by the audit).
#include "test_util.h"
#include "data/audit.h"
#include "flow/lora_apply.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"
#include "lora/lora_merge.h"
#include "merge/merge.h"
#include "merge/svd.h"
#include "models/dit.h"
#include "models/params.h"
#include "ops/backend.h"
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

using namespace oboro;
using namespace oboro::merge;
namespace fs = std::filesystem;
using oboro::test::error_of;

namespace {

fs::path root() { return oboro::test::process_tmpdir("oboro_merge"); }

DiTConfig cfg(int layers = 2) {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = std::vector<int>(layers, 2);
  c.ffn_hidden_size = 64;
  c.text_dim = 16;
  c.latent_channels = 3;
  c.codec = "pixels";
  return c;
}

std::string write_model(const std::string& name, uint64_t seed, const DiTConfig& c = cfg(),
                        const std::string& dataset = "") {
  DiT d(c, cpu_backend());
  d.init_random_all(seed);
  const std::string p = (root() / name).string();
  std::map<std::string, std::string> md = {{"oboro.text_encoder", "te.safetensors"}};
  if (!dataset.empty()) md["oboro.dataset"] = dataset;
  d.save(p, md);
  return p;
}

std::string dataset_json(const std::string& digest, int images) {
  return nlohmann::json({{"digest", digest}, {"images", images}, {"licenses", {{"CC0-1.0", images}}},
                         {"sources", {{"npm:x", images}}}, {"attribution", nlohmann::json::array()}})
      .dump();
}

// name → F32 values of every tensor.
std::map<std::string, std::vector<float>> tensors_of(const std::string& path) {
  auto src = TensorSource::open(path);
  std::map<std::string, std::vector<float>> m;
  for (const std::string& n : src.names()) {
    Tensor t = src.tensor_f32(n);
    m[n].assign(t.f32(), t.f32() + t.numel());
  }
  return m;
}

bool bitwise_same(const std::string& a, const std::string& b) {
  auto ta = tensors_of(a), tb = tensors_of(b);
  if (ta.size() != tb.size()) return false;
  for (auto& [k, v] : ta) {
    auto it = tb.find(k);
    if (it == tb.end() || v.size() != it->second.size() ||
        std::memcmp(v.data(), it->second.data(), v.size() * sizeof(float)) != 0)
      return false;
  }
  return true;
}

MergeOptions opts(Mode m, std::vector<std::string> in, const std::string& out, double mult = 0.5) {
  MergeOptions o;
  o.mode = m;
  o.inputs = std::move(in);
  o.output = (root() / out).string();
  o.multiplier = mult;
  o.force = true;
  o.progress = false;
  return o;
}

struct Models {
  std::string a, b, c;
};
const Models& models() {
  static Models m{write_model("A.safetensors", 1, cfg(), dataset_json("sha256:aaa", 3)),
                  write_model("B.safetensors", 2, cfg(), dataset_json("sha256:bbb", 5)),
                  write_model("C.safetensors", 3)};
  return m;
}

}  // namespace

TEST(Merge, WeightedSumOfAModelWithItselfIsTheModelAtAnyM) {
  for (double m : {0.0, 0.1, 0.3, 1.0 / 3, 0.5, 0.7, 0.9, 1.0, -0.5, 2.0}) {
    auto o = opts(Mode::WeightedSum, {models().a, models().a}, "self.safetensors", m);
    run_merge(o);
    EXPECT_TRUE(bitwise_same(o.output, models().a)) << "M = " << m;
  }
  // The naive (1 − M)·a + M·a is not a for every M in float: the reason merge_math computes a + M·(b − a).
  bool naive_differs = false;
  for (float a : {0.1f, 0.7f, 1.3f, -2.9f, 3.14159f})
    for (float m : {0.1f, 0.3f, 0.7f}) naive_differs |= (1 - m) * a + m * a != a;
  EXPECT_TRUE(naive_differs);
}

TEST(Merge, AddDifferenceOfEqualModelsIsABitwise) {
  auto o = opts(Mode::AddDifference, {models().a, models().b, models().b}, "adddiff.safetensors", 1.0);
  run_merge(o);
  EXPECT_TRUE(bitwise_same(o.output, models().a));
}

TEST(Merge, FormulasMatchDirectEvaluation) {
  const auto A = tensors_of(models().a), B = tensors_of(models().b), C = tensors_of(models().c);
  auto ws = opts(Mode::WeightedSum, {models().a, models().b}, "ws.safetensors", 0.25);
  run_merge(ws);
  auto ad = opts(Mode::AddDifference, {models().a, models().b, models().c}, "ad.safetensors", 0.6);
  run_merge(ad);
  auto ts = opts(Mode::TripleSum, {models().a, models().b, models().c}, "ts.safetensors", 0.2);
  ts.multiplier2 = 0.3;
  run_merge(ts);
  const auto W = tensors_of(ws.output), D = tensors_of(ad.output), T = tensors_of(ts.output);
  ASSERT_EQ(W.size(), A.size());
  for (const auto& [k, a] : A) {
    const auto &b = B.at(k), &c = C.at(k);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(W.at(k)[i], 0.75 * a[i] + 0.25 * b[i], 1e-6 * (1 + std::fabs(a[i]) + std::fabs(b[i]))) << k;
      EXPECT_NEAR(D.at(k)[i], a[i] + 0.6 * (b[i] - c[i]), 1e-6 * (1 + std::fabs(a[i]) + std::fabs(b[i]))) << k;
      EXPECT_NEAR(T.at(k)[i], 0.5 * a[i] + 0.2 * b[i] + 0.3 * c[i], 1e-6 * (1 + std::fabs(a[i]) + std::fabs(b[i])));
    }
  }
  // M = 0 is A and M = 1 is B, bitwise.
  auto m0 = opts(Mode::WeightedSum, {models().a, models().b}, "m0.safetensors", 0.0);
  run_merge(m0);
  EXPECT_TRUE(bitwise_same(m0.output, models().a));
  auto m1 = opts(Mode::WeightedSum, {models().a, models().b}, "m1.safetensors", 1.0);
  run_merge(m1);
  EXPECT_TRUE(bitwise_same(m1.output, models().b));
}

TEST(Merge, BlockWeightsPickTheGroupMultiplier) {
  auto o = opts(Mode::WeightedSum, {models().a, models().b}, "bw.safetensors", 0.5);
  o.block_weights = "embedders=0, 01=1, final=0.25";
  run_merge(o);
  const auto A = tensors_of(models().a), B = tensors_of(models().b), R = tensors_of(o.output);
  EXPECT_EQ(R.at("x_embedder.weight"), A.at("x_embedder.weight"));          // embedders: M = 0
  EXPECT_EQ(R.at("layers.1.attention.qkv.weight"), B.at("layers.1.attention.qkv.weight"));  // block 01: M = 1
  EXPECT_EQ(R.at("layers.1.ffn_norm1.weight"), B.at("layers.1.ffn_norm1.weight"));
  const auto& a0 = A.at("layers.0.feed_forward.w1.weight");  // block 00: the base M
  EXPECT_NEAR(R.at("layers.0.feed_forward.w1.weight")[3], 0.5 * a0[3] + 0.5 * B.at("layers.0.feed_forward.w1.weight")[3], 1e-6);
  const auto& f = A.at("final_layer.linear.weight");
  EXPECT_NEAR(R.at("final_layer.linear.weight")[0], 0.75 * f[0] + 0.25 * B.at("final_layer.linear.weight")[0], 1e-6);
  for (const char* bad : {"embedders", "02=1", "1-0=1", "blocks=x", "head=1"})
    EXPECT_NE(error_of([&] { BlockWeights(bad, 2); }).find("--block-weights"), std::string::npos) << bad;
}

TEST(Merge, RefusesMismatchesAndOverwrites) {
  const std::string deep = write_model("deep.safetensors", 4, cfg(3));
  auto o = opts(Mode::WeightedSum, {models().a, deep}, "x.safetensors");
  std::string e = error_of([&] { run_merge(o); });
  EXPECT_NE(e.find(deep), std::string::npos) << e;
  EXPECT_NE(e.find("oboro.config"), std::string::npos) << e;  // same tensors for 2 blocks; config differs

  DiTConfig wide = cfg();
  wide.hidden_size = 48;
  const std::string w = write_model("wide.safetensors", 4, wide);
  o = opts(Mode::WeightedSum, {models().a, w}, "x.safetensors");
  e = error_of([&] { run_merge(o); });
  EXPECT_NE(e.find("t_embedder.mlp.0.weight"), std::string::npos) << e;  // the first tensor whose shape differs

  o = opts(Mode::WeightedSum, {models().a, models().b}, "x.safetensors");
  o.output = models().a;
  EXPECT_NE(error_of([&] { run_merge(o); }).find("is an input"), std::string::npos);
  o = opts(Mode::WeightedSum, {models().a, models().b}, "exists.safetensors");
  run_merge(o);
  o.force = false;
  EXPECT_NE(error_of([&] { run_merge(o); }).find("--force"), std::string::npos);
  o = opts(Mode::AddDifference, {models().a, models().b}, "x.safetensors");
  EXPECT_NE(error_of([&] { run_merge(o); }).find("takes 3 models"), std::string::npos);
  // No stray temp files in the output folder after the failures.
  for (const auto& f : fs::directory_iterator(root()))
    EXPECT_EQ(f.path().string().find(".tmp."), std::string::npos) << f.path();
}

TEST(Merge, MetadataRecipeModelsAndProvenanceUnion) {
  auto o = opts(Mode::WeightedSum, {models().a, models().b}, "prov.safetensors", 0.3);
  o.dtype = "bf16";
  run_merge(o);
  auto src = TensorSource::open(o.output);
  EXPECT_EQ(src.info("layers.0.attention.qkv.weight").dtype, DType::BF16);
  const auto& md = src.metadata();
  EXPECT_EQ(md.at(kWeightFormatKey), "bf16");
  EXPECT_EQ(md.at("oboro.text_encoder"), "te.safetensors");
  const auto recipe = nlohmann::json::parse(md.at("sd_merge_recipe"));
  EXPECT_EQ(recipe["mode"], "weighted-sum");
  EXPECT_EQ(recipe["interp_method"], "Weighted sum");
  EXPECT_EQ(recipe["multiplier"], 0.3);
  EXPECT_EQ(nlohmann::json::parse(md.at("sd_merge_models")).size(), 2u);
  EXPECT_EQ(md.count("oboro.dataset"), 0u);  // two datasets: no single one
  const auto ds = read_model_datasets(o.output);
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds[0].dataset.digest, "sha256:aaa");
  EXPECT_EQ(ds[1].dataset.digest, "sha256:bbb");
  EXPECT_NE(ds[0].from.find("A"), std::string::npos);
  // The merged model loads and a merge of merges keeps both datasets (and its inputs' sd_merge_models).
  EXPECT_NO_THROW(DiT::load(o.output, cpu_backend()));
  auto o2 = opts(Mode::WeightedSum, {o.output, models().c}, "prov2.safetensors", 0.5);
  run_merge(o2);
  EXPECT_EQ(read_model_datasets(o2.output).size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(TensorSource::open(o2.output).metadata().at("sd_merge_models")).size(), 4u);
  // One dataset: oboro.dataset is kept as well.
  auto o3 = opts(Mode::WeightedSum, {models().a, models().c}, "prov3.safetensors", 0.5);
  run_merge(o3);
  EXPECT_EQ(read_model_dataset(o3.output).digest, "sha256:aaa");
}

TEST(Merge, TruncatedSvdReconstructs) {
  // A rank-2 matrix (5,7): rank 2 keeps all the energy; rank 1 keeps σ1²/(σ1² + σ2²).
  std::vector<double> D(35);
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 7; ++k) D[i * 7 + k] = 3.0 * (i + 1) * (k - 3) + 0.5 * std::sin(i * k + 1.0);
  const LowRank full = truncated_svd(D, 5, 7, 7);
  EXPECT_EQ(full.rank, 5);
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 7; ++k) {
      double r = 0;
      for (int j = 0; j < full.rank; ++j) r += (double)full.up[i * full.rank + j] * full.down[j * 7 + k];
      EXPECT_NEAR(r, D[i * 7 + k], 1e-4);
    }
  EXPECT_NEAR(full.retained(), 1.0, 1e-12);
  const LowRank one = truncated_svd(D, 5, 7, 1);
  EXPECT_LT(one.retained(), 1.0);
  EXPECT_GT(one.retained(), 0.9);
}

// Extract a LoRA of rank r from A − B, bake it into B: the result differs from A in each 2-D weight by exactly the
// energy the SVD dropped (relative Frobenius error sqrt(1 − retained), up to F32 rounding); at full rank it is A.
TEST(Merge, ExtractThenBakeReproducesAWithinTheSvdError) {
  for (int rank : {4, 64}) {
    auto ex = opts(Mode::ExtractLora, {models().a, models().b}, "extracted.safetensors");
    ex.rank = rank;
    const MergeReport rep = run_merge(ex);
    ASSERT_FALSE(rep.energy.empty());
    auto bake = opts(Mode::NoInterpolation, {models().b}, "baked.safetensors");
    bake.loras.push_back({ex.output, 1.f});
    const MergeReport br = run_merge(bake);
    EXPECT_EQ(br.lora_modules_applied, rep.energy.size());
    const auto A = tensors_of(models().a), B = tensors_of(models().b), R = tensors_of(bake.output);
    for (const TensorEnergy& e : rep.energy) {
      const auto &a = A.at(e.tensor), &b = B.at(e.tensor), &r = R.at(e.tensor);
      double err = 0, norm = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        err += ((double)r[i] - a[i]) * ((double)r[i] - a[i]);
        norm += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
      }
      const double rel = std::sqrt(err / norm), stated = std::sqrt(std::max(0.0, 1 - e.retained));
      EXPECT_NEAR(rel, stated, 1e-4) << e.tensor << " rank " << rank;
    }
    if (rank == 64) EXPECT_NEAR(rep.retained(), 1.0, 1e-9);
    else EXPECT_LT(rep.retained(), 0.99);
    // The 1-D tensors (norms, biases) differ and are reported; the LoRA carries the union of A and B's datasets.
    EXPECT_FALSE(rep.lost_1d.empty());
    const auto md = SafetensorsFile::open(ex.output)->metadata();
    EXPECT_EQ(md.at(lora::kArchitectureKey), lora::kLoraArchitecture);
    EXPECT_EQ(md.at("ss_network_dim"), std::to_string(rank));
    EXPECT_EQ(read_model_datasets(ex.output).size(), 2u);
  }
}

// Baking a LoRA with oboro merge gives the same weights, bit for bit, as generate's merge at load.
TEST(Merge, BakedLoraEqualsGenerateMerge) {
  auto ex = opts(Mode::ExtractLora, {models().a, models().b}, "for_bake.safetensors");
  ex.rank = 3;
  run_merge(ex);
  auto bake = opts(Mode::NoInterpolation, {models().b}, "baked2.safetensors");
  bake.loras.push_back({ex.output, -0.7f});
  run_merge(bake);
  const LoraSet set = read_lora_set({{ex.output, -0.7f, false}}, "", models().b);
  auto dit = load_dit_with_loras(models().b, cpu_backend(), WFormat::F32, set);
  const auto R = tensors_of(bake.output);
  for (const ParamView& v : dit->layout().views()) {
    const float* p = dit->params() + v.offset;
    EXPECT_TRUE(std::equal(p, p + v.numel(), R.at(v.name).begin())) << v.name;
  }
  // A LoRA for another model size is refused naming it.
  DiTConfig wide = cfg();
  wide.hidden_size = 48;
  const std::string w = write_model("wide2.safetensors", 5, wide);
  auto bad = opts(Mode::NoInterpolation, {w}, "bad.safetensors");
  bad.loras.push_back({ex.output, 1.f});
  EXPECT_NE(error_of([&] { run_merge(bad); }).find(ex.output), std::string::npos);
}
