// Low-precision weights in the models: DiT/T5 converted in memory, `convert_weights` files (layout, metadata, what
// stays F32), loading with a type, the quality guard at tiny size, and the training refusal.
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/convert_weights.h"
#include "models/dit.h"
#include "models/format_quality.h"
#include "models/params.h"
#include "models/t5.h"
#include "op_test_util.h"
#include <gtest/gtest.h>
#include <unistd.h>
#include <sys/wait.h>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>

namespace oboro {
namespace {

namespace fs = std::filesystem;
using test::Vec;

std::string tmp(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_formats_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / name).string();
}

const WFormat kLow[] = {WFormat::BF16, WFormat::F16, WFormat::F8, WFormat::Q8_0};

DiTConfig tiny_dit() {
  DiTConfig c = DiTConfig::preset("tiny", 64);
  c.latent_channels = 4;
  return c;
}

Vec dit_forward(DiT& m, int B, int L, int h, int w) {
  const DiTConfig& c = m.config();
  Vec x = test::randn((size_t)B * c.latent_channels * h * w, 1), txt = test::randn((size_t)B * L * c.text_dim, 2);
  Vec t(B, 0.4f), mask((size_t)B * L, 1.f), v(x.size());
  m.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
  return v;
}

// The quality guard at tiny size with random weights (every layer non-zero, adaLN included: a worst case, each
// block's output is as large as the stream). Bounds are the measured values with a margin; the target for q8_0
// and f8 is 2%. f8 (E4M3, 3 mantissa bits) has a relative rounding error of up to 1/16 per weight whatever its scale,
// about 2.5% rms per Linear, and misses the target here (measured 6.3%); see docs/formats.md.
TEST(FormatModels, DiTVelocityErrorPerFormat) {
  DiT ref(tiny_dit(), cpu_backend());
  ref.init_random_all(3);
  auto res = dit_format_quality(ref, {WFormat::BF16, WFormat::F16, WFormat::F8, WFormat::Q8_0}, 2, 5, 8, 12, 1, false);
  ASSERT_EQ(res.size(), 5u);
  EXPECT_EQ(res[0].fmt, WFormat::F32);
  for (const auto& r : res) {
    std::printf("  %-5s rel err %.3e, weights %zu bytes\n", wformat_name(r.fmt), r.rel_err, r.weight_bytes);
    switch (r.fmt) {
      case WFormat::F32: EXPECT_EQ(r.rel_err, 0.0); break;
      // Every low format also runs the attention in BF16 (AttnPrecision::BF16), which dominates f16's error:
      // f16 measured 4.8e-4 with F32 attention, 1.98e-3 with BF16 attention; bf16 5.2e-3 → 5.4e-3.
      case WFormat::F16: EXPECT_LT(r.rel_err, 3e-3); break;
      case WFormat::BF16: EXPECT_LT(r.rel_err, 2e-2); break;
      case WFormat::Q8_0: EXPECT_LT(r.rel_err, 2.5e-2); break;  // measured 2.03e-2 (1.98e-2 with F32 attention)
      case WFormat::F8: EXPECT_LT(r.rel_err, 8e-2); break;      // measured 6.3e-2
    }
    EXPECT_GT(r.rel_err, r.fmt == WFormat::F32 ? -1.0 : 0.0) << "a format identical to F32 hides a bug";
  }
  // memory: every low format stores the big weights in fewer bytes
  for (size_t i = 1; i < res.size(); ++i) EXPECT_LT(res[i].weight_bytes, res[0].weight_bytes);
}

TEST(FormatModels, DiTConvertFileLoadAndTypes) {
  DiT ref(tiny_dit(), cpu_backend());
  ref.init_random_all(4);
  const std::string f32 = tmp("dit_f32.safetensors");
  ref.save(f32);
  const Vec v32 = dit_forward(ref, 2, 3, 4, 6);
  for (WFormat f : kLow) {
    const std::string out = tmp(std::string("dit_") + wformat_name(f) + ".safetensors");
    ConvertStats st = convert_weights(f32, out, f);
    EXPECT_EQ(st.kind, "dit");
    EXPECT_EQ(st.quantized, 6 * ref.config().layers());
    auto file = SafetensorsFile::open(out);
    EXPECT_EQ(file->metadata().at(kWeightFormatKey), wformat_name(f));
    EXPECT_TRUE(file->metadata().count("oboro.config"));
    for (const auto& ti : file->tensors()) {
      const bool scale = ti.name.size() > 6 && ti.name.compare(ti.name.size() - 6, 6, "_scale") == 0;
      const std::string base = scale ? ti.name.substr(0, ti.name.size() - 6) : ti.name;
      if (!dit_quantizable(base)) {
        EXPECT_FALSE(scale) << ti.name;
        EXPECT_EQ(ti.dtype, DType::F32) << ti.name << ": norms, biases, embedders, final layer stay F32";
      } else if (scale) {
        EXPECT_EQ(ti.dtype, DType::F32);
      } else {
        EXPECT_EQ(ti.dtype, wformat_dtype(f)) << ti.name;
      }
    }
    // load as stored == converted in memory (same quantisation of the same F32 weights), bit for bit
    auto loaded = DiT::load(out, cpu_backend());
    EXPECT_EQ(loaded->weight_format(), f);
    auto conv = ref.converted(f);
    EXPECT_TRUE(test::bitwise_equal(dit_forward(*loaded, 2, 3, 4, 6), dit_forward(*conv, 2, 3, 4, 6))) << wformat_name(f);
    // load-time conversion of the F32 file == the converted file
    auto at_load = DiT::load(f32, cpu_backend(), f);
    EXPECT_TRUE(test::bitwise_equal(dit_forward(*at_load, 2, 3, 4, 6), dit_forward(*loaded, 2, 3, 4, 6)));
    // a low-precision file read back as F32 is the dequantised model
    auto back = DiT::load(out, cpu_backend(), WFormat::F32);
    EXPECT_EQ(back->weight_format(), WFormat::F32);
    EXPECT_LT(test::rel_err(dit_forward(*back, 2, 3, 4, 6), v32), f == WFormat::F8 ? 0.1 : 3e-2);
    // inference only
    try {
      loaded->grads();
      FAIL() << "a " << wformat_name(f) << " model must refuse to train";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("F32"), std::string::npos) << e.what();
    }
    EXPECT_THROW(loaded->save(tmp("nope.safetensors")), Error);
  }
  // converting an F32 model to f32 keeps it bit for bit
  const std::string same = tmp("dit_same.safetensors");
  convert_weights(f32, same, WFormat::F32);
  auto s = DiT::load(same, cpu_backend());
  EXPECT_TRUE(test::bitwise_equal(dit_forward(*s, 2, 3, 4, 6), v32));
}

T5Config t5_cfg() {
  T5Config c;
  c.vocab_size = 40;
  c.d_model = 64;
  c.d_kv = 16;
  c.num_heads = 4;
  c.d_ff = 96;
  c.num_layers = 2;
  return c;
}

Vec t5_forward(T5Encoder& m) {
  std::vector<int32_t> ids = {3, 7, 1, 9, 1, 0};
  Vec mask = {1, 1, 1, 1, 1, 0}, out((size_t)6 * m.config().d_model);
  m.forward(out.data(), ids.data(), mask.data(), 2, 3, false);
  return out;
}

TEST(FormatModels, T5ConvertLoadAndError) {
  T5Encoder ref(t5_cfg(), cpu_backend());
  ref.init_weights(5);
  const Vec v32 = t5_forward(ref);
  const std::string f32 = tmp("t5_f32.safetensors");
  ref.save(f32);
  for (WFormat f : kLow) {
    const std::string out = tmp(std::string("t5_") + wformat_name(f) + ".safetensors");
    ConvertStats st = convert_weights(f32, out, f);
    EXPECT_EQ(st.kind, "t5");
    EXPECT_EQ(st.quantized, 7 * 2);
    auto file = SafetensorsFile::open(out);
    EXPECT_EQ(file->info("shared.weight").dtype, DType::F32);
    EXPECT_EQ(file->info("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").dtype, DType::F32);
    EXPECT_EQ(file->info("encoder.block.1.layer.1.DenseReluDense.wo.weight").dtype, wformat_dtype(f));
    auto m = T5Encoder::load(out, cpu_backend());
    EXPECT_EQ(m->weight_format(), f);
    const double e = test::rel_err(t5_forward(*m), v32);
    std::printf("  T5 %-5s rel err %.3e\n", wformat_name(f), e);
    EXPECT_LT(e, f == WFormat::F16 ? 1e-3 : f == WFormat::F8 ? 8e-2 : 3e-2) << wformat_name(f);  // f8 measured 4.6e-2
    EXPECT_GT(e, 0.0);
    auto at_load = T5Encoder::load(f32, cpu_backend(), f);
    EXPECT_TRUE(test::bitwise_equal(t5_forward(*at_load), t5_forward(*m)));
    EXPECT_THROW(m->grads(), Error);
  }
  // a T5 whose K is not a multiple of 32 cannot be q8_0: one error naming the tensor
  T5Config odd = t5_cfg();
  odd.d_model = 48;
  T5Encoder o(odd, cpu_backend());
  o.init_weights(1);
  const std::string of = tmp("t5_odd.safetensors");
  o.save(of);
  try {
    convert_weights(of, tmp("t5_odd_q8.safetensors"), WFormat::Q8_0);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("multiple of 32"), std::string::npos) << msg;
    EXPECT_NE(msg.find("SelfAttention.k.weight"), std::string::npos) << msg;
  }
}

// An HF-style T5 checkpoint (no oboro metadata, decoder tensors, `encoder.embed_tokens.weight` only, BF16):
// convert infers and records the config, drops the decoder, renames the embedding, keeps it F32.
TEST(FormatModels, T5HuggingFaceStyleConvert) {
  T5Encoder ref(t5_cfg(), cpu_backend());
  ref.init_weights(6);
  auto host = download_params(ref.layout(), ref.params(), cpu_backend());
  std::deque<Tensor> keep;
  SafetensorsWriter wr;
  for (auto& [n, t] : host) {
    Tensor b = Tensor::empty(t.shape(), DType::BF16);
    convert_from_f32(t.f32(), DType::BF16, (size_t)t.numel(), b.raw());
    keep.push_back(b);
    wr.add(n == "shared.weight" ? "encoder.embed_tokens.weight" : n, keep.back());
  }
  keep.push_back(Tensor::from_f32({1.f, 2.f, 3.f, 4.f}, {2, 2}));
  wr.add("decoder.block.0.layer.0.SelfAttention.q.weight", keep.back());
  const std::string in = tmp("hf_t5.safetensors"), out = tmp("hf_t5_q8.safetensors");
  wr.write(in);
  ConvertStats st = convert_weights(in, out, WFormat::Q8_0);
  EXPECT_EQ(st.kind, "t5");
  auto file = SafetensorsFile::open(out);
  EXPECT_TRUE(file->has("shared.weight"));
  EXPECT_FALSE(file->has("encoder.embed_tokens.weight"));
  EXPECT_FALSE(file->has("decoder.block.0.layer.0.SelfAttention.q.weight"));
  EXPECT_EQ(file->info("shared.weight").dtype, DType::F32);
  EXPECT_TRUE(file->metadata().count("oboro.t5_config"));
  auto m = T5Encoder::load(out, cpu_backend());
  EXPECT_EQ(m->weight_format(), WFormat::Q8_0);
  EXPECT_LT(test::rel_err(t5_forward(*m), t5_forward(ref)), 3e-2);
}

TEST(FormatModels, CliConvertErrors) {
  auto run = [](const std::string& args, std::string* err) {
    const std::string e = tmp("cli_err.txt");
    int st = std::system((std::string(OBORO_BINARY) + " " + args + " >/dev/null 2>" + e).c_str());
    std::ifstream f(e);
    *err = std::string(std::istreambuf_iterator<char>(f), {});
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  std::string err;
  EXPECT_NE(run("convert --type q4_k a.safetensors b.safetensors", &err), 0);
  EXPECT_NE(err.find("valid types are f32, bf16, f16, f8, q8_0"), std::string::npos) << err;
  EXPECT_NE(run("convert a.safetensors b.safetensors", &err), 0);
  EXPECT_NE(err.find("--type"), std::string::npos) << err;
  DiT d(tiny_dit(), cpu_backend());
  d.init_random_all(1);
  const std::string in = tmp("cli_dit.safetensors"), out = tmp("cli_dit_q8.safetensors");
  d.save(in);
  EXPECT_EQ(run("convert --type q8_0 " + in + " " + out, &err), 0) << err;
  EXPECT_EQ(DiT::load(out, cpu_backend())->weight_format(), WFormat::Q8_0);
}

TEST(FormatModels, NotAModelFile) {
  SafetensorsWriter wr;
  Tensor t = Tensor::from_f32({1.f, 2.f}, {2});
  wr.add("foo", t);
  const std::string p = tmp("foo.safetensors");
  wr.write(p);
  EXPECT_THROW(convert_weights(p, tmp("foo_q8.safetensors"), WFormat::Q8_0), Error);
}

}  // namespace
}  // namespace oboro
