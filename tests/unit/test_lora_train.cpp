// LoRA training (issue 19, train/lora_network.h): network_args parsing, the targeted modules, a new LoRA leaves the
// model unchanged (up = 0), the hand-written LoRA backward through the frozen DiT against central finite
// differences, and an end-to-end run: the base stays bitwise frozen, interrupted + resumed equals straight
// (LoRA weights, AdamW moments, EMA), the LoRA file has kohya keys and loads with every tensor, network_weights
// continues it.
#include "test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "flow/generate.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"
#include "models/dit.h"
#include "ops/backend.h"
#include "train/lora_network.h"
#include "train/train_config.h"
#include "train/trainer.h"
#include "io/image.h"
#include "train/lora_save.h"
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace oboro;
namespace fs = std::filesystem;
using oboro::test::error_of;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_lora_train_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

DiTConfig tiny_cfg() {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = {2, 4};
  c.ffn_hidden_size = 48;
  c.text_dim = 16;
  c.latent_channels = 3;
  c.patch_size = 2;
  return c;
}

LoraSettings settings(const std::vector<std::string>& args, int dim = 4, float alpha = 0) {
  TrainConfig c;
  c.network_module = "lora";
  c.network_dim = dim;
  c.network_alpha = alpha;
  c.network_args = args;
  return LoraSettings::from_config(c);
}

struct Batch {
  int B = 2, L = 3, h = 4, w = 4;
  std::vector<float> x, t{0.3f, 0.7f}, txt, mask, v;
  explicit Batch(const DiTConfig& c) {
    x.resize((size_t)B * c.latent_channels * h * w);
    txt.resize((size_t)B * L * c.text_dim);
    fill_normal(x.data(), (int64_t)x.size(), 5, 0);
    fill_normal(txt.data(), (int64_t)txt.size(), 5, 1);
    mask.assign((size_t)B * L, 1.f);
    mask[(size_t)1 * L + 2] = 0.f;
    v.resize(x.size());
  }
  void run(DiT& m, bool training) { m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, training); }
};

}  // namespace

TEST(LoraTrain, NetworkArgsSelectFamiliesAndBlocks) {
  DiT dit(tiny_cfg(), cpu_backend());
  LoraSettings s = settings({});
  EXPECT_EQ(s.alpha, 4.f);  // alpha 0 → dim
  EXPECT_EQ(LoraNetwork(dit, s, 1).num_modules(), 2u * 5);  // qkv, out, w1, w2, w3 in each of 2 blocks
  s = settings({"targets=attention", "blocks=1"}, 8, 2);
  EXPECT_EQ(s.scale(), 0.25f);
  LoraNetwork one(dit, s, 1);
  EXPECT_EQ(one.num_modules(), 2u);
  EXPECT_TRUE(one.layout().find("layers.1.attention.qkv.lora_down.weight"));
  EXPECT_EQ(one.layout().at("layers.1.attention.qkv.lora_up.weight").shape, (Shape{96, 8}));
  s = settings({"targets=embedder,final,modulation"});
  EXPECT_EQ(LoraNetwork(dit, s, 1).num_modules(), 6u + 2 + 2);  // t0 t2 b0 b2 cap x; final linear + adaLN; 2 adaLN
  EXPECT_EQ(s.args_json(), R"({"targets":"embedder,final,modulation"})");
  // Errors name the argument and the fix.
  EXPECT_NE(error_of([] { settings({"targets=attn"}); }).find("unknown target 'attn'"), std::string::npos);
  EXPECT_NE(error_of([] { settings({"conv_dim=4"}); }).find("unknown key 'conv_dim'"), std::string::npos);
  EXPECT_NE(error_of([] { settings({"blocks=3-1"}); }).find("backwards"), std::string::npos);
  EXPECT_NE(error_of([&] { LoraNetwork(dit, settings({"blocks=5-9"}), 1); }).find("selects no DiT weight"),
            std::string::npos);
  TrainConfig c;
  c.train_data_dir = "d";
  c.network_module = "loha";
  c.pretrained_model = "p";
  c.text_encoder = "t";
  EXPECT_NE(error_of([&] { c.validate(); }).find("network_module"), std::string::npos);
  c.network_module = "networks.lora";
  c.text_encoder.clear();
  EXPECT_NE(error_of([&] { c.validate(); }).find("text_encoder"), std::string::npos);
}

TEST(LoraTrain, NewLoraLeavesTheModelUnchangedAndDownIsKaimingUniform) {
  DiT dit(tiny_cfg(), cpu_backend());
  dit.init_random_all(3);
  Batch b(tiny_cfg());
  b.run(dit, false);
  const std::vector<float> base = b.v;
  LoraNetwork net(dit, settings({"targets=attention,feed_forward,modulation,embedder,final"}), 9);
  dit.set_adapter(&net);
  b.run(dit, false);
  EXPECT_EQ(0, std::memcmp(base.data(), b.v.data(), base.size() * sizeof(float)));
  const ParamView& d = net.layout().at("layers.0.feed_forward.w2.lora_down.weight");  // (4, 48)
  float lo = 1, hi = -1;
  for (size_t i = 0; i < d.numel(); ++i) lo = std::min(lo, net.params()[d.offset + i]), hi = std::max(hi, net.params()[d.offset + i]);
  const float bound = 1.f / std::sqrt(48.f);
  EXPECT_GE(lo, -bound);
  EXPECT_LE(hi, bound);
  EXPECT_LT(lo, -0.5f * bound);
  EXPECT_GT(hi, 0.5f * bound);
  const ParamView& u = net.layout().at("layers.0.feed_forward.w2.lora_up.weight");
  for (size_t i = 0; i < u.numel(); ++i) ASSERT_EQ(net.params()[u.offset + i], 0.f);
}

TEST(LoraTrain, BackwardMatchesFiniteDifferences) {
  // Loss = Σ v ⊙ r through the frozen DiT with a LoRA on every family (ups random so every path carries gradient);
  // central differences of the LoRA weights against the hand-written backward.
  const DiTConfig c = tiny_cfg();
  DiT dit(c, cpu_backend());
  dit.init_random_all(21);
  LoraNetwork net(dit, settings({"targets=attention,feed_forward,modulation,embedder,final"}, 3, 1.5f), 4);
  fill_normal(net.params(), (int64_t)net.num_params(), 77, 0, 0, 0.f, 0.3f);
  dit.set_frozen(true);
  dit.set_adapter(&net);
  Batch b(c);
  std::vector<float> r(b.v.size());
  fill_normal(r.data(), (int64_t)r.size(), 99);
  b.run(dit, true);
  net.zero_grads();
  dit.backward(r.data());
  const std::vector<float> g(net.grads(), net.grads() + net.num_params());
  auto loss = [&] {
    b.run(dit, true);
    double s = 0;
    for (size_t i = 0; i < r.size(); ++i) s += (double)b.v[i] * r[i];
    return s;
  };
  int checked = 0;
  for (const ParamView& pv : net.layout().views()) {
    for (int k = 0; k < 2; ++k) {
      const size_t idx = pv.offset + (size_t)(uniform_at(7, checked, 0) * pv.numel());
      const float orig = net.params()[idx], eps = 1e-2f;
      net.params()[idx] = orig + eps;
      const double lp = loss();
      net.params()[idx] = orig - eps;
      const double lm = loss();
      net.params()[idx] = orig;
      const double fd = (lp - lm) / (2 * eps);
      EXPECT_NEAR(g[idx], fd, 2e-2 * std::max(1.0, std::fabs(fd))) << pv.name << "[" << idx - pv.offset << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, (int)net.layout().views().size() * 2);
}

namespace {

fs::path make_dataset() {
  static fs::path dir = [] {
    fs::path d = scratch("data");
    const uint8_t rgb[3][3] = {{220, 30, 30}, {30, 200, 40}, {30, 40, 220}};
    const char* colours[] = {"red", "green", "blue"};
    for (int k = 0; k < 6; ++k) {
      Image im;
      im.width = im.height = 8;
      im.rgb.assign(8 * 8 * 3, 255);
      for (int y = (k % 2) * 4; y < (k % 2) * 4 + 4; ++y)
        for (int x = 0; x < 4; ++x)
          for (int ch = 0; ch < 3; ++ch) im.rgb[(y * 8 + x) * 3 + ch] = rgb[k % 3][ch];
      save_png((d / ("img" + std::to_string(k) + ".png")).string(), im);
      std::ofstream(d / ("img" + std::to_string(k) + ".txt")) << "a " << colours[k % 3] << " square";
    }
    return d;
  }();
  return dir;
}

TrainConfig base_config(const fs::path& out) {
  TrainConfig c;
  c.train_data_dir = make_dataset().string();
  c.output_dir = out.string();
  c.output_name = "base";
  c.width = c.height = 8;
  c.head_schedule = "uniform";
  c.hidden_size = 32;
  c.num_layers = 2;
  c.ffn_hidden_size = 48;
  c.vocab_size = 40;
  c.t5_d_model = 16;
  c.t5_layers = 1;
  c.t5_heads = 2;
  c.t5_d_kv = 8;
  c.t5_d_ff = 24;
  c.train_batch_size = 3;
  c.max_train_steps = 2;
  c.progress = false;
  return c;
}

// The base model (trained 2 steps from scratch) that the LoRA runs adapt.
const fs::path& base_model() {
  static fs::path p = [] {
    fs::path d = scratch("base");
    train(base_config(d), cpu_backend());
    return d;
  }();
  return p;
}

TrainConfig lora_config(const fs::path& out) {
  TrainConfig c = base_config(out);
  c.output_name = "style";
  c.pretrained_model = (base_model() / "base.safetensors").string();
  c.text_encoder = (base_model() / "base.t5.safetensors").string();
  c.network_module = "lora";
  c.network_dim = 4;
  c.network_alpha = 2;
  c.network_args = {"targets=attention,feed_forward,modulation,final"};
  c.max_train_steps = 6;
  c.gradient_accumulation_steps = 2;
  c.learning_rate = 1e-2;
  c.lr_scheduler = "cosine";
  c.lr_warmup_steps = 2;
  c.ema_decay = 0.9f;
  c.save_every_n_steps = 2;
  return c;
}

}  // namespace

TEST(LoraTrain, ResumeIsBitIdenticalBaseStaysFrozenAndTheFileLoads) {
  const fs::path a = scratch("lora_straight"), b = scratch("lora_resumed");
  TrainResult ra = train(lora_config(a), cpu_backend());
  EXPECT_EQ(ra.steps, 6);
  TrainResult rb = train(lora_config(b), cpu_backend(), "", 2);
  rb = train(lora_config(b), cpu_backend(), "latest", 3);
  rb = train(lora_config(b), cpu_backend(), "latest");
  EXPECT_EQ(rb.steps, 6);
  auto fa = SafetensorsFile::open(ra.state_path), fb = SafetensorsFile::open(rb.state_path);
  EXPECT_FALSE(fa->has("dit.adam_m"));  // the base has no optimizer state
  for (const char* n : {"lora.params", "lora.adam_m", "lora.adam_v", "lora.ema", "dit.params"}) {
    ASSERT_TRUE(fa->has(n)) << n;
    Tensor ta = fa->tensor(n), tb = fb->tensor(n);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << n;
    EXPECT_EQ(0, std::memcmp(ta.raw(), tb.raw(), ta.nbytes())) << n << " differs after resume";
  }
  // The base is bitwise the pretrained model.
  {
    auto base = SafetensorsFile::open((base_model() / "base.safetensors").string());
    const Tensor dp = fa->tensor_f32("dit.params");
    const ParamLayout layout = dit_param_layout(DiTConfig::from_json(
        nlohmann::json::parse(base->metadata().at("oboro.config")), "base"));
    for (const ParamView& v : layout.views()) {
      const Tensor t = base->tensor_f32(v.name);
      ASSERT_EQ(0, std::memcmp(t.f32(), dp.f32() + v.offset, v.numel() * sizeof(float))) << v.name;
    }
  }
  // The LoRA file: kohya keys and metadata, every tensor used when read against the base.
  const std::string lf = (a / "style.safetensors").string();
  auto f = SafetensorsFile::open(lf);
  EXPECT_TRUE(f->has("lora_unet_layers_0_attention_qkv.lora_down.weight"));
  EXPECT_TRUE(f->has("lora_unet_final_layer_linear.lora_up.weight"));
  EXPECT_EQ(f->metadata().at("modelspec.architecture"), "oboro-dit-v1/lora");
  EXPECT_EQ(f->metadata().at("ss_network_dim"), "4");
  EXPECT_EQ(f->metadata().at("ss_network_alpha"), "2.0");  // kohya writes str(float)
  // ss_tag_frequency: {"<dataset folder>": {tag: count}} over the training captions
  const nlohmann::json tags = nlohmann::json::parse(f->metadata().at("ss_tag_frequency"));
  ASSERT_EQ(tags.size(), 1u);
  int64_t tagged = 0;
  for (const auto& [tag, n] : tags.begin().value().items()) tagged += n.get<int64_t>();
  EXPECT_GT(tagged, 0);
  const DiTConfig dc = DiTConfig::from_json(
      nlohmann::json::parse(SafetensorsFile::open(lora_config(a).pretrained_model)->metadata().at("oboro.config")), "b");
  const lora::LoraFile lfile = lora::read_lora(lf, lora::LoraKeyMap::from_layout(dit_param_layout(dc)));
  EXPECT_EQ(lfile.modules.size(), 2u * 6 + 2);  // 2 blocks × (qkv out w1 w2 w3 adaLN) + final linear/adaLN
  EXPECT_EQ(lfile.used(), lfile.tensors);
  EXPECT_EQ(lfile.modules[0].scale, 0.5f);
  bool moved = false;
  for (const auto& m : lfile.modules)
    for (int64_t i = 0; i < m.up.numel(); ++i) moved |= m.up.f32()[i] != 0.f;
  EXPECT_TRUE(moved);  // training moved the up weights away from zero
  // `generate --lora FILE:W` applies it: weight 0 gives the base's image, weight 1 another.
  GenerateRequest rq;
  rq.model = lora_config(a).pretrained_model;
  rq.text_encoder = lora_config(a).text_encoder;
  rq.prompt = "a red square";
  rq.width = rq.height = 8;
  rq.steps = 3;
  rq.seed = 1;
  const auto base_img = generate(cpu_backend(), rq, false);
  rq.loras = {{lf, 0.f, false}};
  EXPECT_EQ(generate(cpu_backend(), rq, false)[0].image.rgb, base_img[0].image.rgb);
  rq.loras = {{lf, 1.f, false}};
  EXPECT_NE(generate(cpu_backend(), rq, false)[0].image.rgb, base_img[0].image.rgb);
  // network_weights continues from the file: its modules must be targeted and of the same rank and alpha.
  TrainConfig cont = lora_config(scratch("lora_continue"));
  cont.network_weights = lf;
  cont.max_train_steps = 1;
  EXPECT_EQ(train(cont, cpu_backend()).steps, 1);
  cont.output_dir = scratch("lora_continue_bad").string();
  cont.network_args = {"targets=attention"};
  EXPECT_NE(error_of([&] { train(cont, cpu_backend()); }).find("does not target"), std::string::npos);
  cont.network_args = {"targets=attention,feed_forward,modulation,final"};
  cont.network_dim = 8;
  EXPECT_NE(error_of([&] { train(cont, cpu_backend()); }).find("rank 4"), std::string::npos);
}

TEST(LoraTrain, TagFrequencyCountsCommaSeparatedTagsAsKohya) {
  const nlohmann::json j = nlohmann::json::parse(
      kohya_tag_frequency("/data/run/img", {"red circle, smile", " smile ,, big", "", "red circle"}));
  EXPECT_EQ(j, nlohmann::json::parse(R"({"img": {"red circle": 2, "smile": 2, "big": 1}})"));
}
