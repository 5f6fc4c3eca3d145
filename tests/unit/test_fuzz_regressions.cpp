// Regression tests for what the libFuzzer harnesses (fuzz/, scripts/fuzz.sh, docs/reliability.md "Fuzzing")
// found: each feeds the minimised reproducer to the parser and expects the fixed behaviour or a clear
// oboro::Error. The raw reproducers are in fuzz/regressions/<harness>/ (every fuzz run replays them).
#include "data/provenance.h"
#include "serve/request.h"
#include "lora/lora_file.h"
#include "merge/merge_math.h"
#include "flow/lora_apply.h"
#include "flow/infotext.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "train/trainer.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

using namespace oboro;
using oboro::test::error_of;

// fuzz_infotext: a parameter value that opens a quote and never closes it (or ends in a backslash) made
// parse_infotext index past the end of the line: std::out_of_range from std::string::compare.
TEST(FuzzRegressions, InfotextUnterminatedQuotedValue) {
  Infotext a;
  EXPECT_NO_THROW(a = parse_infotext("p\nK: \""));
  EXPECT_EQ(a.prompt, "p");
  ASSERT_EQ(a.params.size(), 1u);
  EXPECT_EQ(a.params[0].first, "K");
  EXPECT_EQ(a.params[0].second, "\"");

  Infotext b;
  EXPECT_NO_THROW(b = parse_infotext("p\nSteps: 2, K: \"ab\\"));
  ASSERT_EQ(b.params.size(), 2u);
  EXPECT_EQ(b.params[0].second, "2");
  EXPECT_EQ(b.params[1].first, "K");
  EXPECT_EQ(b.params[1].second, "\"ab\\");
}

// fuzz_infotext: a value holding ',' or ':' is JSON-quoted; with invalid UTF-8 in it (read from a hostile PNG,
// or a non-UTF-8 model file name) format_infotext threw the JSON library's type_error 316. Invalid bytes now
// become U+FFFD, as the PNG writer does.
TEST(FuzzRegressions, InfotextFormatInvalidUtf8) {
  std::string s;
  EXPECT_NO_THROW(s = format_infotext("p", "", {{"K", "a:\xff"}, {"Model", "x,\xc3"}}));
  EXPECT_EQ(s, "p\nK: \"a:\xef\xbf\xbd\", Model: \"x,\xef\xbf\xbd\"");
  const Infotext back = parse_infotext(s);
  ASSERT_EQ(back.params.size(), 2u);
  EXPECT_EQ(back.params[0].second, "a:\xef\xbf\xbd");
  EXPECT_EQ(back.params[1].second, "x,\xef\xbf\xbd");
  // The fuzzer's input: infotext with an invalid byte in a value that is then written again.
  const Infotext it = parse_infotext("blue\nNegr: Euler,D>h\xb3\x10\xda\xe9\xc4le: 6.5, Seed: 4");
  EXPECT_NO_THROW(format_infotext(it.prompt, it.negative, it.params));
}

// fuzz_png_text: a 2 KB PNG whose second tEXt chunk declares 1,934,772,034 bytes made libpng allocate that much
// (it only warns that the chunk is over its limit) before failing on the missing bytes: out of memory under
// the fuzzer's 2 GB limit. A chunk longer than the rest of the file is now refused before libpng runs.
TEST(FuzzRegressions, PngChunkLongerThanTheFile) {
  Image px;
  px.width = px.height = 2;
  px.rgb.assign(12, 100);
  const std::string head = encode_png(px).substr(0, 33);  // signature + IHDR
  // Length field "sRGB" (a dictionary word the fuzzer put there) = 0x73524742 = 1934772034.
  const std::string png = head + "sRGBtEXt" + std::string("oboro_request\0{\"c", 17) + std::string(64, 'x');
  for (const std::string& e : {error_of([&] { read_png_text_bytes(png, "huge.png"); }),
                               error_of([&] { decode_image(png, "huge.png"); })}) {
    EXPECT_NE(e.find("huge.png: corrupt PNG (the file is truncated): chunk tEXt at byte 33 declares 1934772034 bytes"),
              std::string::npos)
        << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  // A whole PNG still reads; one cut inside its last chunk says where.
  const std::string ok = encode_png(px, {{"parameters", "a cat\nSteps: 2"}});
  EXPECT_EQ(read_png_text_bytes(ok, "ok.png").size(), 1u);
  const std::string e = error_of([&] { decode_image(ok.substr(0, ok.size() - 20), "cut.png"); });
  EXPECT_NE(e.find("cut.png: corrupt PNG (the file is truncated): chunk IDAT"), std::string::npos) << e;
}

// fuzz_manifest_jsonl: `oboro.dataset` metadata (read by `oboro info` from any model file) with a float count
// was cast to size_t: undefined behaviour for 1e300; a negative count wrapped around.
TEST(FuzzRegressions, DatasetSummaryCountsMustBeNonNegativeIntegers) {
  auto with = [](const std::string& images, const std::string& licenses) {
    return "{\"digest\":\"sha256:00\",\"images\":" + images + ",\"licenses\":" + licenses +
           ",\"sources\":{},\"attribution\":[]}";
  };
  EXPECT_EQ(DatasetSummary::from_json(with("2", "{\"MIT\":2}")).images, 2u);
  std::string e = error_of([&] { DatasetSummary::from_json(with("1e300", "{}")); });
  EXPECT_NE(e.find("oboro.dataset: \"images\" must be a non-negative integer, got 1e+300"), std::string::npos) << e;
  e = error_of([&] { DatasetSummary::from_json(with("-1", "{}")); });
  EXPECT_NE(e.find("\"images\" must be a non-negative integer, got -1"), std::string::npos) << e;
  e = error_of([&] { DatasetSummary::from_json(with("1", "{\"MIT\":2.5}")); });
  EXPECT_NE(e.find("the count of licence MIT must be a non-negative integer"), std::string::npos) << e;
  e = error_of([&] { DatasetSummary::from_json(with("1", "5")); });
  EXPECT_NE(e.find("\"licenses\" must be an object of counts"), std::string::npos) << e;
}

// fuzz_train_toml (seen while writing the harness, confirmed by it under UBSan): an integer setting given as a
// float outside the integer's range (hidden_size = 1e10, seed = -1.0) is converted with a C cast in
// TrainConfig::from_toml: undefined behaviour, and 2.5 silently became 2. Fixed in src/train/train_config.cpp
// (read_toml_value): integer settings take integral values in their type's range, real settings finite ones.
TEST(FuzzRegressions, TrainTomlIntegerKeyGivenAFloat) {
  const auto dir = oboro::test::process_tmpdir("fuzz_regressions");
  for (const char* text : {"hidden_size = 1e10\n", "seed = -1.0\n", "train_batch_size = 2.5\n", "threads = nan\n"}) {
    const std::string path = (dir / "run.toml").string();
    std::ofstream(path) << text;
    const std::string e = error_of([&] { TrainConfig::from_toml(path); });
    EXPECT_NE(e.find(path), std::string::npos) << text << ": " << e;
    EXPECT_NE(e.find("integer"), std::string::npos) << text << ": " << e;
  }
}

// fuzz_serve_request (in its first hour, 4,770 executions): a body with invalid UTF-8 whose last key holds NUL
// (`{"\u0000>>…":-5,"w\xff…`) was refused with a RequestError whose message began with that key: the C string
// what() was empty, and a key holding a newline made it two lines. Fixed in src/serve/request.cpp (parse_body): the
// key is shown JSON-quoted when it holds a control character, and names the field only when it is valid UTF-8.
TEST(FuzzRegressions, ServeBodyWithInvalidUtf8AfterAKeyHoldingNul) {
  for (const std::string& body : {std::string("{\"\\u0000ab\":-5,\"w\xff\xff\":0}"),
                                  std::string("{\"a\\nb\":\"x\xff\"}"), std::string("{\"prompt\":\"caf\xe9\"}")}) {
    try {
      oboro::serve::parse_body(body);
      ADD_FAILURE() << "accepted: " << body;
    } catch (const oboro::serve::RequestError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.status, 422) << msg;
      EXPECT_FALSE(msg.empty());
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find("not valid UTF-8"), std::string::npos) << msg;
    }
  }
  try {
    oboro::serve::parse_body("{\"prompt\":\"caf\xe9\"}");
  } catch (const oboro::serve::RequestError& e) {
    EXPECT_EQ(e.field, "prompt");
  }
}

// fuzz_lora (in its first 76 executions): a LoRA whose down and up halves are finite but whose product scale·up·down
// overflows float32 was accepted; generating with it, or baking it with `oboro merge --lora`, turned the model's
// weights into inf. Fixed in src/lora/lora_file.cpp (lora_delta): an overflowing ΔW is an error naming the key.
TEST(FuzzRegressions, LoraDeltaThatOverflowsIsRefused) {
  oboro::lora::LoraModule m;
  m.tensor = "layers.0.attention.qkv.weight";
  m.key = "lora_unet_layers_0_attention_qkv.lora_down.weight";
  m.down = Tensor::from_f32({3e38f, 1.f}, {1, 2});
  m.up = Tensor::from_f32({1.f, 10.f}, {2, 1});
  m.scale = 1.f;
  const std::string e = error_of([&] { oboro::lora::lora_delta(m); });
  EXPECT_NE(e.find("lora_unet_layers_0_attention_qkv.lora_down.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("overflows float32"), std::string::npos) << e;
  m.up = Tensor::from_f32({1.f, 0.5f}, {2, 1});
  EXPECT_EQ(oboro::lora::lora_delta(m)[2], 1.5e38f);
}

// fuzz_lora (after 293 executions): a --block-weights spec holding a newline was echoed verbatim in its error, a
// two-line message. Fixed in src/merge/merge_math.cpp (BlockWeights): control characters are shown as '?'.
TEST(FuzzRegressions, BlockWeightsErrorIsOneLine) {
  const std::string e = error_of([] { oboro::merge::BlockWeights("style:1.5\nembedders:0.5", 4); });
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_NE(e.find("has no '='"), std::string::npos) << e;
}

// fuzz_lora (after 2,368 executions): a prompt whose <lora:…> tag spans a newline (prompts may have several lines) was
// echoed verbatim in the error, a two-line message. Fixed in src/flow/lora_apply.cpp: the echoed tag is one line.
TEST(FuzzRegressions, PromptLoraTagErrorIsOneLine) {
  std::vector<oboro::LoraRequest> found;
  const std::string e = error_of([&] { oboro::strip_prompt_loras("a cat <lora::5,\nx:0>", found); });
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_NE(e.find("names no LoRA"), std::string::npos) << e;
}

// fuzz_safetensors_sharded (after 102,369 executions of its campaign): an index whose weight_map names a shard with
// a newline in its file name ("model-00001-of-00003.safet\nsors"): the error naming the shard's path (not found)
// was two lines. Fixed in src/io/safetensors.cpp (shard_name_ok): a shard name with a control character is refused
// where the index is read, in one line.
TEST(FuzzRegressions, ShardNameWithANewlineIsRefusedInOneLine) {
  const std::filesystem::path dir = oboro::test::process_tmpdir("oboro_fuzzreg") / "sharded";
  std::filesystem::create_directories(dir);
  const std::string index = (dir / "model.safetensors.index.json").string();
  std::ofstream(index) << R"({"weight_map": {"bos_embedder.mlp.0.bias": "model-00001-of-00003.safet\nsors"}})";
  for (const std::string& e : {error_of([&] { TensorSource::open(index); }),
                               error_of([&] { TensorSource::open(dir.string()); })}) {
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_NE(e.find("no control characters"), std::string::npos) << e;
    EXPECT_NE(e.find("model.safetensors.index.json"), std::string::npos) << e;
  }
}
