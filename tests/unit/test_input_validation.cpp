// User-input validation (issue 21, the probe's failure classes): one test per class — data loss (export --force
// into a user's folder, --grid over an existing file or an input, convert IN IN, data remove twice), silently wrong
// results (non-finite options and weights, nonsensical sizes, 16-bit PNGs, a foreign SQLite file switched to WAL,
// out-of-range settings), and unclear errors (non-UTF-8 prompts in the CLI and the server, --t5 given a DiT, a
// model's metadata naming a path outside its folder). docs/reliability.md "User-input validation" lists them.
#include "test_util.h"
#include "core/error.h"
#include "core/sha256.h"
#include "core/utf8.h"
#include "data/audit.h"
#include "data/manifest.h"
#include "data/quality.h"
#include "data/sqlite_db.h"
#include "data/synth.h"
#include "flow/generate.h"
#include "flow/infotext.h"
#include "flow/memory_plan.h"
#include "flow/model_paths.h"
#include "flow/request_check.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/convert_weights.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include "ops/backend.h"
#include "serve/request.h"
#include "train/train_config.h"
#include <gtest/gtest.h>
#include <png.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

using namespace oboro;
namespace fs = std::filesystem;
using oboro::test::error_of;

namespace {

fs::path root() { return oboro::test::process_tmpdir("oboro_input_validation"); }

fs::path fresh(const std::string& name) {
  const fs::path d = root() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << s;
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

struct Result {
  int code;
  std::string out, err;
};
Result run(const std::string& args) {
  const fs::path d = root() / "cli";
  fs::create_directories(d);
  const std::string out = (d / "stdout").string(), err = (d / "stderr").string();
  const int st = std::system((std::string(OBORO_BINARY) + " " + args + " >" + out + " 2>" + err).c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(out), slurp(err)};
}
int lines(const std::string& s) { return (int)std::count(s.begin(), s.end(), '\n'); }

const std::string kModel = std::string(OBORO_SOURCE_DIR) + "/models/default/oboro-default.safetensors";

DiTConfig tiny_dit() {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = {2, 2};
  c.ffn_hidden_size = 48;
  c.text_dim = 16;
  c.latent_channels = 3;
  c.patch_size = 2;
  c.codec = "pixels";
  return c;
}

}  // namespace

// ---------------------------------------------------------------- data loss

TEST(InputValidation, ExportForceRefusesAFolderOboroDidNotExportTo) {
  const fs::path d = fresh("export");
  const fs::path src = d / "src";
  fs::create_directories(src);
  for (int i = 0; i < 3; ++i) {
    save_png((src / str("i", i, ".png")).string(), synth::make_image(3, (uint64_t)i, 32, 32));
    write_text(src / str("i", i, ".txt"), str("caption ", i, "\n"));
  }
  write_text(src / "manifest.jsonl", "");  // the user's own manifest (empty: licences from --license)
  auto m = Manifest::open((d / "m.db").string(), true);
  IngestOptions io;
  io.source = src.string();
  io.default_license = "CC0-1.0";
  io.progress = false;
  ingest(*m, io);
  const std::string before = slurp(src / "i0.png"), before_txt = slurp(src / "i0.txt");

  // The ingested source folder: refused even with --force, nothing touched.
  ExportOptions eo;
  eo.out_dir = src.string();
  eo.force = true;
  eo.progress = false;
  const std::string e = error_of([&] { export_dataset(*m, eo); });
  EXPECT_TRUE(has(e, "not a previous oboro export")) << e;
  EXPECT_TRUE(has(e, kExportMarker)) << e;
  EXPECT_EQ(slurp(src / "i0.png"), before);
  EXPECT_EQ(slurp(src / "i0.txt"), before_txt);
  EXPECT_TRUE(fs::exists(src / "manifest.jsonl"));
  EXPECT_FALSE(fs::exists(src / kExportMarker));

  // A real export has the marker and may be replaced with --force (and only with it).
  eo.out_dir = (d / "out").string();
  eo.force = false;
  EXPECT_EQ(export_dataset(*m, eo).images, 3);
  EXPECT_TRUE(fs::exists(d / "out" / kExportMarker));
  EXPECT_TRUE(has(error_of([&] { export_dataset(*m, eo); }), "--force"));
  eo.force = true;
  EXPECT_EQ(export_dataset(*m, eo).images, 3);
  // An export made before the marker existed (recorded in the manifest) is still recognised.
  fs::remove(d / "out" / kExportMarker);
  EXPECT_EQ(export_dataset(*m, eo).images, 3);
}

TEST(InputValidation, GridNeverOverwritesAnInputOrAnExistingFileWithoutForce) {
  const fs::path d = fresh("grid");
  const fs::path model = d / "model.safetensors";
  fs::copy_file(kModel, model);
  fs::copy_file(fs::path(kModel).parent_path() / "oboro-default.t5.safetensors", d / "oboro-default.t5.safetensors");
  const std::string bytes = slurp(model);
  // The model being used, even with --force: refused before any work, the file intact.
  Result r = run("generate x --model " + model.string() + " --steps 1 --size 16x16 -o " + (d / "o").string() +
                 " --grid " + model.string() + " --force");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_TRUE(has(r.err, "is an input of this run")) << r.err;
  EXPECT_EQ(slurp(model), bytes);
  // Another existing file: refused without --force; with --force still refused when it is not a PNG.
  write_text(d / "notes.txt", "mine");
  r = run("generate x --model " + model.string() + " --steps 1 --size 16x16 -o " + (d / "o").string() + " --grid " +
          (d / "notes.txt").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(has(r.err, "pass --force")) << r.err;
  r = run("generate x --model " + model.string() + " --steps 1 --size 16x16 -o " + (d / "o").string() + " --grid " +
          (d / "notes.txt").string() + " --force");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(has(r.err, "not a PNG")) << r.err;
  EXPECT_EQ(slurp(d / "notes.txt"), "mine");
}

TEST(InputValidation, ConvertNeverReplacesItsInput) {
  const fs::path d = fresh("convert");
  const fs::path in = d / "m.safetensors";
  fs::copy_file(kModel, in);
  const std::string bytes = slurp(in);
  EXPECT_TRUE(has(error_of([&] { convert_weights(in.string(), in.string(), WFormat::BF16); }), "is the input"));
  // The same file under another name: "./m", a hard link.
  fs::create_hard_link(in, d / "link.safetensors");
  EXPECT_TRUE(has(error_of([&] { convert_weights(in.string(), (d / "link.safetensors").string(), WFormat::BF16); }),
                  "is the input"));
  const Result r = run("convert --type bf16 " + in.string() + " " + (d / "." / "m.safetensors").string());
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_TRUE(has(r.err, "never replaces its input")) << r.err;
  EXPECT_EQ(slurp(in), bytes);
  // A new output is fine.
  EXPECT_EQ(convert_weights(in.string(), (d / "bf16.safetensors").string(), WFormat::BF16).kind, "dit");
}

TEST(InputValidation, RemovingAnImageTwiceKeepsTheFirstReason) {
  const fs::path d = fresh("remove");
  fs::create_directories(d / "src");
  save_png((d / "src" / "a.png").string(), synth::make_image(4, 1, 32, 32));
  auto m = Manifest::open((d / "m.db").string(), true);
  IngestOptions io;
  io.source = (d / "src").string();
  io.default_license = "CC0-1.0";
  io.progress = false;
  ingest(*m, io);
  const std::string sha = sha256_file((d / "src" / "a.png").string());
  RemoveReport r = remove_image(*m, sha, "rights holder request 2026-01-02");
  ASSERT_EQ(r.removed.size(), 1u);
  EXPECT_TRUE(r.already.empty());
  r = remove_image(*m, sha, "oops, another reason");
  EXPECT_TRUE(r.removed.empty());
  ASSERT_EQ(r.already.size(), 1u);
  EXPECT_EQ(r.already[0].row.reason, "rights holder request 2026-01-02");
  EXPECT_GT(r.already[0].removed_at, 0);
  sql::Stmt s(m->db(), "SELECT reason FROM images WHERE sha256=?");
  s.bind(1, sha);
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.text(0), "rights holder request 2026-01-02");
  // The CLI says so (exit 0: the image is removed, as asked).
  m.reset();
  const Result c = run("data remove --manifest " + (d / "m.db").string() + " --hash " + sha + " --reason again");
  EXPECT_EQ(c.code, 0) << c.err;
  EXPECT_TRUE(has(c.out, "already removed")) << c.out;
  EXPECT_TRUE(has(c.out, "because: rights holder request 2026-01-02")) << c.out;
}

// ---------------------------------------------------------------- silently wrong

TEST(InputValidation, NonFiniteAndOutOfRangeGenerateOptionsAreRefused) {
  GenerateRequest ok;
  ok.model = "m.safetensors";
  ok.prompt = "a cat";
  EXPECT_EQ(error_of([&] { check_request(ok); }), "(no error)");
  auto err = [&](auto&& edit) {
    GenerateRequest rq = ok;
    edit(rq);
    return error_of([&] { check_request(rq); });
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(has(err([&](auto& r) { r.cfg_scale = nan; }), "--cfg-scale must be a finite number in [0, 100]"));
  EXPECT_TRUE(has(err([&](auto& r) { r.cfg_scale = inf; }), "--cfg-scale"));
  EXPECT_TRUE(has(err([&](auto& r) { r.cfg_scale = -1; }), "--cfg-scale"));
  EXPECT_TRUE(has(err([&](auto& r) { r.strength = nan; }), "--strength"));
  EXPECT_TRUE(has(err([&](auto& r) { r.hr_scale = -2; }), "--hr-scale"));
  EXPECT_TRUE(has(err([&](auto& r) { r.hr_scale = nan; }), "--hr-scale"));
  EXPECT_TRUE(has(err([&](auto& r) { r.hr_strength = inf; }), "--hr-strength"));
  EXPECT_TRUE(has(err([&](auto& r) { r.seed = 4294967296LL; }), "--seed must be in [0, 4294967295] or -1"));
  EXPECT_TRUE(has(err([&](auto& r) { r.seed = -5; }), "--seed"));
  EXPECT_TRUE(has(err([&](auto& r) { r.width = -64; r.height = 64; }), "--width"));
  EXPECT_TRUE(has(err([&](auto& r) { r.width = 64; }), "give both width and height"));
  EXPECT_TRUE(has(err([&](auto& r) { r.hr_resize_x = -1; }), "--hr-resize-x"));
  EXPECT_TRUE(has(err([&](auto& r) { r.batch_size = 0; }), "--batch-size"));
  // generate() refuses before opening the model (which does not exist here).
  GenerateRequest bad = ok;
  bad.cfg_scale = nan;
  EXPECT_TRUE(has(error_of([&] { generate(cpu_backend(), bad, false); }), "--cfg-scale"));
  // Sample-prompt lines: no truncated steps, no NaN CFG.
  EXPECT_TRUE(has(error_of([] { parse_prompt_line("a cat --s 2.5"); }), "--s (steps) must be a whole number"));
  EXPECT_TRUE(has(error_of([] { parse_prompt_line("a cat --l nan"); }), "--l (CFG scale)"));
  EXPECT_TRUE(has(error_of([] { parse_prompt_line("a cat --w -64"); }), "--w (width)"));
  EXPECT_EQ(parse_prompt_line("a cat --s 12 --l 4.5 ").steps, 12);
  EXPECT_TRUE(has(error_of([] { parse_prompt_line("caf\xe9 --s 12"); }), "prompt line: not valid UTF-8 at byte 3"));

  // Other numeric text: sizes in bytes, score thresholds.
  EXPECT_TRUE(has(error_of([] { parse_bytes("1e300G", "--max-memory"); }), "--max-memory '1e300G'"));
  EXPECT_TRUE(has(error_of([] { parse_bytes("nan", "--max-memory"); }), "give a size like 6G"));
  EXPECT_EQ(parse_bytes("6G", "--max-memory"), 6ull << 30);
  EXPECT_TRUE(has(error_of([] { QualityThresholds::parse("inf,5,4"); }), "--thresholds"));
  EXPECT_TRUE(has(error_of([] { QualityThresholds::parse("6,nan,4"); }), "--thresholds"));

  // The CLI: each a one-line error naming the option, exit != 0, before any model is loaded.
  for (const char* args : {"--cfg-scale nan", "--cfg-scale inf", "--threads -3", "--hr-scale 0", "--steps 2.5",
                           "--seed 5000000000", "--seed -2", "--strength 1.5", "--batch-size 0"}) {
    const Result r = run(std::string("generate x --model ") + kModel + " " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(lines(r.err), 1) << args << ": " << r.err;
    EXPECT_TRUE(has(r.err, std::string(args).substr(0, std::string(args).find(' ')))) << args << ": " << r.err;
  }
}

TEST(InputValidation, NonsensicalSizesAreRefusedWithTheAcceptedForm) {
  int w = 0, h = 0;
  parse_size("64x32", "--size", w, h);
  EXPECT_EQ(w, 64);
  EXPECT_EQ(h, 32);
  for (const char* s : {"0x0", "-64x64", "64x-64", "32x32x32", "64x", "x64", "64", "6 4x64", "64x64 ", "1e2x64", "99999x64"})
    EXPECT_TRUE(has(error_of([&] { parse_size(s, "--size", w, h); }), "must be WxH with W and H whole numbers from 1"))
        << s;
  for (const char* args : {"--size 0x0", "--size 32x32x32", "--size -16x16", "--image_size [0,0]", "--width 0"}) {
    const Result r = run(std::string("generate x --model ") + kModel + " " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(lines(r.err), 1) << args << ": " << r.err;
  }
}

TEST(InputValidation, NonFiniteWeightsAreRefusedAtLoadNamingTheTensor) {
  const fs::path d = fresh("nanweights");
  DiT m(tiny_dit(), cpu_backend());
  m.init_random_all(1);
  const ParamView& v = m.layout().views()[3];
  m.params()[v.offset + 5] = std::numeric_limits<float>::quiet_NaN();
  m.save((d / "nan.safetensors").string());
  std::string e = error_of([&] { DiT::load((d / "nan.safetensors").string(), cpu_backend()); });
  EXPECT_TRUE(has(e, v.name)) << e;
  EXPECT_TRUE(has(e, "NaN (element 5)")) << e;
  // Stored as bf16 and loaded as stored (memory-mapped, not converted): the raw bits are checked.
  m.params()[v.offset + 5] = std::numeric_limits<float>::infinity();
  m.save((d / "inf.safetensors").string());
  e = error_of([&] { DiT::load((d / "inf.safetensors").string(), cpu_backend()); });
  EXPECT_TRUE(has(e, "an infinite value")) << e;
  // A healthy model still loads.
  m.params()[v.offset + 5] = 0.f;
  m.save((d / "ok.safetensors").string());
  convert_weights((d / "ok.safetensors").string(), (d / "ok-bf16.safetensors").string(), WFormat::BF16);
  EXPECT_NO_THROW(DiT::load((d / "ok-bf16.safetensors").string(), cpu_backend()));
  // bf16 with a NaN in a quantised Linear weight: write it by hand from the converted file.
  auto f = SafetensorsFile::open((d / "ok-bf16.safetensors").string());
  SafetensorsWriter wr;
  std::vector<Tensor> keep;
  std::string bf16_name;
  for (const auto& info : f->tensors()) {
    Tensor t = f->tensor(info.name).clone();
    if (bf16_name.empty() && t.dtype() == DType::BF16) {
      bf16_name = info.name;
      t.data<uint16_t>()[7] = 0x7FC0;  // bf16 quiet NaN
    }
    keep.push_back(t);
  }
  ASSERT_FALSE(bf16_name.empty());
  size_t k = 0;
  for (const auto& info : f->tensors()) wr.add(info.name, keep[k++]);
  for (const auto& [key, val] : f->metadata()) wr.set_metadata(key, val);
  wr.write((d / "nan-bf16.safetensors").string());
  e = error_of([&] { DiT::load((d / "nan-bf16.safetensors").string(), cpu_backend()); });
  EXPECT_TRUE(has(e, bf16_name)) << e;
  EXPECT_TRUE(has(e, "(element 7)")) << e;
}

TEST(InputValidation, OverflowDuringSamplingFailsInsteadOfABlackImage) {
  // Finite but enormous weights: the forward pass overflows to inf/NaN.
  const fs::path d = fresh("overflow");
  fs::copy_file(fs::path(kModel).parent_path() / "oboro-default.t5.safetensors", d / "oboro-default.t5.safetensors");
  auto f = SafetensorsFile::open(kModel);
  SafetensorsWriter wr;
  std::vector<Tensor> keep;
  for (const auto& info : f->tensors()) {
    Tensor t = f->tensor(info.name).to_f32().clone();
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] *= 1e30f;
    keep.push_back(t);
  }
  size_t k = 0;
  for (const auto& info : f->tensors()) wr.add(info.name, keep[k++]);
  for (const auto& [key, val] : f->metadata())
    if (key != "oboro.weight_format") wr.set_metadata(key, val);
  wr.write((d / "huge.safetensors").string());
  GenerateRequest rq;
  rq.model = (d / "huge.safetensors").string();
  rq.prompt = "a cat";
  rq.steps = 2;
  rq.seed = 1;
  const std::string e = error_of([&] { generate(cpu_backend(), rq, false); });
  EXPECT_TRUE(has(e, "produced non-finite latents")) << e;
}

namespace {
// A grey ramp as a 16-bit PNG with no gAMA / sRGB chunk (as Pillow and most tools write it), via libpng.
void write_png16_ramp(const std::string& path, int W) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, fp);
  png_set_IHDR(png, info, (png_uint_32)W, 2, 16, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  std::vector<uint8_t> row((size_t)W * 6);
  for (int x = 0; x < W; ++x) {
    const unsigned v = (unsigned)(x * 257);  // 8-bit level x, exactly, in 16 bits
    for (int c = 0; c < 3; ++c) {
      row[(size_t)x * 6 + c * 2] = (uint8_t)(v >> 8);  // big-endian samples
      row[(size_t)x * 6 + c * 2 + 1] = (uint8_t)(v & 0xff);
    }
  }
  for (int y = 0; y < 2; ++y) png_write_row(png, row.data());
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  std::fclose(fp);
}
}  // namespace

TEST(InputValidation, SixteenBitPngsReadAsTheir8BitEquivalent) {
  const fs::path d = fresh("png16");
  write_png16_ramp((d / "ramp16.png").string(), 256);
  Image ramp8;
  ramp8.width = 256;
  ramp8.height = 2;
  ramp8.rgb.resize(256 * 2 * 3);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 256; ++x)
      for (int c = 0; c < 3; ++c) ramp8.rgb[((size_t)y * 256 + x) * 3 + c] = (uint8_t)x;
  save_png((d / "ramp8.png").string(), ramp8);
  const Image a = load_image((d / "ramp16.png").string()), b = load_image((d / "ramp8.png").string());
  ASSERT_EQ(a.width, 256);
  ASSERT_EQ(a.height, 2);
  int maxd = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) maxd = std::max(maxd, std::abs((int)a.rgb[i] - (int)b.rgb[i]));
  EXPECT_EQ(maxd, 0) << "mid-grey 128 came back as " << (int)a.rgb[128 * 3];
}

TEST(InputValidation, ASqliteFileThatIsNotAManifestIsLeftUntouched) {
  const fs::path d = fresh("sqlite");
  const std::string db = (d / "other.db").string();
  {
    auto other = sql::open(db, true);  // not configure()d: the rollback journal, as other programs leave it
    other->exec("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes(text) VALUES ('mine');");
  }
  const std::string before = slurp(db);
  ASSERT_GE(before.size(), 20u);
  EXPECT_EQ((int)(unsigned char)before[18], 1);  // file format write version 1 = rollback journal (2 = WAL)
  const std::string e = error_of([&] { Manifest::open(db, false); });
  EXPECT_TRUE(has(e, "is not an oboro manifest")) << e;
  EXPECT_EQ(slurp(db), before);
  EXPECT_FALSE(fs::exists(db + "-wal"));
  const Result r = run("data list --manifest " + db);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_EQ(slurp(db), before);
  // A manifest is still switched to WAL when opened.
  auto m = Manifest::open((d / "m.db").string(), true);
  EXPECT_EQ(m->db().scalar_text("PRAGMA journal_mode"), "wal");
}

TEST(InputValidation, TrainSettingsOutOfRangeAreRefusedAtLoad) {
  const fs::path d = fresh("train_toml");
  auto err = [&](const std::string& line) {
    write_text(d / "run.toml", "train_data_dir = \"data\"\n" + line + "\n");
    return error_of([&] { TrainConfig::from_toml((d / "run.toml").string()); });
  };
  EXPECT_TRUE(has(err("caption_dropout_rate = 1.5"), "caption_dropout_rate must be in [0, 1]")) << err("caption_dropout_rate = 1.5");
  EXPECT_TRUE(has(err("ema_decay = 1.5"), "ema_decay must be in [0, 1)")) << err("ema_decay = 1.5");
  EXPECT_TRUE(has(err("ema_decay = 1"), "ema_decay must be in [0, 1)"));
  EXPECT_TRUE(has(err("learning_rate = nan"), "learning_rate must be a finite number"));
  EXPECT_TRUE(has(err("learning_rate = -1e-4"), "learning_rate must be in (0, inf) (a positive number)"));
  EXPECT_TRUE(has(err("threads = -3"), "threads must be in [0, 4096]"));
  EXPECT_TRUE(has(err("max_train_steps = 2.5"), "max_train_steps must be an integer"));
  EXPECT_TRUE(has(err("adam_beta2 = 1.0"), "adam_beta2 must be in [0, 1)"));
  EXPECT_TRUE(has(err("sample_cfg = 1000"), "sample_cfg must be in [0, 100]"));
  EXPECT_EQ(err("ema_decay = 0.999\ncaption_dropout_rate = 0.1"), "(no error)");
  // validate() checks the same ranges for settings that came another way.
  TrainConfig c;
  c.train_data_dir = "data";
  c.caption_dropout_rate = 2.f;
  EXPECT_TRUE(has(error_of([&] { c.validate(); }), "caption_dropout_rate must be in [0, 1]"));
}

// ---------------------------------------------------------------- unclear

TEST(InputValidation, NonUtf8PromptsAreRefusedAtEntryNamingTheField) {
  EXPECT_EQ(utf8_invalid_at("plain ascii"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("caf\xc3\xa9 \xe7\x8c\xab \xf0\x9f\x90\x88"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("caf\xe9"), 3u);                 // Latin-1 é
  EXPECT_EQ(utf8_invalid_at("ab\xc0\xaf"), 2u);               // overlong '/'
  EXPECT_EQ(utf8_invalid_at("\xed\xa0\x80"), 0u);             // a UTF-16 surrogate
  EXPECT_EQ(utf8_invalid_at("x\xf4\x90\x80\x80"), 1u);        // above U+10FFFF
  EXPECT_EQ(utf8_invalid_at("\xe7\x8c"), 0u);                 // truncated
  GenerateRequest rq;
  rq.model = "m.safetensors";
  rq.prompt = "caf\xe9";
  EXPECT_TRUE(has(error_of([&] { check_request(rq); }), "prompt: not valid UTF-8 at byte 3 (0xE9)"));
  rq.prompt = "ok";
  rq.negative_prompt = "\xff";
  EXPECT_TRUE(has(error_of([&] { check_request(rq); }), "negative prompt: not valid UTF-8 at byte 0"));
  // The CLI, before any model is loaded.
  Result r = run(std::string("generate \"$(printf 'caf\\351')\" --model ") + kModel);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_TRUE(has(r.err, "prompt: not valid UTF-8 at byte 3")) << r.err;
  // The server: 422 naming the field.
  try {
    serve::parse_body("{\"steps\": 3, \"negative_prompt\": \"caf\xe9\", \"prompt\": \"x\"}");
    ADD_FAILURE() << "no error";
  } catch (const serve::RequestError& e) {
    EXPECT_EQ(e.status, 422);
    EXPECT_EQ(e.field, "negative_prompt");
    EXPECT_TRUE(has(e.what(), "negative_prompt: not valid UTF-8")) << e.what();
  }
  try {
    serve::parse_body("{\"prompt\": \"\xff\"}");
    ADD_FAILURE() << "no error";
  } catch (const serve::RequestError& e) {
    EXPECT_EQ(e.status, 422);
    EXPECT_EQ(e.field, "prompt");
  }
}

TEST(InputValidation, AModelGivenAsTheTextEncoderIsNamed) {
  const std::string e = error_of([] { TextEncoder::load_tokenizer(kModel); });
  EXPECT_TRUE(has(e, "is an oboro DiT model, not a T5 text encoder: pass it as --model")) << e;
  const Result r = run(std::string("generate x --model ") + kModel + " --t5 " + kModel);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_TRUE(has(r.err, "not a T5 text encoder")) << r.err;
}

TEST(InputValidation, ModelMetadataCannotNameAPathOutsideItsFolder) {
  const fs::path d = fresh("metapaths");
  DiT m(tiny_dit(), cpu_backend());
  m.init_random_all(2);
  for (const char* bad : {"../../../etc/passwd", "/etc/passwd", "a/../../x.safetensors", "./x", ""}) {
    const std::string e =
        error_of([&] { locate_named_by_model(bad, (d / "m.safetensors").string(), "oboro.text_encoder", "", "text_encoders"); });
    EXPECT_TRUE(has(e, "is not a file name inside the model's folder") || (std::string(bad).empty() && has(e, "not")))
        << bad << ": " << e;
  }
  m.save((d / "evil.safetensors").string(), {{"oboro.text_encoder", "../../../../../../../../etc/passwd"}});
  GenerateRequest rq;
  rq.model = (d / "evil.safetensors").string();
  rq.prompt = "x";
  rq.width = rq.height = 16;
  const std::string e = error_of([&] { plan_generation(rq); });
  EXPECT_TRUE(has(e, "'oboro.text_encoder' = '../../../../../../../../etc/passwd' is not a file name inside")) << e;
  // A file in a subfolder of the model's folder is fine.
  write_text(d / "te" / "t5.safetensors", "x");
  EXPECT_EQ(locate_named_by_model("te/t5.safetensors", (d / "m.safetensors").string(), "k", "", "text_encoders"),
            (d / "te" / "t5.safetensors").string());
}
