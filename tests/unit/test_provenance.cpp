// Provenance: manifest.jsonl parsing and its errors, the dataset digest (order independent), the
// licence allow-list refusal, a 2-step training run on a 4-image folder with a manifest whose model
// and checkpoint carry `oboro.dataset`, and `oboro info` showing it.
#include "test_util.h"
#include "core/error.h"
#include "core/sha256.h"
#include "data/provenance.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include "train/trainer.h"
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <fstream>

using namespace oboro;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_prov_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p.string(), std::ios::binary) << s; }

using oboro::test::error_of;

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

json entry(const std::string& file, const std::string& sha, const std::string& license, const std::string& source = "npm:x@1") {
  return {{"file", file}, {"sha256", sha}, {"source", source}, {"original", "img/" + file},
          {"license", license}, {"attribution", "Art by " + source}, {"captions", {"a caption"}}};
}

// A folder of 8×8 images (img0..imgN-1.png + .txt) with a manifest giving each image `licenses[i]`.
fs::path make_folder(const std::string& name, const std::vector<std::string>& licenses) {
  fs::path d = scratch(name);
  std::string manifest;
  for (size_t i = 0; i < licenses.size(); ++i) {
    Image im;
    im.width = im.height = 8;
    im.rgb.assign(8 * 8 * 3, 255);
    for (int p = 0; p < 16; ++p) im.rgb[(size_t)(p + 8 * (int)i) * 3 + i % 3] = 40;  // a coloured band per image
    const std::string stem = "img" + std::to_string(i);
    save_png((d / (stem + ".png")).string(), im);
    write_text(d / (stem + ".txt"), "a band, number " + std::to_string(i));
    manifest += entry(stem + ".png", sha256_file((d / (stem + ".png")).string()), licenses[i],
                      i % 2 ? "npm:odd@1.0.0" : "npm:even@1.0.0").dump() + "\n";
  }
  write_text(d / "manifest.jsonl", manifest);
  return d;
}

std::vector<std::string> images_of(const fs::path& d, size_t n) {
  std::vector<std::string> v;
  for (size_t i = 0; i < n; ++i) v.push_back((d / ("img" + std::to_string(i) + ".png")).string());
  return v;
}

const std::string kSha(64, 'a');

}  // namespace

TEST(Provenance, ManifestParses) {
  fs::path d = scratch("parse");
  json obj = entry("sub/x.png", kSha, "CC0-1.0");
  obj["original"] = {{"style", "lorelei"}, {"seed", "lorelei-0"}};
  write_text(d / "manifest.jsonl", "\xef\xbb\xbf" + entry("a.png", std::string(64, 'F'), "CC-BY-4.0").dump() + "\r\n\n" +
                                       obj.dump() + "\n");
  LicenseManifest m = LicenseManifest::load((d / "manifest.jsonl").string());
  ASSERT_EQ(m.entries().size(), 2u);
  const ProvenanceEntry* a = m.find("a.png");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->sha256, std::string(64, 'f'));  // normalised to lowercase
  EXPECT_EQ(a->license, "CC-BY-4.0");
  EXPECT_EQ(a->line, 1);
  const ProvenanceEntry* x = m.find("sub/x.png");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->line, 3);
  EXPECT_EQ(json::parse(x->original)["style"], "lorelei");  // an object is kept as its JSON
  EXPECT_EQ(m.find("b.png"), nullptr);
}

TEST(Provenance, ManifestErrorsNameTheLineAndTheFix) {
  fs::path d = scratch("errors");
  const std::string path = (d / "manifest.jsonl").string();
  const std::string good = entry("a.png", kSha, "MIT").dump() + "\n";
  auto load_err = [&](const std::string& second) {
    write_text(path, good + second + "\n");
    return error_of([&] { LicenseManifest::load(path); });
  };
  std::string e = load_err("{\"file\": \"b.png\", ");
  EXPECT_TRUE(has(e, "manifest.jsonl:2:")) << e;
  EXPECT_TRUE(has(e, "not valid JSON")) << e;
  EXPECT_TRUE(has(e, "scripts/get-data")) << e;
  json j = entry("b.png", kSha, "MIT");
  j.erase("license");
  e = load_err(j.dump());
  EXPECT_TRUE(has(e, "manifest.jsonl:2: missing field \"license\"")) << e;
  e = load_err(entry("b.png", "abc", "MIT").dump());
  EXPECT_TRUE(has(e, ":2:") && has(e, "sha256")) << e;
  e = load_err(entry("a.png", kSha, "MIT").dump());
  EXPECT_TRUE(has(e, "listed twice (also on line 1)")) << e;
  e = load_err(entry("../up.png", kSha, "MIT").dump());
  EXPECT_TRUE(has(e, "outside the manifest's folder")) << e;
  j = entry("b.png", kSha, "MIT");
  j["captions"] = "one";
  e = load_err(j.dump());
  EXPECT_TRUE(has(e, "\"captions\" must be an array")) << e;
  e = load_err("[1, 2]");
  EXPECT_TRUE(has(e, ":2: expected a JSON object")) << e;
}

TEST(Provenance, DigestIsOrderIndependentAndDocumented) {
  ProvenanceEntry a, b, c;
  a.sha256 = std::string(64, '1'); a.license = "CC0-1.0"; a.source = "npm:p@1"; a.attribution = "A";
  b.sha256 = std::string(64, '2'); b.license = "CC-BY-4.0"; b.source = "npm:q@2"; b.attribution = "B";
  c.sha256 = std::string(64, '0'); c.license = "CC-BY-4.0"; c.source = "npm:q@2"; c.attribution = "B";
  DatasetSummary s1 = summarize({&a, &b, &c}), s2 = summarize({&c, &b, &a});
  EXPECT_EQ(s1.digest, s2.digest);
  // "sha256:" + sha256 of the sorted "<image sha256> <license>\n" lines.
  EXPECT_EQ(s1.digest, "sha256:" + sha256_hex(c.sha256 + " CC-BY-4.0\n" + a.sha256 + " CC0-1.0\n" + b.sha256 + " CC-BY-4.0\n"));
  EXPECT_NE(s1.digest, summarize({&a, &b}).digest);
  ProvenanceEntry a2 = a;
  a2.license = "MIT";  // same bytes, other licence: another dataset
  EXPECT_NE(s1.digest, summarize({&a2, &b, &c}).digest);
  EXPECT_EQ(s1.images, 3u);
  EXPECT_EQ(s1.licenses.at("CC-BY-4.0"), 2u);
  EXPECT_EQ(s1.sources.at("npm:p@1"), 1u);
  EXPECT_EQ(s1.attribution, (std::vector<std::string>{"A", "B"}));
  // JSON field order and round trip.
  const std::string text = s1.to_json();
  EXPECT_EQ(text.rfind("{\"digest\":", 0), 0u) << text;
  EXPECT_LT(text.find("\"images\""), text.find("\"licenses\""));
  EXPECT_LT(text.find("\"sources\""), text.find("\"attribution\""));
  DatasetSummary back = DatasetSummary::from_json(text);
  EXPECT_EQ(back.digest, s1.digest);
  EXPECT_EQ(back.licenses, s1.licenses);
  EXPECT_EQ(back.attribution, s1.attribution);
  EXPECT_THROW(DatasetSummary::from_json("{\"digest\": 3}"), Error);
}

TEST(Provenance, AllowListRefusesWithFilesLicencesAndTheFix) {
  fs::path d = make_folder("allow", {"CC0-1.0", "CC-BY-NC-4.0", "Apache-2.0", "LicenseRef-Proprietary"});
  const auto imgs = images_of(d, 4);
  LicensePolicy policy;
  EXPECT_TRUE(policy.allowed("cc-by-4.0"));  // SPDX ids are case-insensitive
  EXPECT_FALSE(policy.allowed("CC-BY-NC-4.0"));
  std::string e = error_of([&] { check_provenance(imgs, policy, false); });
  EXPECT_TRUE(has(e, "2 images have licences outside license_allow")) << e;
  EXPECT_TRUE(has(e, "img1.png (CC-BY-NC-4.0, ")) << e;
  EXPECT_TRUE(has(e, "manifest.jsonl:2)")) << e;
  EXPECT_TRUE(has(e, "img3.png (LicenseRef-Proprietary")) << e;
  EXPECT_FALSE(has(e, "img0.png")) << e;
  EXPECT_TRUE(has(e, "[data] license_allow = [\"CC0-1.0\", \"CC-BY-4.0\", \"CC-BY-SA-4.0\", \"Apache-2.0\", \"MIT\", "
                     "\"CC-BY-NC-4.0\", \"LicenseRef-Proprietary\"]")) << e;
  EXPECT_TRUE(has(e, "remove these images")) << e;
  EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 0) << "one line";
  // Extending the list accepts them.
  policy.allow.push_back("CC-BY-NC-4.0");
  policy.allow.push_back("LicenseRef-Proprietary");
  ProvenanceCheck ok = check_provenance(imgs, policy, false);
  EXPECT_TRUE(ok.has_manifest);
  EXPECT_EQ(ok.summary.images, 4u);
  EXPECT_EQ(ok.summary.sources.at("npm:odd@1.0.0"), 2u);
  // Only the images used count: two of them make another digest.
  ProvenanceCheck two = check_provenance({imgs[0], imgs[2]}, LicensePolicy{}, false);
  EXPECT_EQ(two.summary.images, 2u);
  EXPECT_NE(two.summary.digest, ok.summary.digest);
}

TEST(Provenance, UnlistedChangedAndUncoveredImagesAreRefused) {
  fs::path d = make_folder("unlisted", {"CC0-1.0", "CC0-1.0", "CC0-1.0"});
  auto imgs = images_of(d, 3);
  // An image the manifest does not list.
  fs::copy_file(imgs[0], d / "extra.png");
  auto with_extra = imgs;
  with_extra.push_back((d / "extra.png").string());
  std::string e = error_of([&] { check_provenance(with_extra, LicensePolicy{}, false); });
  EXPECT_TRUE(has(e, "1 image is not listed")) << e;
  EXPECT_TRUE(has(e, "extra.png (not in ")) << e;
  // An image whose bytes changed.
  {
    std::ofstream f(imgs[1], std::ios::binary | std::ios::app);
    f << "x";
  }
  e = error_of([&] { check_provenance(imgs, LicensePolicy{}, false); });
  EXPECT_TRUE(has(e, "img1.png (")) << e;
  EXPECT_TRUE(has(e, "sha256")) << e;
  // No manifest anywhere: accepted unless require_license.
  fs::path bare = scratch("bare");
  fs::copy_file(imgs[0], bare / "a.png");
  EXPECT_FALSE(check_provenance({(bare / "a.png").string()}, LicensePolicy{}, false).has_manifest);
  e = error_of([&] { check_provenance({(bare / "a.png").string()}, LicensePolicy{}, true); });
  EXPECT_TRUE(has(e, "require_license = true")) << e;
  EXPECT_TRUE(has(e, "scripts/get-data")) << e;
  // A manifest in a parent folder covers images in subfolders (paths relative to it).
  fs::path nested = scratch("nested");
  fs::create_directories(nested / "sub");
  fs::copy_file(imgs[0], nested / "sub" / "a.png");
  write_text(nested / "manifest.jsonl", entry("sub/a.png", sha256_file(imgs[0]), "MIT").dump() + "\n");
  EXPECT_EQ(check_provenance({(nested / "sub" / "a.png").string()}, LicensePolicy{}, false).summary.images, 1u);
}

namespace {

TrainConfig tiny_run(const fs::path& data, const fs::path& out) {
  TrainConfig c;
  c.train_data_dir = data.string();
  c.output_dir = out.string();
  c.output_name = "prov";
  c.width = c.height = 8;
  c.head_schedule = "uniform";
  c.hidden_size = 32;
  c.num_layers = 2;
  c.ffn_hidden_size = 48;
  c.vocab_size = 24;
  c.t5_d_model = 16;
  c.t5_layers = 1;
  c.t5_heads = 2;
  c.t5_d_kv = 8;
  c.t5_d_ff = 24;
  c.train_batch_size = 2;
  c.max_train_steps = 2;
  c.learning_rate = 1e-3;
  c.progress = false;
  return c;
}

// One 2-step run on 4 licensed images, shared by the tests below.
const TrainResult& licensed_run() {
  static TrainResult r = [] {
    fs::path data = make_folder("train4", {"CC0-1.0", "CC-BY-4.0", "Apache-2.0", "CC-BY-4.0"});
    return train(tiny_run(data, scratch("train4_out")), cpu_backend());
  }();
  return r;
}

struct Cli {
  int code;
  std::string out, err;
};

Cli oboro_cli(const std::string& args) {
  fs::path dir = scratch("cli");
  const std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  const int st = std::system((std::string(OBORO_BINARY) + " " + args + " >" + out + " 2>" + err).c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(out), slurp(err)};
}

}  // namespace

TEST(Provenance, TrainingRecordsTheDatasetInTheModelAndCheckpoint) {
  const TrainResult& r = licensed_run();
  ASSERT_EQ(r.steps, 2);
  for (const std::string& file : {r.model_path, r.state_path}) {
    auto f = SafetensorsFile::open(file);
    auto it = f->metadata().find("oboro.dataset");
    ASSERT_NE(it, f->metadata().end()) << file;
    DatasetSummary s = DatasetSummary::from_json(it->second);
    EXPECT_EQ(s.images, 4u);
    EXPECT_EQ(s.licenses.at("CC-BY-4.0"), 2u);
    EXPECT_EQ(s.licenses.at("Apache-2.0"), 1u);
    EXPECT_EQ(s.sources.at("npm:even@1.0.0"), 2u);
    EXPECT_EQ(s.attribution, (std::vector<std::string>{"Art by npm:even@1.0.0", "Art by npm:odd@1.0.0"}));
    EXPECT_EQ(s.digest.rfind("sha256:", 0), 0u);
    EXPECT_EQ(s.digest.size(), 7u + 64u);
  }
}

TEST(Provenance, TrainingRefusesBeforeStarting) {
  fs::path data = make_folder("refuse", {"CC0-1.0", "CC-BY-NC-4.0"});
  fs::path out = scratch("refuse_out");
  fs::remove_all(out);
  std::string e = error_of([&] { train(tiny_run(data, out), cpu_backend()); });
  EXPECT_TRUE(has(e, "img1.png (CC-BY-NC-4.0")) << e;
  EXPECT_TRUE(has(e, "license_allow")) << e;
  EXPECT_FALSE(fs::exists(out)) << "nothing may be written before the check";
  // The TOML keys: license_allow extends the list, require_license refuses data without a manifest.
  write_text(out.parent_path() / "run.toml", "train_data_dir = \"refuse\"\noutput_dir = \"refuse_out\"\n"
                                             "[data]\nlicense_allow = [\"CC0-1.0\", \"CC-BY-NC-4.0\"]\nrequire_license = true\n");
  TrainConfig c = TrainConfig::from_toml((out.parent_path() / "run.toml").string());
  EXPECT_EQ(c.license_allow, (std::vector<std::string>{"CC0-1.0", "CC-BY-NC-4.0"}));
  EXPECT_TRUE(c.require_license);
  write_text(out.parent_path() / "run.toml", "license_allow = \"MIT\"\n");
  e = error_of([&] { TrainConfig::from_toml((out.parent_path() / "run.toml").string()); });
  EXPECT_TRUE(has(e, "license_allow must be an array")) << e;
  fs::remove(data / "manifest.jsonl");
  TrainConfig strict = tiny_run(data, out);
  strict.require_license = true;
  e = error_of([&] { train(strict, cpu_backend()); });
  EXPECT_TRUE(has(e, "require_license = true")) << e;
}

TEST(Provenance, InfoPrintsTheDataset) {
  const TrainResult& r = licensed_run();
  Cli c = oboro_cli("info " + r.model_path);
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_TRUE(has(c.out, "dataset: 4 images, digest sha256:")) << c.out;
  EXPECT_TRUE(has(c.out, "    CC-BY-4.0: 2\n")) << c.out;
  EXPECT_TRUE(has(c.out, "    Apache-2.0: 1\n")) << c.out;
  EXPECT_TRUE(has(c.out, "    Art by npm:odd@1.0.0\n")) << c.out;
  EXPECT_FALSE(has(c.out, "oboro.dataset:")) << "shown parsed, not raw";
  c = oboro_cli("info --json " + r.model_path);
  ASSERT_EQ(c.code, 0) << c.err;
  json j = json::parse(c.out);
  EXPECT_EQ(j["dataset"]["images"], 4);
  EXPECT_EQ(j["dataset"]["licenses"]["CC0-1.0"], 1);
  EXPECT_EQ(j["dataset"]["attribution"].size(), 2u);
}
