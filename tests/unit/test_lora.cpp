// LoRA files and LoRA at inference (issue 19): kohya and PEFT layouts read against a tiny DiT, alpha/dim scaling,
// the errors naming file and key, the writer's metadata and hash, the prompt syntax, the F32 merge against host
// math, the quantised (dequantise-merge-requantise) path against the F32 merge, and generate: every tensor applied,
// weight 0 = no LoRA bitwise, no state leak between two generations (with and without the server's model cache).
#include "test_util.h"
#include "core/rng.h"
#include "flow/generate.h"
#include "flow/infotext.h"
#include "flow/lora_apply.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"
#include "lora/lora_merge.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include "models/t5.h"
#include "models/tokenizer.h"
#include "ops/backend.h"
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>

using namespace oboro;
using namespace oboro::lora;
namespace fs = std::filesystem;
using oboro::test::error_of;

namespace {

fs::path root() { return oboro::test::process_tmpdir("oboro_lora"); }

DiTConfig tiny_cfg() {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = {2, 2};
  c.ffn_hidden_size = 64;  // q8_0 needs K % 32 == 0
  c.text_dim = 16;
  c.latent_channels = 3;
  c.patch_size = 2;
  c.codec = "pixels";
  return c;
}

struct Models {
  std::string te, dit;
};
const Models& models() {
  static Models m = [] {
    Models r;
    r.te = oboro::test::write_tiny_text_encoder(root() / "te.safetensors", root());
    DiT d(tiny_cfg(), cpu_backend());
    d.init_random_all(1);
    for (size_t i = 0; i < d.num_params(); ++i) d.params()[i] *= 0.3f;
    r.dit = (root() / "dit.safetensors").string();
    d.save(r.dit, {{"oboro.text_encoder", "te.safetensors"}});
    return r;
  }();
  return m;
}

const LoraKeyMap& tiny_map() {
  static const LoraKeyMap m = LoraKeyMap::from_layout(dit_param_layout(tiny_cfg()));
  return m;
}

Tensor randn(const Shape& s, uint64_t seed, float sd) {
  Tensor t = Tensor::empty(s);
  fill_normal(t.f32(), t.numel(), seed, 0, 0, 0.f, sd);
  return t;
}

// A rank-r kohya LoRA adapting every 2-D weight of the tiny DiT (alpha = r / 2, so scale 0.5).
std::vector<LoraWriteModule> all_modules(int r, uint64_t seed) {
  std::vector<LoraWriteModule> mods;
  uint64_t s = seed;
  for (const Target& t : tiny_map().targets())
    mods.push_back({t.tensor, randn({r, t.shape[1]}, s++, 0.2f), randn({t.shape[0], r}, s++, 0.2f), r / 2.f});
  return mods;
}

std::string write_all_lora(const std::string& name, int r = 4, uint64_t seed = 10) {
  const std::string p = (root() / name).string();
  LoraMetadata md;
  md.steps = 100;
  md.learning_rate = 1e-4;
  md.resolution_w = md.resolution_h = 64;
  md.base_model_hash = "abc";
  md.tag_frequency = R"({"data": {"cat": 3}})";
  write_lora(p, all_modules(r, seed), md);
  return p;
}

// Writes raw tensors with optional metadata.
void write_raw(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& ts,
               const std::map<std::string, std::string>& md = {}) {
  SafetensorsWriter w;
  for (const auto& [k, t] : ts) w.add(k, t);
  for (const auto& [k, v] : md) w.set_metadata(k, v);
  w.write(path);
}

// The kohya tensors of the first `n` targets (rank 2, no alpha).
std::vector<std::pair<std::string, Tensor>> kohya_tensors(size_t n, bool alpha) {
  std::vector<std::pair<std::string, Tensor>> ts;
  const auto& tg = tiny_map().targets();
  for (size_t i = 0; i < n && i < tg.size(); ++i) {
    ts.push_back({kohya_key(tg[i].tensor, KeyPart::Down), randn({2, tg[i].shape[1]}, 100 + i, 0.1f)});
    ts.push_back({kohya_key(tg[i].tensor, KeyPart::Up), randn({tg[i].shape[0], 2}, 200 + i, 0.1f)});
    if (alpha) ts.push_back({kohya_key(tg[i].tensor, KeyPart::Alpha), Tensor::from_f32({1.f}, Shape{})});
  }
  return ts;
}

GenerateRequest request() {
  GenerateRequest rq;
  rq.model = models().dit;
  rq.text_encoder = models().te;
  rq.prompt = "a red square on left";
  rq.negative_prompt = "blue";
  rq.steps = 3;
  rq.cfg_scale = 3.f;
  rq.seed = 42;
  rq.width = 16;
  rq.height = 8;
  return rq;
}

std::string param(const std::string& infotext, const std::string& key) {
  for (auto& [k, v] : parse_infotext(infotext).params)
    if (k == key) return v;
  return "";
}

}  // namespace

TEST(LoraFile, WrittenKohyaLoraReadsBackWithEveryTensor) {
  const std::string p = write_all_lora("all.safetensors");
  const LoraFile f = read_lora(p, tiny_map());
  EXPECT_EQ(f.layout, KeyLayout::Kohya);
  ASSERT_EQ(f.modules.size(), tiny_map().targets().size());
  EXPECT_EQ(f.tensors, 3 * f.modules.size());
  EXPECT_EQ(f.used(), f.tensors);
  EXPECT_TRUE(f.unused.empty());
  for (const LoraModule& m : f.modules) {
    EXPECT_EQ(m.rank(), 4);
    EXPECT_EQ(m.alpha, 2.f);
    EXPECT_EQ(m.scale, 0.5f);
  }
  EXPECT_EQ(f.metadata.at(kArchitectureKey), kLoraArchitecture);
  EXPECT_EQ(f.metadata.at("ss_network_module"), "networks.lora");
  EXPECT_EQ(f.metadata.at("ss_network_dim"), "4");
  EXPECT_EQ(f.metadata.at("ss_network_alpha"), "4.0");
  EXPECT_EQ(f.metadata.at("ss_steps"), "100");
  EXPECT_EQ(f.metadata.at("ss_resolution"), "(64, 64)");
  EXPECT_EQ(f.metadata.at("ss_new_sd_model_hash"), "abc");
  EXPECT_EQ(f.metadata.at("oboro.base_model"), "abc");
  EXPECT_EQ(f.metadata.at("ss_tag_frequency"), R"({"data": {"cat": 3}})");
  // sshs_model_hash is kohya's addnet hash of the tensor bytes: recomputing it from the file (without trusting the
  // metadata) gives the same value.
  const std::string recorded = f.metadata.at("sshs_model_hash");
  ASSERT_EQ(recorded.size(), 64u);
  SafetensorsWriter w;  // the same tensors without metadata: the same data section, so the same addnet hash
  auto src = SafetensorsFile::open(p);
  std::vector<Tensor> keep;
  for (const auto& ti : src->tensors()) keep.push_back(src->tensor(ti.name)), w.add(ti.name, keep.back());
  const std::string bare = (root() / "bare.safetensors").string();
  w.write(bare);
  EXPECT_EQ(lora_addnet_hash(bare), recorded);
  EXPECT_EQ(lora_short_hash(p), recorded.substr(0, 12));
}

TEST(LoraFile, AbsentAlphaMeansDimAndDeltaIsUpTimesDown) {
  const std::string p = (root() / "noalpha.safetensors").string();
  write_raw(p, kohya_tensors(1, false));
  const LoraFile f = read_lora(p, tiny_map());
  ASSERT_EQ(f.modules.size(), 1u);
  EXPECT_EQ(f.modules[0].scale, 1.f);
  EXPECT_EQ(f.modules[0].alpha, 2.f);
  const LoraModule& m = f.modules[0];
  const std::vector<float> d = lora_delta(m);
  const int64_t N = m.up.dim(0), K = m.down.dim(1);
  for (int64_t n = 0; n < N; n += 7)
    for (int64_t k = 0; k < K; k += 5) {
      double e = 0;
      for (int j = 0; j < 2; ++j) e += (double)m.up.f32()[n * 2 + j] * m.down.f32()[j * K + k];
      EXPECT_EQ(d[n * K + k], (float)e);
    }
  // alpha 1 with rank 2: scale 0.5.
  const std::string pa = (root() / "alpha.safetensors").string();
  write_raw(pa, kohya_tensors(1, true));
  EXPECT_EQ(read_lora(pa, tiny_map()).modules[0].scale, 0.5f);
}

// The done-when's hand-built PEFT-layout LoRA: lora_A / lora_B under "transformer.", scale 1.
TEST(LoraFile, HandBuiltPeftLoraLoads) {
  for (const char* prefix : {"", "transformer.", "diffusion_model."}) {
    std::vector<std::pair<std::string, Tensor>> ts;
    for (const Target& t : tiny_map().targets()) {
      ts.push_back({peft_key(t.tensor, KeyPart::Down, prefix), randn({3, t.shape[1]}, 1, 0.1f)});
      ts.push_back({peft_key(t.tensor, KeyPart::Up, prefix), randn({t.shape[0], 3}, 2, 0.1f)});
    }
    const std::string p = (root() / "peft.safetensors").string();
    write_raw(p, ts);
    const LoraFile f = read_lora(p, tiny_map());
    EXPECT_EQ(f.layout, KeyLayout::Peft);
    EXPECT_EQ(f.modules.size(), tiny_map().targets().size()) << prefix;
    EXPECT_EQ(f.used(), f.tensors);
    for (const auto& m : f.modules) EXPECT_EQ(m.scale, 1.f);
  }
}

TEST(LoraFile, OneWrongKeyFailsNamingFileAndKey) {
  auto ts = kohya_tensors(4, true);
  ts[4].first = "lora_unet_layers_0_attention_qkvx.lora_up.weight";
  const std::string p = (root() / "wrongkey.safetensors").string();
  write_raw(p, ts);
  const std::string e = error_of([&] { read_lora(p, tiny_map()); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("lora_unet_layers_0_attention_qkvx.lora_up.weight"), std::string::npos) << e;
  // A block the model does not have (a LoRA for a deeper model).
  ts = kohya_tensors(2, false);
  ts.push_back({"lora_unet_layers_7_attention_qkv.lora_down.weight", randn({2, 32}, 1, 0.1f)});
  write_raw(p, ts);
  EXPECT_NE(error_of([&] { read_lora(p, tiny_map()); }).find("lora_unet_layers_7_attention_qkv.lora_down.weight"),
            std::string::npos);
  // Not a LoRA key at all.
  ts = kohya_tensors(1, false);
  ts.push_back({"layers.0.attention.qkv.weight", randn({96, 32}, 1, 0.1f)});
  write_raw(p, ts);
  EXPECT_NE(error_of([&] { read_lora(p, tiny_map()); }).find("layers.0.attention.qkv.weight is not a LoRA key"),
            std::string::npos);
}

TEST(LoraFile, WrongShapeArchitectureAndMissingHalfAreNamed) {
  const std::string p = (root() / "bad.safetensors").string();
  auto ts = kohya_tensors(2, false);
  ts[2].second = randn({2, 31}, 1, 0.1f);  // second module's down: K wrong
  write_raw(p, ts);
  std::string e = error_of([&] { read_lora(p, tiny_map()); });
  EXPECT_NE(e.find(ts[2].first), std::string::npos) << e;
  EXPECT_NE(e.find("(2, 31)"), std::string::npos) << e;

  ts = kohya_tensors(1, false);
  ts[1].second = randn({ts[1].second.dim(0), 3}, 1, 0.1f);  // up rank 3, down rank 2
  write_raw(p, ts);
  EXPECT_NE(error_of([&] { read_lora(p, tiny_map()); }).find(ts[1].first), std::string::npos);

  write_raw(p, kohya_tensors(1, false), {{kArchitectureKey, "stable-diffusion-xl-v1-base/lora"}});
  e = error_of([&] { read_lora(p, tiny_map()); });
  EXPECT_NE(e.find("stable-diffusion-xl-v1-base/lora"), std::string::npos) << e;
  EXPECT_NE(e.find(p), std::string::npos) << e;

  ts = kohya_tensors(1, false);
  ts.pop_back();  // no up
  write_raw(p, ts);
  e = error_of([&] { read_lora(p, tiny_map()); });
  EXPECT_NE(e.find("no up"), std::string::npos) << e;

  auto more = kohya_tensors(1, false);
  ts = {{kohya_key(tiny_map().targets()[0].tensor, KeyPart::Alpha), Tensor::from_f32({1.f, 2.f}, {2})}};
  ts.insert(ts.end(), more.begin(), more.end());
  write_raw(p, ts);
  EXPECT_NE(error_of([&] { read_lora(p, tiny_map()); }).find("alpha is one number"), std::string::npos);
}

TEST(LoraFile, TextEncoderKeysAreReportedUnused) {
  auto ts = kohya_tensors(2, true);
  ts.push_back({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", randn({2, 8}, 1, 0.1f)});
  const std::string p = (root() / "te.safetensors").string();
  write_raw(p, ts);
  const LoraFile f = read_lora(p, tiny_map());
  EXPECT_EQ(f.tensors, 7u);
  EXPECT_EQ(f.used(), 6u);
  ASSERT_EQ(f.unused.size(), 1u);
  const std::string rep = applied_report(f, "te");
  EXPECT_NE(rep.find("applied 6 of 7 LoRA tensors"), std::string::npos) << rep;
  EXPECT_NE(rep.find("unused tensor lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"), std::string::npos);
  // Only text-encoder keys: matches nothing → error.
  write_raw(p, {ts.back()});
  EXPECT_NE(error_of([&] { read_lora(p, tiny_map()); }).find("none of its 1 tensors"), std::string::npos);
}

TEST(LoraApply, PromptTagsAndArguments) {
  std::vector<LoraRequest> found;
  EXPECT_EQ(strip_prompt_loras("a cat <lora:style:0.8>, red <lora:b> <lora:c:1:-0.5>", found), "a cat , red  ");
  ASSERT_EQ(found.size(), 3u);
  EXPECT_EQ(found[0].spec, "style");
  EXPECT_EQ(found[0].weight, 0.8f);
  EXPECT_TRUE(found[0].from_prompt);
  EXPECT_EQ(found[1].weight, 1.f);
  EXPECT_EQ(found[2].weight, -0.5f);  // A1111 <lora:name:te:unet>: the DiT takes unet
  EXPECT_NE(error_of([&] { strip_prompt_loras("x <lora:a:big>", found); }).find("<lora:a:big>"), std::string::npos);
  EXPECT_NE(error_of([&] { strip_prompt_loras("x <lora::1>", found); }).find("names no LoRA"), std::string::npos);
  EXPECT_NE(error_of([&] { strip_prompt_loras("x <lora:a", found); }).find("not closed"), std::string::npos);
  auto r = parse_lora_arg("dir/a.safetensors:-0.25");
  EXPECT_EQ(r.spec, "dir/a.safetensors");
  EXPECT_EQ(r.weight, -0.25f);
  EXPECT_EQ(parse_lora_arg("a.safetensors").weight, 1.f);
  EXPECT_EQ(parse_lora_arg("c:/x").spec, "c:/x");
  LoraRequest pr{"nope", 1, true};
  const std::string e = error_of([&] { locate_lora(pr, (root() / "loras").string()); });
  EXPECT_NE(e.find("<lora:nope>"), std::string::npos) << e;
  EXPECT_NE(e.find("nope.safetensors"), std::string::npos) << e;
}

// The F32 merge equals W + w1·ΔW1 + w2·ΔW2 computed on the host (stacking, a negative weight); the quantised path is
// the F32 merge quantised (same forward bits as converting the F32-merged model).
TEST(LoraApply, MergeMatchesHostMathAndQuantisedPathIsTheF32MergeQuantised) {
  const std::string a = write_all_lora("stackA.safetensors", 4, 10), b = write_all_lora("stackB.safetensors", 2, 50);
  const LoraSet set = read_lora_set({{a, 0.7f, false}, {b, -1.5f, false}}, "", models().dit);
  auto base = DiT::load(models().dit, cpu_backend(), WFormat::F32);
  auto merged = load_dit_with_loras(models().dit, cpu_backend(), WFormat::F32, set);
  const LoraFile fa = read_lora(a, tiny_map()), fb = read_lora(b, tiny_map());
  size_t changed = 0;
  for (const ParamView& v : base->layout().views()) {
    std::vector<float> w(base->params() + v.offset, base->params() + v.offset + v.numel());
    for (const auto* f : {&fa, &fb})
      for (const auto& m : f->modules)
        if (m.tensor == v.name) add_delta(w.data(), m, f == &fa ? 0.7f : -1.5f);
    const float* got = merged->params() + v.offset;
    const bool same = std::equal(w.begin(), w.end(), got);
    EXPECT_TRUE(same) << v.name;
    changed += !std::equal(w.begin(), w.end(), base->params() + v.offset);
  }
  EXPECT_EQ(changed, tiny_map().targets().size());  // every target moved, nothing else

  for (WFormat f : {WFormat::BF16, WFormat::Q8_0}) {
    auto q = load_dit_with_loras(models().dit, cpu_backend(), f, set);
    auto ref = merged->converted(f);
    const DiTConfig& c = q->config();
    const int B = 1, L = 3, h = 4, w = 4;
    std::vector<float> x((size_t)B * c.latent_channels * h * w), txt((size_t)B * L * c.text_dim), t(B, 0.4f),
        mask((size_t)B * L, 1.f), v1(x.size()), v2(x.size());
    fill_normal(x.data(), (int64_t)x.size(), 1, 0, 0, 0.f, 1.f);
    fill_normal(txt.data(), (int64_t)txt.size(), 2, 0, 0, 0.f, 1.f);
    q->forward(v1.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
    ref->forward(v2.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
    EXPECT_EQ(v1, v2) << wformat_name(f);
  }
}

// generate: LoRA changes the image, infotext carries `Lora hashes`, every tensor is applied, weight 0 gives the
// no-LoRA image bitwise, and a no-LoRA generation after a LoRA one (same process, with and without the model cache)
// gives the no-LoRA image bitwise.
TEST(LoraApply, GenerateAppliesLoraAndLeaksNothing) {
  const std::string p = write_all_lora("style.safetensors", 4, 77);
  const auto plain = generate(cpu_backend(), request(), false);
  GenerateRequest with = request();
  with.loras.push_back({p, 1.f, false});
  const auto lora = generate(cpu_backend(), with, false);
  ASSERT_EQ(lora.size(), 1u);
  EXPECT_NE(lora[0].image.rgb, plain[0].image.rgb);
  EXPECT_EQ(param(lora[0].infotext, "Lora hashes"), "style: " + lora_short_hash(p));
  EXPECT_EQ(param(plain[0].infotext, "Lora hashes"), "");
  EXPECT_EQ(generate(cpu_backend(), request(), false)[0].image.rgb, plain[0].image.rgb);

  // The prompt tag, looked up in --lora-dir, is the same LoRA; the tag stays in the infotext prompt only.
  GenerateRequest tagged = request();
  tagged.prompt += " <lora:style:1>";
  tagged.lora_dir = root().string();
  const auto t = generate(cpu_backend(), tagged, false);
  EXPECT_EQ(t[0].image.rgb, lora[0].image.rgb);
  EXPECT_EQ(parse_infotext(t[0].infotext).prompt, tagged.prompt);

  GenerateRequest zero = request();
  zero.loras.push_back({p, 0.f, false});
  EXPECT_EQ(generate(cpu_backend(), zero, false)[0].image.rgb, plain[0].image.rgb);

  ModelCache cache;
  GenerateHooks hooks;
  hooks.cache = &cache;
  EXPECT_EQ(generate(cpu_backend(), with, false, nullptr, &hooks)[0].image.rgb, lora[0].image.rgb);
  EXPECT_EQ(generate(cpu_backend(), request(), false, nullptr, &hooks)[0].image.rgb, plain[0].image.rgb);
  EXPECT_EQ(generate(cpu_backend(), with, false, nullptr, &hooks)[0].image.rgb, lora[0].image.rgb);

  // A wrong LoRA fails before anything runs, naming the file.
  GenerateRequest bad = request();
  const std::string q = (root() / "wrong.safetensors").string();
  write_raw(q, {{"lora_unet_nothing.lora_down.weight", randn({2, 2}, 1, 1.f)}});
  bad.loras.push_back({q, 1.f, false});
  const std::string e = error_of([&] { generate(cpu_backend(), bad, false); });
  EXPECT_NE(e.find(q), std::string::npos) << e;
  EXPECT_NE(e.find("lora_unet_nothing.lora_down.weight"), std::string::npos) << e;
}
