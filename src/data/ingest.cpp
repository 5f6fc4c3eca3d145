// oboro data ingest: folders (or a kohya TOML) → manifest rows, in batches of one transaction each.
#include "core/error.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "data/dataset.h"
#include "data/features.h"
#include "data/manifest.h"
#include "data/progress.h"
#include "data/work_claims.h"
#include "io/image.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>

namespace oboro {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* const kImageExts[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp"};

bool is_image_file(const fs::path& p) {
  std::string e = p.extension().string();
  for (auto& c : e) c = (char)std::tolower((unsigned char)c);
  for (const char* x : kImageExts)
    if (e == x) return true;
  return false;
}

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

void warn(const std::string& msg) { std::fprintf(stderr, "oboro: warning: %s\n", msg.c_str()); }

// One image to look at.
struct Candidate {
  std::string path, root, relpath, caption_ext = ".txt", fallback_caption;
};

// Streams the image files of a folder tree (hidden entries skipped, like the trainer's Dataset).
class Walker {
 public:
  explicit Walker(const fs::path& root) : root_(root) {
    it_ = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec_);
    if (ec_) fail(root.string(), ": cannot list the folder: ", ec_.message());
  }
  bool next(fs::path* out) {
    for (; it_ != fs::recursive_directory_iterator(); ) {
      const fs::directory_entry e = *it_;
      const bool is_hidden = hidden(e.path());
      std::error_code ec;
      const bool dir = e.is_directory(ec);
      if (is_hidden && dir) it_.disable_recursion_pending();
      it_.increment(ec_);
      if (ec_) fail(root_.string(), ": cannot list the folder: ", ec_.message());
      if (!is_hidden && !dir && is_image_file(e.path()) && e.is_regular_file(ec)) {
        *out = e.path();
        return true;
      }
    }
    return false;
  }

 private:
  fs::path root_;
  fs::recursive_directory_iterator it_;
  std::error_code ec_;
};

std::string read_text(const fs::path& p, bool* ok) {
  std::ifstream f(p, std::ios::binary);
  *ok = (bool)f;
  std::string t((std::istreambuf_iterator<char>(f)), {});
  if (t.compare(0, 3, "\xef\xbb\xbf") == 0) t.erase(0, 3);
  return t;
}

std::string read_bytes(const std::string& p, bool* ok) {
  std::string out;
  *ok = false;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return out;
  struct stat st;
  if (::fstat(fileno(f), &st) == 0 && st.st_size > 0) out.resize((size_t)st.st_size);
  size_t got = out.empty() ? 0 : std::fread(out.data(), 1, out.size(), f);
  out.resize(got);
  char buf[65536];  // anything beyond the size at open time (a file still being written)
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  *ok = !std::ferror(f);
  std::fclose(f);
  return out;
}

std::vector<std::string> nonempty_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream ss(text);
  for (std::string l; std::getline(ss, l);)
    if (!(l = trim_copy(l)).empty()) out.push_back(l);
  return out;
}

// size:mtime of a file, "-" when absent (part of a row's signature).
std::string file_sig(const std::string& p, int64_t* size = nullptr) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return "-";
  if (size) *size = (int64_t)st.st_size;
  return std::to_string((long long)st.st_size) + ":" + std::to_string((long long)st.st_mtim.tv_sec) + "." +
         std::to_string((long long)st.st_mtim.tv_nsec);
}

std::string fnv_hex(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)h);
  return b;
}

std::string caption_path(const std::string& image, const std::string& ext) {
  fs::path p(image);
  p.replace_extension(ext);
  return p.string();
}

// Sidecar licence files: REUSE style `img.png.license`, or `img.license`.
std::string licence_path(const std::string& image) {
  std::error_code ec;
  const std::string a = image + ".license";
  if (fs::exists(a, ec)) return a;
  fs::path b(image);
  b.replace_extension(".license");
  return fs::exists(b, ec) ? b.string() : "";
}

// Stages DIR/manifest.jsonl into jsonl_records when it changed since the last ingest.
void stage_jsonl(Manifest& m, const std::string& root) {
  const std::string path = (fs::path(root) / "manifest.jsonl").string();
  const std::string sig = file_sig(path);
  const std::string key = "jsonl_sig:" + root;
  if (m.meta(key, "-") == sig) return;
  sql::Db& db = m.db();
  sql::Transaction tx(db);
  sql::Stmt del(db, "DELETE FROM jsonl_records WHERE root=?");
  del.bind(1, root).run();
  if (sig != "-") {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, ": cannot read: check its permissions");
    sql::Stmt ins(db, "INSERT INTO jsonl_records(root, file, record) VALUES (?, ?, ?) ON CONFLICT(root, file) DO UPDATE SET record=excluded.record");
    std::string line;
    int64_t lineno = 0, n = 0;
    while (std::getline(f, line)) {
      ++lineno;
      if (trim_copy(line).empty()) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const std::exception& e) {
        fail(path, ":", lineno, ": not valid JSON (", e.what(), "): each line must be one object with \"file\", "
             "\"license\", ...");
      }
      if (!j.is_object() || !j.contains("file") || !j["file"].is_string())
        fail(path, ":", lineno, ": each line needs \"file\" (the image path relative to ", root, ")");
      for (const char* k : {"sha256", "source", "license", "attribution"})
        if (j.contains(k) && !j[k].is_string() && !j[k].is_null())
          fail(path, ":", lineno, ": \"", k, "\" must be a string");
      // "original": the file inside a package (a string), or the generator's parameters (an object), as
      // scripts/get-data writes for DiceBear avatars (data/provenance.h reads it the same way).
      if (j.contains("original") && !j["original"].is_string() && !j["original"].is_object() && !j["original"].is_null())
        fail(path, ":", lineno, ": \"original\" must be a string (the source file) or an object (generator parameters)");
      if (j.contains("captions") && !j["captions"].is_array())
        fail(path, ":", lineno, ": \"captions\" must be an array of strings");
      std::string file = fs::path(j["file"].get<std::string>()).lexically_normal().generic_string();
      ins.bind(1, root).bind(2, file).bind(3, line).run();
      ++n;
    }
    std::fprintf(stderr, "%s: %lld licence records\n", path.c_str(), (long long)n);
  }
  m.set_meta(key, sig);
  tx.commit();
}

struct Work {
  Candidate c;
  std::string sig, jsonl_record;
  int64_t existing_id = -1;
  std::string existing_sha, existing_status, existing_kind;
  // Filled by the worker:
  std::string sha256, error, license, license_from, attribution, source, original;
  std::vector<std::pair<std::string, std::string>> captions;  // (origin, text)
  int64_t size = 0;
  int width = 0, height = 0;
  std::string features;  // packed f16
};

// One shard of the source (opt.shard), in batches of one transaction each.
IngestReport ingest_shard(Manifest& m, const IngestOptions& opt) {
  IngestReport rep;
  Progress timer("", 0, false);
  std::error_code ec;
  if (opt.source.empty()) fail("data ingest: pass a dataset folder (or a kohya .toml)");
  if (!fs::exists(opt.source, ec))
    fail(opt.source, ": no such folder: pass the folder of images (with .txt captions) or a kohya dataset .toml");
  if (opt.batch < 1) fail("data ingest: --batch must be positive");
  const std::string default_license = normalise_spdx(opt.default_license, "--license");
  if (opt.policy) {
    const int64_t changed = m.set_policy(*opt.policy);
    if (changed) std::fprintf(stderr, "licence policy %s: %lld images changed status\n", opt.policy->str().c_str(), (long long)changed);
  }
  const LicencePolicy policy = m.policy();
  const std::unique_ptr<FeatureExtractor> extractor = make_extractor(opt.extractor);
  const std::string ext_id = extractor->id();
  m.set_meta("extractor", opt.extractor);

  // Candidates: streamed from a folder, or listed by a kohya TOML (usually small).
  const bool toml = fs::is_regular_file(opt.source, ec);
  std::vector<Candidate> listed;
  std::vector<std::string> roots;
  fs::path root_dir;
  if (toml) {
    const std::string ext = fs::path(opt.source).extension().string();
    if (ext != ".toml")
      fail(opt.source, ": is a file but not a .toml dataset config: pass a folder of images or a kohya dataset .toml");
    Dataset ds = Dataset::open(opt.source);
    std::set<std::string> seen;
    for (const auto& e : ds.entries()) {
      const std::string abs = fs::absolute(e.image_path, ec).lexically_normal().string();
      if (!seen.insert(abs).second) continue;  // repeats
      const DatasetSubset& s = ds.subsets()[(size_t)e.subset];
      Candidate c;
      c.path = abs;
      c.root = fs::absolute(s.image_dir, ec).lexically_normal().string();
      c.relpath = fs::path(abs).lexically_relative(c.root).generic_string();
      c.caption_ext = s.caption_extension;
      c.fallback_caption = e.caption;
      listed.push_back(c);
      if (std::find(roots.begin(), roots.end(), c.root) == roots.end()) roots.push_back(c.root);
    }
  } else {
    if (!fs::is_directory(opt.source, ec)) fail(opt.source, ": not a folder or a .toml file");
    root_dir = fs::absolute(opt.source, ec).lexically_normal();
    if (root_dir.has_filename() == false) root_dir = root_dir.parent_path();
    roots.push_back(root_dir.string());
  }
  for (const auto& r : roots) stage_jsonl(m, r);

  // Total for the progress bar (a directory walk reads no file contents).
  int64_t total = (int64_t)listed.size();
  if (!toml) {
    Walker w(root_dir);
    fs::path p;
    while (w.next(&p)) ++total;
  }
  if (total == 0)
    fail(opt.source, ": found no images (looked for .png .jpg .jpeg .webp .bmp, hidden folders skipped)");
  Progress prog("ingest " + opt.source + (opt.shard.count > 1 ? " shard " + std::to_string(opt.shard.index) + "/" +
                                                                     std::to_string(opt.shard.count)
                                                               : ""),
                total, opt.progress);

  sql::Db& db = m.db();
  sql::Stmt q_row(db, "SELECT id, sig, sha256, status, reason_kind FROM images WHERE path=?");
  sql::Stmt q_jsonl(db, "SELECT record FROM jsonl_records WHERE root=? AND file=?");
  sql::Stmt upsert(db,
                   "INSERT INTO images(path, root, relpath, sha256, file_size, width, height, source, original, license, "
                   "license_from, attribution, status, reason, reason_kind, sig, ingested_at, updated_at) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET root=excluded.root, "
                   "relpath=excluded.relpath, sha256=excluded.sha256, file_size=excluded.file_size, width=excluded.width, "
                   "height=excluded.height, source=excluded.source, original=excluded.original, license=excluded.license, "
                   "license_from=excluded.license_from, attribution=excluded.attribution, status=excluded.status, "
                   "reason=excluded.reason, reason_kind=excluded.reason_kind, sig=excluded.sig, "
                   "updated_at=excluded.updated_at RETURNING id");
  sql::Stmt del_caps(db, "DELETE FROM captions WHERE image_id=?");
  sql::Stmt ins_cap(db, "INSERT INTO captions(image_id, idx, origin, text) VALUES (?,?,?,?)");
  sql::Stmt ins_feat(db, "INSERT INTO features(image_id, extractor, vec) VALUES (?,?,?) ON CONFLICT(image_id, extractor) DO UPDATE SET vec=excluded.vec");
  std::vector<sql::Stmt> stale;  // derived data of an image whose content changed
  for (const char* t : {"scores", "buckets", "image_cache", "features"})
    stale.emplace_back(db, std::string("DELETE FROM ") + t + " WHERE image_id=?");
  sql::Stmt clear_score(db, "UPDATE images SET score=NULL, quality='' WHERE id=?");

  std::unique_ptr<Walker> walker = toml ? nullptr : std::make_unique<Walker>(root_dir);
  size_t listed_pos = 0;
  auto next_candidate = [&](Candidate* c) {
    if (toml) {
      if (listed_pos >= listed.size()) return false;
      *c = listed[listed_pos++];
      return true;
    }
    fs::path p;
    if (!walker->next(&p)) return false;
    c->path = p.lexically_normal().string();
    c->root = root_dir.string();
    c->relpath = p.lexically_normal().lexically_relative(root_dir).generic_string();
    return true;
  };

  bool more = true;
  std::vector<Work> batch;
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  while (more) {
    const auto t_scan = now();
    // 1. Collect a batch of this shard's changed candidates (stat + DB lookups, main thread).
    batch.clear();
    int64_t looked = 0;
    while ((int)batch.size() < opt.batch) {
      Candidate c;
      if (!next_candidate(&c)) {
        more = false;
        break;
      }
      ++rep.found;
      ++looked;
      if (!opt.shard.mine(c.relpath)) {
        ++rep.other_shard;
        continue;
      }
      Work w;
      w.c = c;
      q_jsonl.bind(1, c.root).bind(2, c.relpath);
      if (q_jsonl.step()) w.jsonl_record = q_jsonl.text(0);
      q_jsonl.reset();
      const std::string lic = licence_path(c.path);
      // --license matters (and is part of the signature) only for images with no licence of their own.
      bool own_licence = !lic.empty();
      if (!own_licence && !w.jsonl_record.empty()) {
        const json j = json::parse(w.jsonl_record, nullptr, false);
        own_licence = j.is_object() && j.contains("license") && j["license"].is_string() &&
                      !trim_copy(j["license"].get<std::string>()).empty();
      }
      w.sig = file_sig(c.path) + "|" + file_sig(caption_path(c.path, c.caption_ext)) + "|" +
              (lic.empty() ? "-" : lic + "=" + file_sig(lic)) + "|" + fnv_hex(w.jsonl_record) + "|" +
              (own_licence ? "" : default_license) + "|" + fnv_hex(c.fallback_caption) + "|" + ext_id;
      q_row.bind(1, c.path);
      if (q_row.step()) {
        w.existing_id = q_row.i64(0);
        const std::string old_sig = q_row.text(1);
        w.existing_sha = q_row.text(2);
        w.existing_status = q_row.text(3);
        w.existing_kind = q_row.text(4);
        q_row.reset();
        if (old_sig == w.sig) {
          ++rep.unchanged;
          continue;
        }
      } else {
        q_row.reset();
      }
      batch.push_back(std::move(w));
    }
    // 2. Read, hash, decode and embed in parallel (no DB access).
    const auto t_decode = now();
    rep.scan_seconds += secs(t_scan, t_decode);
    parallel_for((int64_t)batch.size(), [&](int64_t b, int64_t e) {
      std::vector<float> feat((size_t)extractor->dim());
      for (int64_t i = b; i < e; ++i) {
        Work& w = batch[(size_t)i];
        bool ok = false;
        const std::string bytes = read_bytes(w.c.path, &ok);
        if (!ok) {
          w.error = "unreadable: check the file's permissions";
          w.sha256 = sha256_hex("");
        } else {
          w.size = (int64_t)bytes.size();
          w.sha256 = sha256_hex(bytes);
          try {
            Image img = decode_image(bytes, w.c.path);
            w.width = img.width;
            w.height = img.height;
            extractor->extract(img, feat.data());
            w.features = pack_f16(feat.data(), extractor->dim());
          } catch (const std::exception& ex) {
            w.error = ex.what();
          }
        }
        // Captions: every non-empty line of the sidecar, then manifest.jsonl captions, then the TOML's class tokens.
        bool cok = false;
        const std::string cap = read_text(caption_path(w.c.path, w.c.caption_ext), &cok);
        if (cok)
          for (auto& l : nonempty_lines(cap)) w.captions.push_back({"sidecar", l});
        // Licence: manifest.jsonl record, else sidecar .license, else --license.
        if (!w.jsonl_record.empty()) {
          const json j = json::parse(w.jsonl_record);
          auto s = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
          w.source = s("source");
          w.original = j.contains("original") && j["original"].is_object() ? j["original"].dump() : s("original");
          w.attribution = s("attribution");
          w.license = s("license");
          if (!w.license.empty()) w.license_from = "manifest.jsonl";
          if (j.contains("captions"))
            for (const auto& c : j["captions"])
              if (c.is_string()) {
                const std::string t = trim_copy(c.get<std::string>());
                bool dup = t.empty();
                for (const auto& [o, x] : w.captions) dup = dup || x == t;
                if (!dup) w.captions.push_back({"manifest.jsonl", t});
              }
          const std::string want = s("sha256");
          if (!want.empty() && w.error.empty() && want != w.sha256)
            w.error = "mismatch: content differs from manifest.jsonl (sha256 " + want.substr(0, 12) + "... expected, the file has " +
                      w.sha256.substr(0, 12) + "...): fix the record or restore the file";
        }
        if (w.license.empty()) {
          const std::string lp = licence_path(w.c.path);
          if (!lp.empty()) {
            bool lok = false;
            const std::vector<std::string> lines = nonempty_lines(read_text(lp, &lok));
            std::string lic, attr;
            for (const auto& l : lines) {
              if (l.rfind("SPDX-License-Identifier:", 0) == 0) lic = trim_copy(l.substr(24));
              else if (l.rfind("SPDX-FileCopyrightText:", 0) == 0) attr = trim_copy(l.substr(23));
            }
            if (lic.empty() && !lines.empty()) {
              lic = lines[0];
              if (lines.size() > 1) attr = lines[1];
            }
            if (!lic.empty()) {
              w.license = lic;
              w.license_from = "sidecar";
              if (w.attribution.empty()) w.attribution = attr;
            }
          }
        }
        if (w.license.empty() && !default_license.empty()) {
          w.license = default_license;
          w.license_from = "--license";
        }
        if (w.captions.empty() && !w.c.fallback_caption.empty()) w.captions.push_back({"toml", w.c.fallback_caption});
      }
    });
    // 3. Decide and write the batch in one transaction.
    const auto t_write = now();
    rep.decode_seconds += secs(t_decode, t_write);
    if (!batch.empty()) {
      const int64_t t = now_unix();
      sql::Transaction tx(db);
      for (Work& w : batch) {
        std::string status = "active", reason, kind;
        std::string lic;
        try {
          lic = w.license.empty() ? "" : normalise_spdx(w.license, w.c.path);
        } catch (const Error&) {
          lic = w.license;  // kept as written; never allowed
        }
        if (!w.error.empty()) {
          status = "removed";
          const bool mismatch = w.error.rfind("mismatch: ", 0) == 0;
          kind = mismatch ? "mismatch" : "corrupt";
          std::string e = w.error;
          if (e.rfind(w.c.path + ": ", 0) == 0) e = e.substr(w.c.path.size() + 2);  // the row already names the file
          reason = mismatch ? e.substr(10) : "corrupt: " + e;
          const std::string msg = mismatch ? w.error.substr(10) : w.error;
          warn((msg.rfind(w.c.path, 0) == 0 ? msg : w.c.path + ": " + msg) + " (recorded as removed)");
          ++(mismatch ? rep.mismatch : rep.corrupt);
        } else if (lic.empty()) {
          status = "removed", kind = "no-licence", reason = "no licence";
          ++rep.no_licence;
          if (rep.no_licence_paths.size() < 20) rep.no_licence_paths.push_back(w.c.path);
        } else if (!policy.allows(lic)) {
          status = "removed", kind = "licence", reason = "licence " + lic + " not in the allow-list";
          ++rep.not_allowed;
          if (rep.not_allowed_paths.size() < 20) rep.not_allowed_paths.push_back(w.c.path + " (" + lic + ")");
        }
        // Decisions of later steps (duplicate, score, manual removal) survive a re-ingest of unchanged content.
        const bool same_content = w.existing_id >= 0 && w.existing_sha == w.sha256;
        if (status == "active" && same_content && w.existing_status == "removed" &&
            (w.existing_kind == "duplicate" || w.existing_kind == "score" || w.existing_kind == "manual")) {
          sql::Stmt keep(db, "SELECT reason FROM images WHERE id=?");
          keep.bind(1, w.existing_id);
          if (keep.step()) reason = keep.text(0);
          status = "removed";
          kind = w.existing_kind;
        }
        if (status == "active") ++rep.active;
        upsert.bind(1, w.c.path).bind(2, w.c.root).bind(3, w.c.relpath).bind(4, w.sha256).bind(5, w.size);
        upsert.bind(6, w.width).bind(7, w.height).bind(8, w.source).bind(9, w.original).bind(10, lic);
        upsert.bind(11, w.license_from).bind(12, w.attribution).bind(13, status).bind(14, reason).bind(15, kind);
        upsert.bind(16, w.sig).bind(17, t).bind(18, t);
        if (!upsert.step()) db.fail_sql("upsert returned no id");
        const int64_t id = upsert.i64(0);
        upsert.reset();
        if (w.existing_id >= 0) {
          ++rep.updated;
          if (!same_content) {
            for (auto& s : stale) s.bind(1, id).run();
            clear_score.bind(1, id).run();
          }
        } else {
          ++rep.added;
        }
        del_caps.bind(1, id).run();
        for (size_t k = 0; k < w.captions.size(); ++k)
          ins_cap.bind(1, id).bind(2, (int64_t)k).bind(3, w.captions[k].first).bind(4, w.captions[k].second).run();
        if (!w.features.empty()) ins_feat.bind(1, id).bind(2, ext_id).bind_blob(3, w.features.data(), w.features.size()).run();
      }
      tx.commit();
    }
    rep.write_seconds += secs(t_write, now());
    prog.add(looked);
  }
  prog.finish();
  rep.seconds = timer.seconds();
  return rep;
}

}  // namespace

IngestReport ingest(Manifest& m, const IngestOptions& opt) {
  std::error_code ec;
  const fs::path canon = fs::weakly_canonical(fs::absolute(opt.source, ec), ec);
  WorkClaims claims(m, "ingest " + (canon.empty() ? opt.source : canon.string()), opt.shard);
  IngestReport rep;
  int64_t mine = 0;
  bool first = true;
  while (auto shard = claims.next()) {
    IngestOptions o = opt;
    o.shard = *shard;
    IngestReport r = ingest_shard(m, o);
    claims.done();
    mine += r.found - r.other_shard;
    if (first) {
      rep = std::move(r);
      first = false;
      continue;
    }
    rep.unchanged += r.unchanged, rep.added += r.added, rep.updated += r.updated, rep.active += r.active;
    rep.corrupt += r.corrupt, rep.no_licence += r.no_licence, rep.not_allowed += r.not_allowed, rep.mismatch += r.mismatch;
    for (auto& p : r.no_licence_paths)
      if (rep.no_licence_paths.size() < 20) rep.no_licence_paths.push_back(p);
    for (auto& p : r.not_allowed_paths)
      if (rep.not_allowed_paths.size() < 20) rep.not_allowed_paths.push_back(p);
    rep.seconds += r.seconds, rep.scan_seconds += r.scan_seconds, rep.decode_seconds += r.decode_seconds;
    rep.write_seconds += r.write_seconds;
  }
  rep.other_shard = rep.found - mine;
  rep.shards_taken_over = claims.taken_over();
  return rep;
}

}  // namespace oboro
