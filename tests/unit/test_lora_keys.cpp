// LoRA key mapping (src/lora/lora_keys.*): kohya and PEFT keys ↔ DiT tensor names.
#include "lora/lora_keys.h"
#include "models/dit_config.h"
#include "test_util.h"
#include <gtest/gtest.h>
#include <set>

using namespace oboro;
using namespace oboro::lora;

namespace {
DiTConfig tiny_cfg() {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = {2, 2, 2};
  c.ffn_hidden_size = 64;
  c.text_dim = 16;
  c.latent_channels = 4;
  return c;
}
}  // namespace

TEST(LoraKeys, IssueExamples) {
  EXPECT_EQ(kohya_key("layers.0.attention.qkv.weight", KeyPart::Down), "lora_unet_layers_0_attention_qkv.lora_down.weight");
  EXPECT_EQ(kohya_key("layers.0.attention.qkv.weight", KeyPart::Up), "lora_unet_layers_0_attention_qkv.lora_up.weight");
  EXPECT_EQ(kohya_key("layers.0.attention.qkv.weight", KeyPart::Alpha), "lora_unet_layers_0_attention_qkv.alpha");
  EXPECT_EQ(peft_key("layers.0.attention.qkv.weight", KeyPart::Down), "layers.0.attention.qkv.lora_A.weight");
  EXPECT_EQ(peft_key("layers.0.attention.qkv.weight", KeyPart::Up, "transformer."),
            "transformer.layers.0.attention.qkv.lora_B.weight");
  EXPECT_NE(test::error_of([] { module_of("layers.0.attention.q_norm.bias"); }).find("internal error"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { peft_key("x.weight", KeyPart::Alpha); }).find("no alpha"), std::string::npos);
}

TEST(LoraKeys, ParseBothLayouts) {
  auto k = parse_key("lora_unet_layers_2_adaLN_modulation_1.alpha");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->layout, KeyLayout::Kohya);
  EXPECT_EQ(k->module, "lora_unet_layers_2_adaLN_modulation_1");
  EXPECT_EQ(k->part, KeyPart::Alpha);
  for (const char* pre : {"", "transformer.", "diffusion_model."}) {
    auto p = parse_key(std::string(pre) + "layers.1.feed_forward.w2.lora_B.weight");
    ASSERT_TRUE(p) << pre;
    EXPECT_EQ(p->layout, KeyLayout::Peft);
    EXPECT_EQ(p->module, "layers.1.feed_forward.w2");
    EXPECT_EQ(p->part, KeyPart::Up);
  }
  EXPECT_FALSE(parse_key("layers.0.attention.qkv.weight"));
  EXPECT_FALSE(parse_key("lora_unet_.alpha"));
  EXPECT_FALSE(parse_key("lora_unet_layers_0_attention_qkv.lora_mid.weight"));
  EXPECT_FALSE(parse_key("transformer..lora_A.weight") && parse_key("transformer..lora_A.weight")->module.empty());
}

// Every 2-D weight of a real DiT layout maps both ways through both layouts; 1-D tensors are no targets; the kohya
// stems (whose underscores are ambiguous) are resolved by the table, not by string surgery.
TEST(LoraKeys, RoundTripOverTheDiTLayout) {
  const ParamLayout L = dit_param_layout(tiny_cfg());
  const LoraKeyMap map = LoraKeyMap::from_layout(L);
  size_t n2 = 0;
  for (const ParamView& v : L.views()) n2 += v.shape.size() == 2;
  ASSERT_EQ(map.targets().size(), n2);
  EXPECT_EQ(n2, 6u + 3u * 6u + 2u);  // embedders t 2, bos 2, cap 1, x 1; per block qkv/out/w1/w2/w3/ada; final 2
  std::set<std::string> names;
  for (const Target& t : map.targets()) {
    names.insert(t.tensor);
    for (KeyPart part : {KeyPart::Down, KeyPart::Up, KeyPart::Alpha}) {
      auto k = parse_key(kohya_key(t.tensor, part));
      ASSERT_TRUE(k) << t.tensor;
      EXPECT_EQ(k->part, part);
      const Target* back = map.find(*k);
      ASSERT_NE(back, nullptr) << t.tensor;
      EXPECT_EQ(back->tensor, t.tensor);
      EXPECT_EQ(back->shape, t.shape);
    }
    for (const char* pre : {"", "transformer.", "diffusion_model."})
      for (KeyPart part : {KeyPart::Down, KeyPart::Up}) {
        auto k = parse_key(peft_key(t.tensor, part, pre));
        ASSERT_TRUE(k);
        ASSERT_NE(map.find(*k), nullptr) << t.tensor;
        EXPECT_EQ(map.find(*k)->tensor, t.tensor);
      }
  }
  EXPECT_TRUE(names.count("layers.2.adaLN_modulation.1.weight"));
  EXPECT_TRUE(names.count("final_layer.adaLN_modulation.1.weight"));
  EXPECT_TRUE(names.count("cap_embedder.1.weight"));
  EXPECT_FALSE(names.count("cap_embedder.0.weight"));  // RMSNorm scale (1-D)
  EXPECT_FALSE(names.count("layers.0.attention.q_norm.weight"));
  // A stem that is no tensor of this model (block 3 of a 3-block model; underscores moved) finds nothing.
  EXPECT_EQ(map.find(*parse_key("lora_unet_layers_3_attention_qkv.lora_down.weight")), nullptr);
  EXPECT_EQ(map.find(*parse_key("lora_unet_layers_0_adaLN_modulation1.lora_down.weight")), nullptr);
  EXPECT_EQ(map.find(*parse_key("lora_unet_layers_0_attention_q_norm.lora_down.weight")), nullptr);
}

TEST(LoraKeys, CollidingStemsAreRefused) {
  std::vector<Target> t = {{"a_b.c.weight", {2, 2}}, {"a.b_c.weight", {2, 2}}};
  EXPECT_NE(test::error_of([&] { LoraKeyMap m(t); }).find("lora_unet_a_b_c"), std::string::npos);
}

TEST(LoraKeys, PlaceOf) {
  EXPECT_EQ(place_of("x_embedder.weight").family, Family::Embedder);
  EXPECT_EQ(place_of("t_embedder.mlp.0.weight").block, -1);
  auto p = place_of("layers.12.feed_forward.w1.weight");
  EXPECT_EQ(p.family, Family::FeedForward);
  EXPECT_EQ(p.block, 12);
  EXPECT_EQ(place_of("layers.0.attention.qkv.weight").family, Family::Attention);
  EXPECT_EQ(place_of("layers.0.adaLN_modulation.1.bias").family, Family::Modulation);
  EXPECT_EQ(place_of("layers.3.ffn_norm1.weight").family, Family::Other);
  EXPECT_EQ(place_of("layers.3.ffn_norm1.weight").block, 3);
  EXPECT_EQ(place_of("final_layer.linear.weight").family, Family::Final);
}
