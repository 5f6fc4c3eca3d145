// The manifest end to end, on SQLite and on PostgreSQL (manifest_backends.h): ingest (sidecars, manifest.jsonl, .license, --license, allow-list,
// corrupt and mismatched files, resume, shards, kohya TOML), dedup, scores and quality tags, buckets,
// latent cache + reader, export → model → register → remove → audit, and the CLI contract with its
// one-line errors.
#include "test_util.h"
#include "manifest_backends.h"
#include "core/error.h"
#include "core/sha256.h"
#include "data/audit.h"
#include "data/buckets.h"
#include "data/cache.h"
#include "data/dedup.h"
#include "data/manifest.h"
#include "data/provenance.h"
#include "data/quality.h"
#include "data/synth.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/codec.h"
#include "models/vae.h"
#include "models/text_encoder.h"
#include "models/tokenizer.h"
#include "ops/backend.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sys/wait.h>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_manifest_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

using oboro::test::error_of;

// A --manifest value on a shell command line (a libpq connection string has spaces).
std::string q(const std::string& s) { return "'" + s + "'"; }

class ManifestDb : public oboro::test::ManifestBackend {};

std::string status_of(Manifest& m, const std::string& path_suffix, std::string* reason = nullptr) {
  sql::Stmt s(m.db(), "SELECT status, reason FROM images WHERE path LIKE ?");
  s.bind(1, "%" + path_suffix);
  if (!s.step()) return "(missing)";
  if (reason) *reason = s.text(1);
  return s.text(0);
}

IngestOptions quiet(const fs::path& src, const std::string& lic = "") {
  IngestOptions o;
  o.source = src.string();
  o.default_license = lic;
  o.progress = false;
  o.batch = 7;  // several transactions even for small folders
  return o;
}

// A small folder exercising every licence path.
//   a.png  caption a.txt, licence from manifest.jsonl (CC0-1.0)
//   b.png  caption b.txt (two lines), licence sidecar b.png.license (REUSE style, CC-BY-4.0)
//   c.png  no licence of its own → --license or excluded
//   d.png  licence CC-BY-NC-4.0 (not allowed) via d.license
//   e.png  corrupt bytes
//   sub/f.jpg manifest.jsonl lists a wrong sha256
//   .hidden/g.png skipped
fs::path make_folder(const std::string& name) {
  fs::path d = fresh_dir(name);
  for (int i = 0; i < 6; ++i) save_png((d / std::string(1, char('a' + i))).string() + ".png", synth::make_image(5, (uint64_t)i, 40, 32));
  write_text(d / "e.png", "\x89PNG\r\n\x1a\nnot really a png");
  write_text(d / "sub" / "f.jpg", synth::encode_jpeg(synth::make_image(5, 9, 40, 40), 80));
  fs::create_directories(d / ".hidden");
  save_png((d / ".hidden" / "g.png").string(), synth::make_image(5, 10, 16, 16));
  write_text(d / "a.txt", "a red thing\n");
  write_text(d / "b.txt", "\xef\xbb\xbf" "a blue thing\nlonger caption of the blue thing\n\n");
  write_text(d / "b.png.license", "SPDX-FileCopyrightText: Jane Doe\nSPDX-License-Identifier: CC-BY-4.0\n");
  write_text(d / "d.license", "CC-BY-NC-4.0\nSomeone\n");
  const std::string a_sha = sha256_file((d / "a.png").string());
  nlohmann::json ra = {{"file", "a.png"}, {"sha256", a_sha}, {"source", "test"}, {"original", {{"style", "x"}, {"seed", "a"}}},  // generator parameters, as get-data writes
                       {"license", "CC0-1.0"}, {"attribution", "A. Author"}, {"captions", {"a red thing", "jsonl caption"}}};
  nlohmann::json rf = {{"file", "sub/f.jpg"}, {"sha256", std::string(64, '0')}, {"license", "MIT"}};
  write_text(d / "manifest.jsonl", ra.dump() + "\n\n" + rf.dump() + "\n");
  return d;
}

struct Result {
  int code;
  std::string out, err;
};

Result run(const std::string& args) {
  fs::path dir = fs::temp_directory_path() / ("oboro_manifest_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  std::string cmd = std::string(OBORO_BINARY) + " " + args + " >" + out + " 2>" + err;
  int st = std::system(cmd.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), read_text(out), read_text(err)};
}

int lines(const std::string& s) { return (int)std::count(s.begin(), s.end(), '\n'); }

}  // namespace

TEST_P(ManifestDb, IngestLicencesCorruptMismatchAndResume) {
  const fs::path d = make_folder("ingest");
  const std::string db = target(d.parent_path(), "ingest");
  auto m = Manifest::open(db, true);
  IngestReport r = ingest(*m, quiet(d));
  EXPECT_EQ(r.found, 7);  // a-f + sub/f.jpg; .hidden skipped
  EXPECT_EQ(r.added, 7);
  EXPECT_EQ(r.corrupt, 1);
  EXPECT_EQ(r.mismatch, 1);
  EXPECT_EQ(r.no_licence, 2);  // c and f.png
  EXPECT_EQ(r.not_allowed, 1);
  EXPECT_EQ(r.active, 2);
  std::string why;
  EXPECT_EQ(status_of(*m, "/a.png"), "active");
  EXPECT_EQ(status_of(*m, "/b.png"), "active");
  EXPECT_EQ(status_of(*m, "/c.png", &why), "removed");
  EXPECT_EQ(why, "no licence");
  EXPECT_EQ(status_of(*m, "/d.png", &why), "removed");
  EXPECT_EQ(why, "licence CC-BY-NC-4.0 not in the allow-list");
  EXPECT_EQ(status_of(*m, "/e.png", &why), "removed");
  EXPECT_EQ(why.rfind("corrupt: ", 0), 0u) << why;
  EXPECT_EQ(status_of(*m, "/sub/f.jpg", &why), "removed");
  EXPECT_NE(why.find("sha256"), std::string::npos);
  // Row contents.
  sql::Stmt s(m->db(), "SELECT id, relpath, license, license_from, attribution, source, original, width, height, sha256 "
                       "FROM images WHERE relpath IN ('a.png', 'b.png') ORDER BY relpath");
  ASSERT_TRUE(s.step());
  const int64_t a_id = s.i64(0);
  EXPECT_EQ(s.text(2), "CC0-1.0");
  EXPECT_EQ(s.text(3), "manifest.jsonl");
  EXPECT_EQ(s.text(4), "A. Author");
  EXPECT_EQ(s.text(5), "test");
  EXPECT_EQ(s.text(6), R"({"seed":"a","style":"x"})");
  EXPECT_EQ(s.i64(7), 40);
  EXPECT_EQ(s.i64(8), 32);
  EXPECT_EQ(s.text(9), sha256_file((d / "a.png").string()));
  EXPECT_EQ(m->captions(a_id), (std::vector<std::string>{"a red thing", "jsonl caption"}));
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.text(2), "CC-BY-4.0");
  EXPECT_EQ(s.text(3), "sidecar");
  EXPECT_EQ(s.text(4), "Jane Doe");
  EXPECT_EQ(m->captions(s.i64(0)), (std::vector<std::string>{"a blue thing", "longer caption of the blue thing"}));
  EXPECT_EQ(m->db().scalar_i64("SELECT count(*) FROM features"), 6);  // every decodable image has an embedding

  // Re-running skips everything; --license now covers c and f.png (their signature includes it).
  r = ingest(*m, quiet(d));
  EXPECT_EQ(r.unchanged, 7);
  EXPECT_EQ(r.added + r.updated, 0);
  r = ingest(*m, quiet(d, "cc0-1.0"));
  EXPECT_EQ(r.updated, 3);  // c, f.png and the corrupt e.png: the images with no licence of their own
  EXPECT_EQ(status_of(*m, "/c.png"), "active");
  // A changed caption re-ingests that image only.
  write_text(d / "a.txt", "a crimson thing\n");
  r = ingest(*m, quiet(d, "CC0-1.0"));
  EXPECT_EQ(r.updated, 1);
  EXPECT_EQ(m->captions(a_id)[0], "a crimson thing");
  // Widening the allow-list brings d back; narrowing removes b.
  EXPECT_EQ(m->set_policy(LicencePolicy::parse("CC0-1.0,CC-BY-NC-4.0")), 2);
  EXPECT_EQ(status_of(*m, "/d.png"), "active");
  EXPECT_EQ(status_of(*m, "/b.png", &why), "removed");
  EXPECT_EQ(why, "licence CC-BY-4.0 not in the allow-list");
  EXPECT_EQ(m->set_policy(LicencePolicy::defaults()), 2);

  // Errors name the thing and the fix.
  if (backend() == "sqlite") {
    EXPECT_NE(error_of([&] { Manifest::open((d / "nope.db").string(), false); }).find("oboro data ingest"), std::string::npos);
    write_text(d.parent_path() / "junk.db", std::string(4096, 'x'));
    EXPECT_NE(error_of([&] { Manifest::open((d.parent_path() / "junk.db").string(), false); }).find("not"), std::string::npos);
  } else {
    const std::string empty = target(d.parent_path(), "empty");
    EXPECT_NE(error_of([&] { Manifest::open(empty, false); }).find("oboro data ingest"), std::string::npos);
    sql::open(empty, false)->exec("CREATE TABLE other(x INTEGER)");
    EXPECT_NE(error_of([&] { Manifest::open(empty, true); }).find("not an oboro manifest"), std::string::npos);
  }
  EXPECT_NE(error_of([&] { ingest(*m, quiet(d / "missing")); }).find("no such folder"), std::string::npos);
  write_text(d / "manifest.jsonl", "{\"file\": \"a.png\"}\nnot json\n");
  EXPECT_NE(error_of([&] { ingest(*m, quiet(d)); }).find("manifest.jsonl:2"), std::string::npos);
}

TEST_P(ManifestDb, ShardedIngestMatchesOneProcessAndTomlWorks) {
  const fs::path d = fresh_dir("shards");
  for (int i = 0; i < 24; ++i) save_png((d / str("i", i, ".png")).string(), synth::make_image(6, (uint64_t)i, 24, 24));
  const std::string one = target(d.parent_path(), "one"), two = target(d.parent_path(), "two");
  auto m1 = Manifest::open(one, true);
  ingest(*m1, quiet(d, "MIT"));
  auto m2 = Manifest::open(two, true);
  int64_t added = 0;
  for (int i = 0; i < 3; ++i) {
    IngestOptions o = quiet(d, "MIT");
    o.shard = ShardSpec{i, 3};
    const IngestReport r = ingest(*m2, o);
    added += r.added;
    EXPECT_EQ(r.added + r.other_shard, 24);
  }
  EXPECT_EQ(added, 24);
  auto rows = [](Manifest& m) {
    std::set<std::string> s;
    sql::Stmt q(m.db(), "SELECT path || sha256 || status FROM images");
    while (q.step()) s.insert(q.text(0));
    return s;
  };
  EXPECT_EQ(rows(*m1), rows(*m2));
  // kohya TOML: class_tokens as caption, subset image_dir relative to the TOML.
  write_text(d.parent_path() / "ds.toml", "[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"shards\"\nclass_tokens = \"a tile\"\nnum_repeats = 3\n");
  const std::string three = target(d.parent_path(), "three");
  auto m3 = Manifest::open(three, true);
  const IngestReport r = ingest(*m3, quiet(d.parent_path() / "ds.toml", "MIT"));
  EXPECT_EQ(r.added, 24);  // repeats are not rows
  EXPECT_EQ(m3->captions(1), std::vector<std::string>{"a tile"});
}

TEST_P(ManifestDb, DedupScoreBucketCacheExportRegisterRemove) {
  // 60 originals + 12 planted near-duplicates, written by the synth generator (manifest.jsonl, CC0).
  const fs::path root = fresh_dir("pipeline");
  synth::Options so;
  so.out_dir = (root / "data").string();
  so.count = 72;
  so.size = 64;
  so.dup_fraction = 0.2;
  so.seed = 4;
  so.per_folder = 30;
  const synth::Summary ss = synth::write_dataset(so);
  ASSERT_GT(ss.duplicates, 5);
  const std::string db = target(root, "m");
  auto m = Manifest::open(db, true);
  IngestReport ir = ingest(*m, quiet(root / "data"));
  EXPECT_EQ(ir.active, 72);

  // Dedup: every planted duplicate pair collapses to one, no original is lost to another family.
  DedupOptions dop;
  const ManifestDedupReport dr = dedup_manifest(*m, dop);
  EXPECT_EQ(dr.images, 72);
  std::map<std::string, std::string> dup_of;  // relpath → original relpath
  {
    std::ifstream f(root / "data" / "duplicates.tsv");
    for (std::string line; std::getline(f, line);) {
      if (line.empty() || line[0] == '#') continue;
      const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
      dup_of[line.substr(0, t1)] = line.substr(t1 + 1, t2 - t1 - 1);
    }
  }
  std::map<std::string, std::string> sha_of, status, reason;
  {
    sql::Stmt s(m->db(), "SELECT relpath, sha256, status, reason FROM images");
    while (s.step()) sha_of[s.text(0)] = s.text(1), status[s.text(0)] = s.text(2), reason[s.text(0)] = s.text(3);
  }
  auto family = [&](const std::string& rel) { return dup_of.count(rel) ? dup_of[rel] : rel; };
  std::map<std::string, std::string> rel_of_sha;
  for (const auto& [rel, sha] : sha_of) rel_of_sha[sha] = rel;
  int64_t removed = 0;
  for (const auto& [rel, st] : status) {
    if (st != "removed") continue;
    ++removed;
    ASSERT_EQ(reason[rel].rfind("duplicate of ", 0), 0u);
    const std::string keeper = rel_of_sha[reason[rel].substr(13)];
    EXPECT_EQ(status[keeper], "active");
    EXPECT_EQ(family(keeper), family(rel)) << rel << " merged with " << keeper;
  }
  std::set<std::string> families;
  for (const auto& [rel, st] : status) families.insert(family(rel));
  EXPECT_EQ(m->count("status='active'"), (int64_t)families.size());  // exactly one per family
  EXPECT_EQ(removed, dr.removed);
  // A second dedup changes nothing.
  EXPECT_EQ(dedup_manifest(*m, dop).removed, 0);

  // Scores: CSV by sha256 and by relative path; tags appended to the training caption.
  std::vector<std::string> active;
  {
    sql::Stmt s(m->db(), "SELECT relpath FROM images WHERE status='active' ORDER BY id");
    while (s.step()) active.push_back(s.text(0));
  }
  ASSERT_GE(active.size(), 5u);
  write_text(root / "scores.csv", "image,score\n" + sha_of[active[0]] + ",6.5\n" + active[1] + ",5.5\n" +
                                      (root / "data" / active[2]).string() + ",4.2\n" + active[3] + ",3.1\nmissing.png,7\n");
  ScoreOptions sco;
  sco.file = (root / "scores.csv").string();
  sco.progress = false;
  ScoreReport sr = apply_scores(*m, sco);
  EXPECT_EQ(sr.excellent, 1);
  EXPECT_EQ(sr.good, 1);
  EXPECT_EQ(sr.average, 1);
  EXPECT_EQ(sr.excluded, 1);
  EXPECT_EQ(sr.unmatched, 1);
  auto id_of = [&](const std::string& rel) {
    sql::Stmt s(m->db(), "SELECT id FROM images WHERE relpath=?");
    s.bind(1, rel);
    return s.step() ? s.i64(0) : -1;
  };
  const std::string cap0 = m->captions(id_of(active[0]))[0];
  EXPECT_EQ(m->training_caption(id_of(active[0])), cap0 + ", excellent score");
  std::string why;
  EXPECT_EQ(status_of(*m, "/" + active[3], &why), "removed");
  EXPECT_EQ(why, "score 3.1 < 4");
  write_text(root / "scores.jsonl", "{\"path\": \"" + active[3] + "\", \"score\": 4.5}\n");
  sco.file = (root / "scores.jsonl").string();
  sco.tags = "prepend";
  sr = apply_scores(*m, sco);
  EXPECT_EQ(sr.restored, 1);
  EXPECT_EQ(status_of(*m, "/" + active[3]), "active");
  EXPECT_EQ(m->training_caption(id_of(active[0])), "excellent score, " + cap0);
  write_text(root / "bad.csv", "x,1\ny,notanumber\n");
  sco.file = (root / "bad.csv").string();
  EXPECT_NE(error_of([&] { apply_scores(*m, sco); }).find("bad.csv:2"), std::string::npos);

  // Buckets: 64×64 images are never upscaled, so stage 1 gives 64² (the full image) unless --upscale.
  BucketOptions bo;
  bo.stage = 1;
  bo.upscale = true;
  BucketReport br = assign_buckets(*m, bo, true);
  EXPECT_EQ(br.per_bucket["256x256"], br.images);
  EXPECT_EQ(m->db().scalar_i64("SELECT count(*) FROM buckets"), 0);  // a dry run stores nothing
  bo.upscale = false;
  std::vector<std::string> printed;
  br = assign_buckets(*m, bo, false, [&](const std::string& l) { printed.push_back(l); });
  // Kept downscaled duplicates (32-51 px) are too small for stage 1 without upscaling.
  EXPECT_EQ(br.bucketed + br.too_small, br.images);
  EXPECT_GT(br.bucketed, br.images / 2);
  EXPECT_EQ(br.per_bucket["64x64"], br.bucketed);
  EXPECT_EQ((int64_t)printed.size(), br.images);
  int64_t listed_small = 0;
  for (const auto& l : printed) listed_small += l.find("\tnone: too small for stage 1") != std::string::npos;
  EXPECT_EQ(listed_small, br.too_small);
  const int64_t n_bucketed = br.bucketed;
  EXPECT_EQ(assign_buckets(*m, bo, false).changed, 0);

  // Cache: encode once; re-run skips; reader returns the pixels-codec latent of the bucketed crop.
  CacheOptions co;
  co.out_dir = (root / "cache").string();
  co.stage = 1;
  co.pixels_stride = 2;
  co.shard_bytes = 100 << 10;  // several shards
  co.progress = false;
  CacheReport cr = build_cache(cpu_backend(), *m, co);
  const int64_t n_active = m->count("status='active'");
  EXPECT_EQ(cr.latents_written, n_bucketed);
  EXPECT_EQ(cr.no_bucket, n_active - n_bucketed);
  EXPECT_GT(cr.shards, 1);
  EXPECT_FALSE(cr.text_note.empty());
  cr = build_cache(cpu_backend(), *m, co);
  EXPECT_EQ(cr.latents_written, 0);
  EXPECT_EQ(cr.latents_present, n_bucketed);
  CacheReader reader(*m, co.out_dir);
  const auto items = reader.items(1, codec_identity("pixels", 2));
  ASSERT_EQ((int64_t)items.size(), n_bucketed);
  const auto lat = reader.latent(items[0].latent_key);
  ASSERT_TRUE(lat);
  EXPECT_EQ(lat->shape(), (Shape{12, 32, 32}));
  {
    const Image img = load_image(items[0].path);
    std::vector<float> chw(3 * 64 * 64), want(chw.size());
    image_to_chw(img, chw.data());
    PixelsCodec{2}.encode(chw.data(), 64, 64, want.data());
    const float* got = lat->f32();
    float maxd = 0;
    for (size_t k = 0; k < want.size(); ++k) maxd = std::max(maxd, std::fabs(got[k] - want[k]));
    EXPECT_LT(maxd, 1e-3f);  // f16 storage
  }
  EXPECT_EQ(items[0].caption, m->training_caption(items[0].image_id));
  // Another codec identity is another key: nothing is reused.
  co.pixels_stride = 1;
  EXPECT_EQ(build_cache(cpu_backend(), *m, co).latents_written, n_bucketed);
  EXPECT_NE(error_of([] { codec_identity("flux-vae", 1); }).find("--vae"), std::string::npos);
  EXPECT_NE(error_of([] { codec_identity("sdxl-vae", 1); }).find("pixels or flux-vae"), std::string::npos);

  // Export → a model recording the export's digest → register → remove → audit.
  ExportOptions eo;
  eo.out_dir = (root / "export").string();
  eo.progress = false;
  const ExportReport er = export_dataset(*m, eo);
  EXPECT_EQ(er.images, n_active);
  std::vector<std::string> digest_lines;
  {
    std::ifstream f(root / "export" / "manifest.jsonl");
    for (std::string line; std::getline(f, line);) {
      const auto j = nlohmann::json::parse(line);
      const fs::path img = root / "export" / j["file"].get<std::string>();
      EXPECT_EQ(sha256_file(img.string()), j["sha256"].get<std::string>());
      fs::path cap = img;
      cap.replace_extension(".txt");
      EXPECT_EQ(read_text(cap).substr(0, read_text(cap).find('\n')), j["captions"][0].get<std::string>());
      digest_lines.push_back(j["sha256"].get<std::string>() + " " + j["license"].get<std::string>() + "\n");
    }
  }
  EXPECT_EQ(dataset_digest(digest_lines), er.digest);
  {  // the digest the trainer records for a folder (data/provenance.h) is the export's
    const LicenseManifest lm = LicenseManifest::load((root / "export" / "manifest.jsonl").string());
    std::vector<const ProvenanceEntry*> used;
    for (const auto& e : lm.entries()) used.push_back(&e);
    EXPECT_EQ(summarize(used).digest, er.digest);
    EXPECT_EQ((int64_t)summarize(used).images, er.images);
  }
  EXPECT_NE(error_of([&] { export_dataset(*m, eo); }).find("--force"), std::string::npos);
  auto write_model = [&](const std::string& path, const std::string& digest) {
    SafetensorsWriter w;
    Tensor t = Tensor::zeros({2});
    w.add("x", t);
    nlohmann::json ds = {{"digest", digest}, {"images", n_active}, {"licenses", {{"CC0-1.0", n_active}}},
                         {"sources", {{"oboro data synth", n_active}}}, {"attribution", {"oboro synthetic data (seed 4)"}}};
    w.set_metadata("oboro.dataset", ds.dump());
    w.write(path);
  };
  const std::string model = (root / "model.safetensors").string();
  write_model(model, er.digest);
  const ModelDataset md = read_model_dataset(model);
  EXPECT_EQ(md.digest, er.digest);
  EXPECT_EQ(md.licenses.at("CC0-1.0"), n_active);
  RegisterReport rr = register_model(*m, model);
  EXPECT_EQ(rr.images, n_active);
  EXPECT_EQ(rr.linked_by.rfind("export ", 0), 0u);
  EXPECT_TRUE(register_model(*m, model).already);
  // A model trained on another set is refused, naming the fix; --data links by the folder's manifest.jsonl.
  const std::string other = (root / "other.safetensors").string();
  write_model(other, "sha256:" + std::string(64, 'f'));
  EXPECT_NE(error_of([&] { register_model(*m, other); }).find("--data"), std::string::npos);
  // --data: a model trained on a folder that is not an export is linked through its manifest.jsonl.
  {
    std::ifstream f(root / "export" / "manifest.jsonl");
    std::string l1, l2;
    std::getline(f, l1);
    std::getline(f, l2);
    write_text(root / "subset" / "manifest.jsonl", l1 + "\n" + l2 + "\n");
  }
  const std::string third = (root / "third.safetensors").string();
  write_model(third, dataset_digest({digest_lines[0], digest_lines[1]}));
  EXPECT_NE(error_of([&] { register_model(*m, third, (root / "export").string()); }).find("differs"), std::string::npos);
  rr = register_model(*m, third, (root / "subset").string());
  EXPECT_EQ(rr.linked_by.rfind("data folder ", 0), 0u);
  EXPECT_EQ(rr.images, 2);
  const std::string victim = digest_lines[0].substr(0, 64);  // in the export and in the subset
  const RemoveReport rm = remove_image(*m, victim.substr(0, 12), "rights holder request");
  ASSERT_EQ(rm.rows.size(), 1u);
  EXPECT_EQ(rm.models.size(), 2u);
  EXPECT_EQ(rm.exports.size(), 1u);
  EXPECT_EQ(status_of(*m, "/" + rm.rows[0].relpath, &why), "removed");
  EXPECT_EQ(why, "rights holder request");
  EXPECT_NE(error_of([&] { remove_image(*m, "abc", "x"); }).find("64 hex"), std::string::npos);
  EXPECT_NE(error_of([&] { remove_image(*m, std::string(64, '9'), "x"); }).find("no image"), std::string::npos);
  EXPECT_NE(error_of([&] { remove_image(*m, victim, " "); }).find("--reason"), std::string::npos);
  EXPECT_NE(error_of([&] { read_model_dataset(db); }).find(db), std::string::npos);

  // The CLI on the same manifest: list, remove, audit.
  Result r = run("data list --manifest " + q(db) + " --status removed");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines(r.out), (int)m->count("status='removed'"));
  EXPECT_NE(r.out.find(rm.rows[0].relpath), std::string::npos);
  r = run("data list --manifest " + q(db));
  EXPECT_EQ(lines(r.out), 72);
  r = run("data audit " + model + " --manifest " + q(db));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(er.digest), std::string::npos);
  EXPECT_NE(r.out.find("CC0-1.0"), std::string::npos);
  EXPECT_NE(r.out.find("oboro synthetic data (seed 4)"), std::string::npos);
  EXPECT_NE(r.out.find("rights holder request"), std::string::npos);
  r = run("data remove --manifest " + q(db) + " --hash " + digest_lines[2].substr(0, 64) + " --reason \"licence withdrawn\"");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(fs::absolute(model).lexically_normal().string()), std::string::npos) << r.out;
}

TEST_P(ManifestDb, TextCacheWithAFrozenEncoderAndVaeLatents) {
  const fs::path root = fresh_dir("textcache");
  fs::create_directories(root / "d");
  for (int i = 0; i < 3; ++i) {
    save_png((root / "d" / str("t", i, ".png")).string(), synth::make_image(8, (uint64_t)i, 64, 64));
    write_text(root / "d" / str("t", i, ".txt"), i < 2 ? "a red circle above a blue square\n" : str("a green triangle number ", i, "\n"));
  }
  std::vector<std::string> corpus;
  for (const char* c : {"red", "green", "blue"})
    for (const char* s : {"circle", "square", "triangle"}) corpus.push_back(str("a ", c, " ", s, " above a ", s, " number ", c));
  train_vocab(corpus, 40, (root / "voc").string());
  T5Config cfg;
  cfg.vocab_size = Tokenizer::load((root / "voc.model").string()).vocab_size();
  cfg.d_model = 16, cfg.d_kv = 8, cfg.num_heads = 2, cfg.d_ff = 32, cfg.num_layers = 1;
  {
    auto t5 = std::make_unique<T5Encoder>(cfg, cpu_backend());
    t5->init_weights(1);
    TextEncoder(Tokenizer::load((root / "voc.model").string()), std::move(t5)).save((root / "te.safetensors").string());
  }
  auto m = Manifest::open(target(root, "m"), true);
  ingest(*m, quiet(root / "d", "CC0-1.0"));
  BucketOptions bo;
  bo.stage = 2;
  assign_buckets(*m, bo, false);  // 64×64 → stage 2 never upscales: 64² buckets
  CacheOptions co;
  co.out_dir = (root / "cache").string();
  co.text_encoder = (root / "te.safetensors").string();
  co.max_tokens = 16;
  co.progress = false;
  CacheReport r = build_cache(cpu_backend(), *m, co);
  EXPECT_EQ(r.latents_written, 3);
  EXPECT_EQ(r.texts_written, 2);  // identical captions share one entry
  EXPECT_TRUE(r.text_note.empty());
  r = build_cache(cpu_backend(), *m, co);
  EXPECT_EQ(r.texts_written, 0);
  EXPECT_EQ(r.texts_present, 3);
  CacheReader reader(*m, co.out_dir);
  const auto items = reader.items(2, codec_identity("pixels", 1));
  ASSERT_EQ(items.size(), 3u);
  auto te = TextEncoder::load(co.text_encoder, cpu_backend());
  for (const auto& it : items) {
    ASSERT_FALSE(it.text_key.empty());
    const auto t = reader.text(it.text_key);
    ASSERT_TRUE(t);
    const TextBatch tb = te->encode({it.caption}, false, 16);
    ASSERT_EQ(t->shape(), (Shape{tb.L, 16}));
    float maxd = 0;  // batched with other captions in the cache: GEMM blocking may differ in the last bits
    const std::vector<float> hidden = download_all(tb.hidden);
    for (int64_t k = 0; k < t->numel(); ++k) maxd = std::max(maxd, std::fabs(t->f32()[k] - hidden[(size_t)k]));
    EXPECT_LT(maxd, 1e-4f);
  }
  // A new quality tag changes the training caption, so the text entry is re-encoded.
  write_text(root / "s.csv", items[0].path + ",6.1\n");
  ScoreOptions so;
  so.file = (root / "s.csv").string();
  so.progress = false;
  apply_scores(*m, so);
  r = build_cache(cpu_backend(), *m, co);
  EXPECT_EQ(r.texts_written, 1);
  EXPECT_EQ(r.latents_written, 0);

  // flux-vae latents (a tiny random VAE with the real structure, stride 2): keyed by the VAE file's hash.
  VaeConfig vc;
  vc.ch = 32, vc.ch_mult = {1, 2}, vc.enc_blocks = 1, vc.dec_blocks = 1, vc.z_channels = 4;
  {
    Vae vae(vc, cpu_backend());
    vae.init_random(3);
    vae.save((root / "ae.safetensors").string());
  }
  // (one active image is enough: the VAE is slow under the sanitizers)
  for (size_t k = 1; k < items.size(); ++k) remove_image(*m, m->image_by_id(items[k].image_id)->sha256, "test");
  CacheOptions vo;
  vo.out_dir = co.out_dir;
  vo.codec = "flux-vae";
  vo.vae = (root / "ae.safetensors").string();
  vo.progress = false;
  r = build_cache(cpu_backend(), *m, vo);
  EXPECT_EQ(r.latents_written, 1);
  EXPECT_EQ(r.codec_id.rfind("flux-vae/", 0), 0u);
  EXPECT_EQ(build_cache(cpu_backend(), *m, vo).latents_present, 1);
  const auto vitems = reader.items(2, r.codec_id);
  ASSERT_EQ(vitems.size(), 1u);
  const auto vl = reader.latent(vitems[0].latent_key);
  ASSERT_TRUE(vl);
  EXPECT_EQ(vl->shape(), (Shape{4, 32, 32}));
  const LatentCodec lc = LatentCodec::open("flux-vae", 1, vo.vae, cpu_backend(), "--vae");
  std::vector<float> chw(3 * 64 * 64), want(4 * 32 * 32);
  image_to_chw(load_image(vitems[0].path), chw.data());
  lc.encode(chw.data(), 64, 64, want.data());
  float maxd = 0, maxv = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    maxd = std::max(maxd, std::fabs(vl->f32()[k] - want[k]));
    maxv = std::max(maxv, std::fabs(want[k]));
  }
  EXPECT_LT(maxd, 2e-3f * std::max(1.f, maxv));  // f16 storage
  EXPECT_NE(error_of([&] { CacheOptions b = vo; b.vae.clear(); build_cache(cpu_backend(), *m, b); }).find("--vae"), std::string::npos);
}

TEST_P(ManifestDb, CliContractAndErrors) {
  const fs::path d = make_folder("cli");
  const std::string db = target(d.parent_path(), "cli");
  Result r = run("data ingest " + d.string() + " --manifest " + q(db) + " --license CC0-1.0 -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("7 images found, 7 added"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("e.png"), std::string::npos);  // the corrupt image is warned about
  r = run("data list --manifest " + q(db) + " --status active");
  EXPECT_EQ(lines(r.out), 4);  // a, b, c (--license), f.png
  r = run("data dedup --manifest " + q(db) + " --eps 0.1 -q");
  EXPECT_EQ(r.code, 0) << r.err;
  r = run("data bucket --manifest " + q(db) + " --stage 2 --dry-run");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("none: too small"), std::string::npos);
  r = run("data stats --manifest " + q(db));
  EXPECT_EQ(r.code, 0) << r.err;
  const std::string copy = (d.parent_path() / (backend() + "-copy.db")).string();
  fs::remove(copy);
  r = run("data manifest copy " + q(db) + " " + copy + " -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("verified"), std::string::npos) << r.out;
  auto body = [](const std::string& s) { return s.substr(s.find(':')); };  // stats without the manifest's name
  EXPECT_EQ(body(run("data stats --manifest " + copy).out), body(run("data stats --manifest " + q(db)).out));
  // Failures: one line on stderr naming the thing and the fix, non-zero exit.
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"data list --manifest " + d.string() + "/none.db", "oboro data ingest"},
           {"data manifest copy " + d.string() + "/none.db " + d.string() + "/x.db", "no such manifest"},
           {"data manifest copy " + q(db) + " " + copy, "already exists"},
           {"data ingest " + d.string() + "/nope --manifest " + q(db), "no such folder"},
           {"data ingest " + d.string() + " --manifest " + q(db) + " --license \"CC BY/NC\"", "SPDX"},
           {"data ingest " + d.string() + " --manifest " + q(db) + " --shard 5/2", "--shard"},
           {"data dedup --manifest " + q(db) + " --eps 0", "--eps"},
           {"data remove --manifest " + q(db) + " --hash zz --reason x", "--hash"},
           {"data audit " + d.string() + "/a.png", "a.png"},
           {"data score --manifest " + q(db) + " --scores " + d.string() + "/none.csv", "none.csv"},
           {"data cache --manifest " + q(db) + " --out " + d.string() + "/c --codec flux-vae", "--vae"}}) {
    r = run(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(lines(r.err), 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
  }
}

OBORO_MANIFEST_BACKENDS(ManifestDb);
