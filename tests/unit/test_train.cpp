// End-to-end trainer: a run interrupted and resumed is bit-identical to a straight run (weights,
// optimizer moments, EMA, data position), repeated resumes add up, NaN is reported without
// touching checkpoints, and generated images depend on their seed only (not on batch size).
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "flow/generate.h"
#include "flow/infotext.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_train_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// 12 tiny images: a coloured square on white, captioned by colour and position.
fs::path make_dataset() {
  static fs::path dir = [] {
    fs::path d = scratch("data");
    const char* colours[] = {"red", "green", "blue"};
    const uint8_t rgb[3][3] = {{220, 30, 30}, {30, 200, 40}, {30, 40, 220}};
    int k = 0;
    for (int c = 0; c < 3; ++c)
      for (int pos = 0; pos < 4; ++pos, ++k) {
        Image im;
        im.width = im.height = 8;
        im.rgb.assign(8 * 8 * 3, 255);
        int x0 = (pos % 2) * 4, y0 = (pos / 2) * 4;
        for (int y = y0; y < y0 + 4; ++y)
          for (int x = x0; x < x0 + 4; ++x)
            for (int ch = 0; ch < 3; ++ch) im.rgb[(y * 8 + x) * 3 + ch] = rgb[c][ch];
        std::string stem = "img" + std::to_string(k);
        save_png((d / (stem + ".png")).string(), im);
        const char* where[] = {"top left", "top right", "bottom left", "bottom right"};
        std::ofstream((d / (stem + ".txt")).string()) << "a " << colours[c] << " square, " << where[pos];
      }
    return d;
  }();
  return dir;
}

TrainConfig tiny_config(const fs::path& out) {
  TrainConfig c;
  c.train_data_dir = make_dataset().string();
  c.output_dir = out.string();
  c.output_name = "tiny";
  c.width = c.height = 8;
  c.model_preset = "tiny";
  c.head_schedule = "uniform";
  c.hidden_size = 32;
  c.num_layers = 2;
  c.ffn_hidden_size = 48;
  c.patch_size = 2;
  c.vocab_size = 40;
  c.t5_d_model = 16;
  c.t5_layers = 1;
  c.t5_heads = 2;
  c.t5_d_kv = 8;
  c.t5_d_ff = 24;
  c.train_batch_size = 4;
  c.gradient_accumulation_steps = 2;
  c.max_train_steps = 6;
  c.learning_rate = 1e-3;
  c.lr_scheduler = "cosine";
  c.lr_warmup_steps = 2;
  c.ema_decay = 0.9f;
  c.caption_dropout_rate = 0.25f;
  c.save_every_n_steps = 2;
  c.save_last_n_steps = 3;
  c.progress = false;
  return c;
}

std::vector<std::string> state_tensors() {
  return {"dit.params", "dit.adam_m", "dit.adam_v", "dit.ema", "t5.params", "t5.adam_m", "t5.adam_v", "t5.ema"};
}

}  // namespace

TEST(Train, ResumeIsBitIdenticalToAStraightRun) {
  fs::path a = scratch("straight"), b = scratch("resumed");
  TrainResult ra = train(tiny_config(a), cpu_backend());
  EXPECT_EQ(ra.steps, 6);
  // Same run, interrupted after 2 and after 2 more steps, resumed each time.
  TrainResult rb = train(tiny_config(b), cpu_backend(), "", 2);
  EXPECT_EQ(rb.steps, 2);
  rb = train(tiny_config(b), cpu_backend(), "latest", 2);
  EXPECT_EQ(rb.steps, 4);
  rb = train(tiny_config(b), cpu_backend(), "latest");
  EXPECT_EQ(rb.steps, 6);
  auto fa = SafetensorsFile::open(ra.state_path), fb = SafetensorsFile::open(rb.state_path);
  for (const auto& n : state_tensors()) {
    ASSERT_TRUE(fa->has(n)) << n;
    Tensor ta = fa->tensor(n), tb = fb->tensor(n);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << n;
    EXPECT_EQ(0, std::memcmp(ta.raw(), tb.raw(), ta.nbytes())) << n << " differs after resume";
  }
  auto sa = nlohmann::json::parse(fa->metadata().at("oboro.train_state"));
  auto sb = nlohmann::json::parse(fb->metadata().at("oboro.train_state"));
  EXPECT_EQ(sa["step"], sb["step"]);
  EXPECT_EQ(sa["epoch"], sb["epoch"]);
  EXPECT_EQ(sa["index"], sb["index"]);
  EXPECT_EQ(sb["samples_seen"], 6 * 4 * 2);  // counters add up across resumes
  // The log has one line per step across all three invocations.
  std::ifstream log((b / "log.jsonl").string());
  int lines = 0;
  for (std::string l; std::getline(log, l);) ++lines;
  EXPECT_EQ(lines, 6);
  // Only the checkpoints of the last 3 steps are kept (steps 4 and 6), plus the loss plot and models.
  EXPECT_FALSE(fs::exists(b / "state" / "step-00000002.safetensors"));
  EXPECT_TRUE(fs::exists(b / "state" / "step-00000004.safetensors"));
  EXPECT_TRUE(fs::exists(b / "loss.svg"));
  EXPECT_TRUE(fs::exists(b / "tiny.safetensors"));
  EXPECT_TRUE(fs::exists(b / "tiny.t5.safetensors"));
}

TEST(Train, GeneratedImagesDependOnTheirSeedOnly) {
  fs::path a = scratch("gen");
  TrainConfig c = tiny_config(a);
  c.max_train_steps = 2;
  TrainResult r = train(c, cpu_backend());
  GenerateRequest rq;
  rq.model = r.model_path;
  rq.prompt = "a red square, top left";
  rq.negative_prompt = "blue";
  rq.steps = 3;
  rq.seed = 100;
  rq.batch_size = 3;
  auto three = generate(cpu_backend(), rq, false);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[1].seed, 101u);
  rq.batch_size = 1;
  rq.seed = 101;
  auto one = generate(cpu_backend(), rq, false);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].image.width, 8);
  int maxdiff = 0;
  for (size_t i = 0; i < one[0].image.rgb.size(); ++i)
    maxdiff = std::max(maxdiff, std::abs((int)one[0].image.rgb[i] - (int)three[1].image.rgb[i]));
  EXPECT_LE(maxdiff, 1) << "image of seed 101 changed with the batch size";
  // Export from the training state: raw weights differ from the EMA model the run wrote, EMA ones match it.
  std::string state = r.state_path;
  export_from_state(cpu_backend(), state, false, (a / "raw.safetensors").string());
  export_from_state(cpu_backend(), state, true, (a / "ema.safetensors").string());
  auto run_model = r.model_path;
  auto ema = SafetensorsFile::open((a / "ema.safetensors").string()), raw = SafetensorsFile::open((a / "raw.safetensors").string()),
       orig = SafetensorsFile::open(run_model);
  Tensor te = ema->tensor("x_embedder.weight"), tr = raw->tensor("x_embedder.weight"), to = orig->tensor("x_embedder.weight");
  EXPECT_EQ(0, std::memcmp(te.raw(), to.raw(), te.nbytes()));
  EXPECT_NE(0, std::memcmp(tr.raw(), to.raw(), tr.nbytes()));
  EXPECT_TRUE(fs::exists(a / "raw.t5.safetensors"));
  rq.model = (a / "raw.safetensors").string();
  EXPECT_EQ(generate(cpu_backend(), rq, false).size(), 1u);
  Infotext it = parse_infotext(one[0].infotext);
  EXPECT_EQ(it.prompt, rq.prompt);
  EXPECT_EQ(it.negative, "blue");
  bool has_seed = false;
  for (auto& [k, v] : it.params) has_seed |= k == "Seed" && v == "101";
  EXPECT_TRUE(has_seed) << one[0].infotext;
  // CLI: a kohya prompt file (comments and blank lines skipped, per-line seed and steps) and one grid
  // of every image of the run.
  {
    std::ofstream pf(a / "prompts.txt");
    pf << "a red square --d 7\n# a comment\n\nblue --d 9 --s 2\n";
  }
  const fs::path cli = a / "cli";
  std::string cmd = std::string(OBORO_BINARY) + " generate --from-file " + (a / "prompts.txt").string() + " -m " +
                    r.model_path + " --steps 2 --batch-size 2 -o " + cli.string() + " --grid " +
                    (cli / "grid.png").string() + " >/dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  for (const char* f : {"00000-7.png", "00001-8.png", "00002-9.png", "00003-10.png", "grid.png"})
    EXPECT_TRUE(fs::exists(cli / f)) << f;
  Image grid = load_image((cli / "grid.png").string());
  EXPECT_EQ(grid.width, 2 * 8 + 3 * 2);  // two columns (images per prompt) of 8 px, 2 px padding around
}

// The config's JSON (a checkpoint's `config`): exactly the settings that shape the weights, and from_json()
// reads back what to_json() wrote. A changed key set changes every checkpoint's bytes.
TEST(Train, ConfigJsonHasItsKeysAndRoundTrips) {
  TrainConfig c;
  c.pretrained_model = "p.safetensors";
  c.model_preset = "small";
  c.head_schedule = "uniform";
  c.hidden_size = 96;
  c.num_layers = 3;
  c.codec = "flux-vae";
  c.vae = "ae.safetensors";
  c.pixels_stride = 4;
  c.text_encoder = "t5";
  c.train_text_encoder = false;
  c.max_token_length = 77;
  c.dataset_config = "ds.toml";
  c.cache_stage = 2;
  c.width = 48;
  c.height = 80;
  c.license_allow = {"MIT", "CC0-1.0"};
  c.require_license = true;
  c.max_train_steps = 1234567890123;
  c.learning_rate = 3.7e-5;
  c.lr_warmup_steps = 0.25;
  c.adam_beta2 = 0.95f;
  c.ema_decay = 0.999f;
  c.seed = 18446744073709551557ull;
  c.mixed_precision = "bf16";
  // Not in the JSON: where and how often the run writes, samples and threads.
  c.output_dir = "elsewhere";
  c.output_name = "other";
  c.save_every_n_steps = 7;
  c.sample_prompts = "prompts.txt";
  c.threads = 3;
  const auto j = nlohmann::json::parse(c.to_json());
  std::vector<std::string> keys;
  for (auto& [k, v] : j.items()) keys.push_back(k);
  const std::vector<std::string> want = {
      "adam_beta1", "adam_beta2", "adam_epsilon", "cache_dir", "cache_stage", "caption_dropout_rate", "codec",
      "dataset_config", "ema_decay", "ffn_hidden_size", "gradient_accumulation_steps", "head_schedule", "height",
      "hidden_size", "learning_rate", "license_allow", "lr_scheduler", "lr_warmup_steps", "manifest",
      "max_grad_norm", "max_token_length", "max_train_steps", "min_lr_ratio", "mixed_precision", "model_preset",
      "network_alpha", "network_args", "network_dim", "network_module", "network_weights", "num_layers", "optimizer_type", "patch_size", "pixels_stride", "pretrained_model", "require_license", "seed",
      "t5_d_ff", "t5_d_kv", "t5_d_model", "t5_heads", "t5_layers", "text_encoder", "timestep_sampling",
      "train_batch_size", "train_data_dir", "train_text_encoder", "vae", "vocab_size", "weight_decay", "width"};
  EXPECT_EQ(keys, want);
  EXPECT_TRUE(j["seed"].is_number_unsigned());
  EXPECT_TRUE(j["max_train_steps"].is_number_integer());
  EXPECT_EQ(j["adam_beta2"].get<double>(), (double)0.95f);  // floats are written as their exact value
  const TrainConfig back = TrainConfig::from_json(j);
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.license_allow, c.license_allow);
  EXPECT_EQ(back.output_dir, TrainConfig().output_dir);  // not in the JSON: the default stays
  EXPECT_EQ(back.threads, 0);
  // Keys an older checkpoint lacks keep their defaults.
  const TrainConfig partial = TrainConfig::from_json(nlohmann::json{{"width", 64}});
  EXPECT_EQ(partial.width, 64);
  EXPECT_EQ(partial.height, 32);
  EXPECT_EQ(partial.to_json(), [] { TrainConfig d; d.width = 64; return d.to_json(); }());
}

TEST(Train, TomlTablesOnlyGroupAndPathsAreRelativeToTheFile) {
  fs::path d = scratch("toml");
  std::ofstream(d / "run.toml") << "seed = 7\nlearning_rate = 1\n[model]\nhidden_size = 64.0\ntrain_text_encoder = false\n"
                                   "[data]\ntrain_data_dir = \"imgs\"\nresolution = \"48,32\"\nlicense_allow = [\"MIT\"]\n"
                                   "sample_prompts = \"/abs/p.txt\"\noutput_dir = \"../out\"\n";
  const TrainConfig c = TrainConfig::from_toml((d / "run.toml").string());
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.learning_rate, 1.0);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_FALSE(c.train_text_encoder);
  EXPECT_EQ(c.train_data_dir, (d / "imgs").string());
  EXPECT_EQ(c.width, 48);
  EXPECT_EQ(c.height, 32);
  EXPECT_EQ(c.license_allow, std::vector<std::string>{"MIT"});
  EXPECT_EQ(c.sample_prompts, "/abs/p.txt");
  EXPECT_EQ(c.output_dir, (d.parent_path() / "out").string());
  std::ofstream(d / "run.toml") << "resolution = 64\n";
  const TrainConfig square = TrainConfig::from_toml((d / "run.toml").string());
  EXPECT_EQ(square.width, 64);
  EXPECT_EQ(square.height, 64);
}

TEST(Train, BadConfigsAreClearErrors) {
  fs::path d = scratch("badcfg");
  fs::path p = d / "run.toml";
  std::ofstream(p.string()) << "learning_rat = 1e-4\ntrain_data_dir = \"x\"\n";
  try {
    TrainConfig::from_toml(p.string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("learning_rat"), std::string::npos) << e.what();
  }
  std::ofstream(p.string()) << "learning_rate = \"fast\"\n";
  EXPECT_THROW(TrainConfig::from_toml(p.string()), Error);
  std::ofstream(p.string()) << "learning_rate = [\n";
  try {
    TrainConfig::from_toml(p.string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run.toml:"), std::string::npos) << e.what();
  }
  TrainConfig c = tiny_config(d / "out");
  c.lr_scheduler = "exponential";
  EXPECT_THROW(train(c, cpu_backend()), Error);
  for (const char* mp : {"fp16", "bf17"}) {
    TrainConfig m = tiny_config(d / "out");
    m.mixed_precision = mp;
    try {
      train(m, cpu_backend());
      FAIL() << "no error for mixed_precision " << mp;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();  // names the fix
    }
  }
}

// mixed_precision = "bf16": the run resumes bit-identically, gives the same bits for 1 and 2 threads, and its
// weights stay within BF16 rounding distance of the F32 run's (not equal to them: the GEMMs really ran in BF16).
TEST(Train, MixedPrecisionBf16IsExactOnResumeAndCloseToF32) {
  auto cfg = [](const fs::path& out, const char* mp, int threads) {
    TrainConfig c = tiny_config(out);
    c.mixed_precision = mp;
    c.threads = threads;
    return c;
  };
  fs::path a = scratch("bf16_straight"), b = scratch("bf16_resumed"), t1 = scratch("bf16_1thread"),
           f = scratch("f32_ref");
  const int saved_threads = num_threads();
  TrainResult ra = train(cfg(a, "bf16", 2), cpu_backend());
  train(cfg(b, "bf16", 2), cpu_backend(), "", 3);
  TrainResult rb = train(cfg(b, "bf16", 2), cpu_backend(), "latest");
  TrainResult r1 = train(cfg(t1, "bf16", 1), cpu_backend());
  TrainResult rf = train(cfg(f, "no", 2), cpu_backend());
  set_num_threads(saved_threads);
  ASSERT_EQ(rb.steps, 6);
  auto fa = SafetensorsFile::open(ra.state_path), fb = SafetensorsFile::open(rb.state_path),
       f1 = SafetensorsFile::open(r1.state_path), ff = SafetensorsFile::open(rf.state_path);
  for (const auto& n : state_tensors()) {
    Tensor ta = fa->tensor(n), tb = fb->tensor(n), t1t = f1->tensor(n);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << n;
    EXPECT_EQ(0, std::memcmp(ta.raw(), tb.raw(), ta.nbytes())) << n << " differs after resume (bf16)";
    EXPECT_EQ(0, std::memcmp(ta.raw(), t1t.raw(), ta.nbytes())) << n << " differs between 1 and 2 threads (bf16)";
  }
  for (const char* n : {"dit.params", "t5.params"}) {
    Tensor ta = fa->tensor(n), tf = ff->tensor(n);
    const float *x = ta.data<float>(), *y = tf.data<float>();
    double num = 0, den = 0;
    for (int64_t i = 0; i < ta.numel(); ++i) {
      num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
      den += (double)y[i] * y[i];
    }
    const double rel = std::sqrt(num / den);
    EXPECT_GT(rel, 0.0) << n << ": the bf16 run is bitwise the F32 run";
    EXPECT_LT(rel, 1e-2) << n;
  }
  auto sa = nlohmann::json::parse(fa->metadata().at("oboro.train_state"));
  EXPECT_EQ(sa["config"]["mixed_precision"], "bf16");
}

TEST(Train, NanLossStopsWithoutCorruptingCheckpoints) {
  fs::path a = scratch("nan");
  TrainConfig c = tiny_config(a);
  c.max_train_steps = 2;
  TrainResult r = train(c, cpu_backend());
  std::string before;
  {
    std::ifstream f(r.state_path, std::ios::binary);
    before.assign(std::istreambuf_iterator<char>(f), {});
  }
  c.max_train_steps = 4;
  c.learning_rate = 1e30;  // diverges at once
  c.max_grad_norm = 0;
  try {
    train(c, cpu_backend(), "latest");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("step "), std::string::npos) << m;
    EXPECT_NE(m.find("no checkpoint was written"), std::string::npos) << m;
    // The advice names the checkpoint that exists (issue 21: never one that does not).
    EXPECT_NE(m.find("resume from the last saved checkpoint, " + latest_state(state_dir(c))), std::string::npos) << m;
  }
  std::ifstream f(r.state_path, std::ios::binary);
  std::string after(std::istreambuf_iterator<char>(f), {});
  EXPECT_EQ(before, after);
  // A run that diverges before its first checkpoint: nothing to resume, so the advice is to start again.
  TrainConfig fresh = tiny_config(scratch("nan_fresh"));
  fresh.learning_rate = 1e30;
  fresh.max_grad_norm = 0;
  fresh.max_train_steps = 3;
  try {
    train(fresh, cpu_backend());
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("start again (no checkpoint was saved yet"), std::string::npos) << m;
    EXPECT_EQ(m.find("--resume latest"), std::string::npos) << m;
  }
}
