// The training run's folder and saves (issue 21): a resume at the final step re-exports the model files, a new
// run does not write over a finished one (unless --overwrite), two runs cannot share a folder, a resume with
// changed model settings or an out-of-range data position is a clear error, stale temp files of dead processes
// are removed (and only those), a run larger than memory is refused by the plan and, forced under a small
// address-space limit, ends with an out-of-memory message instead of a crash.
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include "test_util.h"
#include "train/run_folder.h"
#include "train/train_memory.h"
#include "train/trainer.h"
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

using namespace oboro;
using oboro::test::dead_pid;
using oboro::test::error_of;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = oboro::test::process_tmpdir("oboro_runfolder") / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// 6 tiny images with captions.
fs::path dataset() {
  static fs::path d = [] {
    fs::path dir = scratch("data");
    for (int k = 0; k < 6; ++k) {
      Image im;
      im.width = im.height = 8;
      im.rgb.assign(8 * 8 * 3, (uint8_t)(40 * k));
      const std::string stem = std::string(1, 'i').append(std::to_string(k));
      save_png((dir / (stem + ".png")).string(), im);
      std::ofstream(dir / (stem + ".txt")) << "a square number " << k;
    }
    return dir;
  }();
  return d;
}

TrainConfig tiny(const fs::path& out) {
  TrainConfig c;
  c.train_data_dir = dataset().string();
  c.output_dir = out.string();
  c.output_name = "tiny";
  c.width = c.height = 8;
  c.head_schedule = "uniform";
  c.hidden_size = 32;
  c.num_layers = 1;
  c.ffn_hidden_size = 32;
  c.vocab_size = 30;
  c.t5_d_model = 16;
  c.t5_layers = 1;
  c.t5_heads = 2;
  c.t5_d_kv = 8;
  c.t5_d_ff = 16;
  c.train_batch_size = 2;
  c.max_train_steps = 4;
  c.save_every_n_steps = 2;
  c.ema_decay = 0.9f;
  c.threads = 1;
  c.progress = false;
  return c;
}

int count_lines(const fs::path& p) {
  std::ifstream f(p);
  int n = 0;
  for (std::string l; std::getline(f, l);) ++n;
  return n;
}

// A process id that is certainly not alive: a child that has exited and been reaped.
}  // namespace

TEST(RunFolder, ResumeAtTheFinalStepWritesTheModelFilesAgain) {
  // The bug of issue 21: killed after the final checkpoint but inside the export, `--resume latest` exited 0
  // and left an older model. Now the resume at the end exports from the final checkpoint again.
  fs::path out = scratch("final");
  TrainConfig c = tiny(out);
  TrainResult r = train(c, cpu_backend());
  const std::string model = slurp(r.model_path), te = slurp(r.text_encoder_path);
  std::ofstream(r.model_path, std::ios::trunc) << "half an export";
  fs::remove(r.text_encoder_path);
  TrainResult again = train(c, cpu_backend(), "latest");
  EXPECT_EQ(again.steps, 4);
  EXPECT_EQ(slurp(again.model_path), model) << "the model file is the final step's";
  EXPECT_EQ(slurp(again.text_encoder_path), te);
  EXPECT_EQ(count_lines(out / "log.jsonl"), 4) << "one log record per step";
}

TEST(RunFolder, ANewRunDoesNotOverwriteAnEarlierOneUnlessAsked) {
  fs::path out = scratch("earlier");
  TrainConfig c = tiny(out);
  c.max_train_steps = 2;
  train(c, cpu_backend());
  const std::string model = slurp(out / "tiny.safetensors");
  std::string e = error_of([&] { train(c, cpu_backend()); });
  EXPECT_TRUE(has(e, out.string() + ": holds an earlier run (tiny.safetensors")) << e;
  EXPECT_TRUE(has(e, "--resume latest")) << e;
  EXPECT_TRUE(has(e, "--overwrite")) << e;
  EXPECT_EQ(slurp(out / "tiny.safetensors"), model) << "the earlier model is untouched";
  EXPECT_EQ(count_lines(out / "log.jsonl"), 2);
  // Asked: the earlier run's files go, the new run starts a new log.
  c.overwrite = true;
  c.max_train_steps = 4;
  c.seed = 9;
  train(c, cpu_backend());
  EXPECT_EQ(count_lines(out / "log.jsonl"), 4);
  EXPECT_NE(slurp(out / "tiny.safetensors"), model);
  EXPECT_TRUE(fs::exists(out / "state" / "step-00000004.safetensors"));
}

TEST(RunFolder, TwoRunsCannotShareAnOutputFolder) {
  fs::path out = scratch("locked");
  TrainConfig c = tiny(out);
  RunFolder holder(c, false);  // another run holds the folder (a second open file description: flock conflicts)
  std::string e = error_of([&] { train(c, cpu_backend()); });
  EXPECT_TRUE(has(e, out.string() + ": another oboro run (PID " + std::to_string(::getpid()) + ")")) << e;
  EXPECT_TRUE(has(e, "another output_dir")) << e;
  EXPECT_FALSE(fs::exists(out / "log.jsonl")) << "the refused run wrote nothing";
}

TEST(RunFolder, ResumeWithChangedModelSettingsIsRefused) {
  fs::path out = scratch("changed");
  TrainConfig c = tiny(out);
  train(c, cpu_backend(), "", 2);
  TrainConfig wider = c;
  wider.hidden_size = 64;
  std::string e = error_of([&] { train(wider, cpu_backend(), "latest"); });
  EXPECT_TRUE(has(e, "--resume: the config sets hidden_size = 64 but the checkpoint ")) << e;
  EXPECT_TRUE(has(e, "was trained with hidden_size = 32")) << e;
  TrainConfig no_ema = c;
  no_ema.ema_decay = 0;
  e = error_of([&] { train(no_ema, cpu_backend(), "latest"); });
  EXPECT_TRUE(has(e, "turns off the EMA")) << e;
  TrainConfig more_steps = c;  // not a model setting: resuming with it is fine
  more_steps.max_train_steps = 6;
  EXPECT_EQ(train(more_steps, cpu_backend(), "latest").steps, 6);
}

TEST(RunFolder, AnOutOfRangeDataPositionIsAClearError) {
  fs::path out = scratch("position");
  TrainConfig c = tiny(out);
  train(c, cpu_backend(), "", 2);
  // The checkpoint, with its data position moved beyond the 6 images (it segfaulted before).
  const std::string ck = (out / "state" / "step-00000002.safetensors").string();
  auto f = SafetensorsFile::open(ck);
  SafetensorsWriter w;
  std::vector<Tensor> keep;
  for (const auto& ti : f->tensors()) keep.push_back(f->tensor(ti.name)), w.add(ti.name, keep.back());
  for (const auto& [k, v] : f->metadata()) {
    if (k != "oboro.train_state") {
      w.set_metadata(k, v);
      continue;
    }
    json st = json::parse(v);
    st["index"] = 999;
    w.set_metadata(k, st.dump());
  }
  const std::string moved = (out / "moved.safetensors").string();
  w.write(moved);
  std::string e = error_of([&] { train(c, cpu_backend(), moved); });
  EXPECT_TRUE(has(e, "data position (epoch")) << e;
  EXPECT_TRUE(has(e, "index 999) is outside this dataset's epoch of 6 images")) << e;
}

TEST(RunFolder, StaleTempFilesOfDeadProcessesAreRemoved) {
  EXPECT_EQ(atomic_temp_owner("tiny.safetensors.tmp.1234"), 1234);
  EXPECT_EQ(atomic_temp_owner("a.png.tmp.7"), 7);
  EXPECT_EQ(atomic_temp_owner("tiny.safetensors.tmp."), -1);
  EXPECT_EQ(atomic_temp_owner("tiny.tmp.12a"), -1);
  EXPECT_EQ(atomic_temp_owner(".tmp.12"), -1);
  EXPECT_EQ(atomic_temp_owner("notes.tmp"), -1);
  EXPECT_EQ(atomic_temp_owner("x.tmp.0"), -1);
  EXPECT_EQ(atomic_temp_path("d/x.png", 42), "d/x.png.tmp.42");
  fs::path out = scratch("stale");
  const long dead = dead_pid();
  const fs::path stale = out / ("tiny.safetensors.tmp." + std::to_string(dead));
  const fs::path stale_state = out / "state" / ("step-00000002.safetensors.tmp." + std::to_string(dead));
  const fs::path live = out / "tiny.safetensors.tmp.1";  // PID 1 is alive: never removed
  const fs::path other = out / "notes.tmp.x";            // not oboro's pattern
  fs::create_directories(out / "state");
  for (const fs::path& p : {stale, stale_state, live, other}) std::ofstream(p) << "partial";
  TrainConfig c = tiny(out);
  c.max_train_steps = 2;
  train(c, cpu_backend());
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_FALSE(fs::exists(stale_state));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
}

TEST(RunFolder, ARunLargerThanMemoryIsRefusedByThePlan) {
  fs::path out = scratch("huge");
  TrainConfig c = tiny(out);
  c.hidden_size = 8192;  // 48 layers of width 8192: about 39 billion parameters, 0.9 TB of training state
  c.num_layers = 48;
  c.ffn_hidden_size = 32768;
  const TrainMemoryPlan p = plan_training(c, "", 3, 1);
  EXPECT_GT(p.dit_params, 30'000'000'000LL);
  EXPECT_FALSE(p.fits());
  std::string e = error_of([&] { train(c, cpu_backend()); });
  EXPECT_TRUE(has(e, "not enough memory for this training run: it needs ")) << e;
  EXPECT_TRUE(has(e, "--no-memory-check")) << e;
  EXPECT_TRUE(has(e, "train a smaller model")) << e;
  // The tiny run fits, and its plan is not below what it allocates (weights, grads, AdamW, EMA at least).
  const TrainMemoryPlan small = plan_training(tiny(out), "", 3, 1);
  EXPECT_TRUE(small.fits());
  EXPECT_GE(small.dit_state, (size_t)small.dit_params * 4 * 5);
}

TEST(RunFolder, ForcedPastThePlanUnderAMemoryLimitItFailsWithAnOutOfMemoryMessage) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer reserves terabytes of address space and keeps freed memory in quarantine: "
                  "this measures the plain build";
#endif
  fs::path out = scratch("ulimit");
  const fs::path toml = out / "run.toml";
  std::ofstream(toml) << "train_data_dir = \"" << dataset().string() << "\"\noutput_dir = \"" << (out / "o").string()
                      << "\"\nresolution = 8\nhead_schedule = \"uniform\"\nhidden_size = 4096\nnum_layers = 8\n"
                         "ffn_hidden_size = 16384\nvocab_size = 30\nt5_d_model = 16\nt5_layers = 1\nt5_heads = 2\n"
                         "t5_d_kv = 8\nt5_d_ff = 16\ntrain_batch_size = 2\nmax_train_steps = 2\nthreads = 1\n";
  // 2.4 billion parameters (9.6 GB of weights alone) under a 3 GiB address-space limit.
  auto run = [&](const std::string& flags) {
    const std::string cmd = "ulimit -v 3145728; " + std::string(OBORO_BINARY) + " train --config " + toml.string() +
                            flags + " >" + (out / "stdout").string() + " 2>" + (out / "stderr").string();
    const int st = std::system(("bash -c '" + cmd + "'").c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  };
  int code = run("");
  std::string err = slurp(out / "stderr");
  EXPECT_EQ(code, 1) << err;
  EXPECT_TRUE(has(err, "oboro: error: not enough memory for this training run")) << err;
  code = run(" --no-memory-check");
  err = slurp(out / "stderr");
  EXPECT_EQ(code, 1) << "exit code (128 + signal when it crashed): " << err;
  EXPECT_TRUE(has(err, "oboro: error: out of memory")) << err;
}
