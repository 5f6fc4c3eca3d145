// oboro data ingest: folders (or a kohya TOML) → manifest rows, in batches of one transaction each.
#include "core/error.h"
#include "data/dataset.h"
#include "data/features.h"
#include "data/ingest_file.h"
#include "data/manifest.h"
#include "data/progress.h"
#include "data/work_claims.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sys/stat.h>

namespace oboro {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using ingest_file::Candidate;
using ingest_file::Work;
using ingest_file::caption_path;
using ingest_file::licence_path;

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

// Where the candidates come from: listed by a kohya TOML (usually small), or streamed from a folder.
struct Sources {
  bool toml = false;
  std::vector<Candidate> listed;   // toml
  std::vector<std::string> roots;  // image folders (their manifest.jsonl files are staged)
  fs::path root_dir;               // folder
};

// Checks the source is a folder or a .toml and lists the TOML's images (a folder is walked later).
Sources find_sources(const IngestOptions& opt) {
  std::error_code ec;
  Sources src;
  src.toml = fs::is_regular_file(opt.source, ec);
  if (src.toml) {
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
      src.listed.push_back(c);
      if (std::find(src.roots.begin(), src.roots.end(), c.root) == src.roots.end()) src.roots.push_back(c.root);
    }
  } else {
    if (!fs::is_directory(opt.source, ec)) fail(opt.source, ": not a folder or a .toml file");
    src.root_dir = fs::absolute(opt.source, ec).lexically_normal();
    if (src.root_dir.has_filename() == false) src.root_dir = src.root_dir.parent_path();
    src.roots.push_back(src.root_dir.string());
  }
  return src;
}

// Total for the progress bar (a directory walk reads no file contents).
int64_t count_candidates(const Sources& src) {
  int64_t total = (int64_t)src.listed.size();
  if (!src.toml) {
    Walker w(src.root_dir);
    fs::path p;
    while (w.next(&p)) ++total;
  }
  return total;
}

// Hands out the candidates one at a time: the TOML's list, or a fresh walk of the folder.
class CandidateStream {
 public:
  explicit CandidateStream(const Sources& src)
      : src_(src), walker_(src.toml ? nullptr : std::make_unique<Walker>(src.root_dir)) {}
  bool next(Candidate* c) {
    if (src_.toml) {
      if (pos_ >= src_.listed.size()) return false;
      *c = src_.listed[pos_++];
      return true;
    }
    fs::path p;
    if (!walker_->next(&p)) return false;
    c->path = p.lexically_normal().string();
    c->root = src_.root_dir.string();
    c->relpath = p.lexically_normal().lexically_relative(src_.root_dir).generic_string();
    return true;
  }

 private:
  const Sources& src_;
  std::unique_ptr<Walker> walker_;
  size_t pos_ = 0;
};

// The statements a shard's batches run, prepared once per shard.
struct IngestStmts {
  explicit IngestStmts(sql::Db& db)
      : q_row(db, "SELECT id, sig, sha256, status, reason_kind FROM images WHERE path=?"),
        q_jsonl(db, "SELECT record FROM jsonl_records WHERE root=? AND file=?"),
        upsert(db,
               "INSERT INTO images(path, root, relpath, sha256, file_size, width, height, source, original, license, "
               "license_from, attribution, status, reason, reason_kind, sig, ingested_at, updated_at) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET root=excluded.root, "
               "relpath=excluded.relpath, sha256=excluded.sha256, file_size=excluded.file_size, width=excluded.width, "
               "height=excluded.height, source=excluded.source, original=excluded.original, license=excluded.license, "
               "license_from=excluded.license_from, attribution=excluded.attribution, status=excluded.status, "
               "reason=excluded.reason, reason_kind=excluded.reason_kind, sig=excluded.sig, "
               "updated_at=excluded.updated_at RETURNING id"),
        del_caps(db, "DELETE FROM captions WHERE image_id=?"),
        ins_cap(db, "INSERT INTO captions(image_id, idx, origin, text) VALUES (?,?,?,?)"),
        ins_feat(db, "INSERT INTO features(image_id, extractor, vec) VALUES (?,?,?) ON CONFLICT(image_id, extractor) DO UPDATE SET vec=excluded.vec"),
        stale(stale_stmts(db)),
        clear_score(db, "UPDATE images SET score=NULL, quality='' WHERE id=?") {}
  sql::Stmt q_row, q_jsonl, upsert, del_caps, ins_cap, ins_feat;
  std::vector<sql::Stmt> stale;  // derived data of an image whose content changed
  sql::Stmt clear_score;

 private:
  static std::vector<sql::Stmt> stale_stmts(sql::Db& db) {
    std::vector<sql::Stmt> out;
    for (const char* t : {"scores", "buckets", "image_cache", "features"})
      out.emplace_back(db, std::string("DELETE FROM ") + t + " WHERE image_id=?");
    return out;
  }
};

// A candidate's work item: its manifest.jsonl record and its signature (what "changed" compares).
Work describe_candidate(const Candidate& c, sql::Stmt& q_jsonl, const std::string& default_license,
                        const std::string& ext_id) {
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
  return w;
}

// Fills w's existing-row fields from the manifest; true when that row has the same signature (nothing to do).
bool row_unchanged(Work& w, sql::Stmt& q_row) {
  q_row.bind(1, w.c.path);
  if (!q_row.step()) {
    q_row.reset();
    return false;
  }
  w.existing_id = q_row.i64(0);
  const std::string old_sig = q_row.text(1);
  w.existing_sha = q_row.text(2);
  w.existing_status = q_row.text(3);
  w.existing_kind = q_row.text(4);
  q_row.reset();
  return old_sig == w.sig;
}

// 1. Collects a batch of this shard's changed candidates (stat + DB lookups, main thread); false when the
// candidates ran out. *looked counts the candidates seen (for the progress bar).
bool collect_batch(CandidateStream& cands, IngestStmts& st, const IngestOptions& opt, const std::string& default_license,
                   const std::string& ext_id, std::vector<Work>* batch, int64_t* looked, IngestReport& rep) {
  batch->clear();
  while ((int)batch->size() < opt.batch) {
    Candidate c;
    if (!cands.next(&c)) return false;
    ++rep.found;
    ++*looked;
    if (!opt.shard.mine(c.relpath)) {
      ++rep.other_shard;
      continue;
    }
    Work w = describe_candidate(c, st.q_jsonl, default_license, ext_id);
    if (row_unchanged(w, st.q_row)) {
      ++rep.unchanged;
      continue;
    }
    batch->push_back(std::move(w));
  }
  return true;
}

// An image's status in the manifest, with the reason and its kind.
struct Decision {
  std::string status = "active", reason, kind;
};

// Decides w's status from its read/decode error, its licence and the policy (counted in rep).
Decision decide(const Work& w, const std::string& lic, const LicencePolicy& policy, IngestReport& rep) {
  Decision d;
  if (!w.error.empty()) {
    d.status = "removed";
    const bool mismatch = w.error.rfind("mismatch: ", 0) == 0;
    d.kind = mismatch ? "mismatch" : "corrupt";
    std::string e = w.error;
    if (e.rfind(w.c.path + ": ", 0) == 0) e = e.substr(w.c.path.size() + 2);  // the row already names the file
    d.reason = mismatch ? e.substr(10) : "corrupt: " + e;
    const std::string msg = mismatch ? w.error.substr(10) : w.error;
    warn((msg.rfind(w.c.path, 0) == 0 ? msg : w.c.path + ": " + msg) + " (recorded as removed)");
    ++(mismatch ? rep.mismatch : rep.corrupt);
  } else if (lic.empty()) {
    d.status = "removed", d.kind = "no-licence", d.reason = "no licence";
    ++rep.no_licence;
    if (rep.no_licence_paths.size() < 20) rep.no_licence_paths.push_back(w.c.path);
  } else if (!policy.allows(lic)) {
    d.status = "removed", d.kind = "licence", d.reason = "licence " + lic + " not in the allow-list";
    ++rep.not_allowed;
    if (rep.not_allowed_paths.size() < 20) rep.not_allowed_paths.push_back(w.c.path + " (" + lic + ")");
  }
  return d;
}

// Keeps the decisions of later steps (duplicate, score, manual removal) over a re-ingest of unchanged content.
void keep_later_decision(sql::Db& db, const Work& w, bool same_content, Decision& d) {
  if (d.status == "active" && same_content && w.existing_status == "removed" &&
      (w.existing_kind == "duplicate" || w.existing_kind == "score" || w.existing_kind == "manual")) {
    sql::Stmt keep(db, "SELECT reason FROM images WHERE id=?");
    keep.bind(1, w.existing_id);
    if (keep.step()) d.reason = keep.text(0);
    d.status = "removed";
    d.kind = w.existing_kind;
  }
}

// Upserts w's row (t: now), drops the derived data of changed content, and rewrites its captions and features.
void write_row(sql::Db& db, IngestStmts& st, const Work& w, const std::string& lic, const Decision& d,
               bool same_content, int64_t t, const std::string& ext_id, IngestReport& rep) {
  sql::Stmt& upsert = st.upsert;
  upsert.bind(1, w.c.path).bind(2, w.c.root).bind(3, w.c.relpath).bind(4, w.sha256).bind(5, w.size);
  upsert.bind(6, w.width).bind(7, w.height).bind(8, w.source).bind(9, w.original).bind(10, lic);
  upsert.bind(11, w.license_from).bind(12, w.attribution).bind(13, d.status).bind(14, d.reason).bind(15, d.kind);
  upsert.bind(16, w.sig).bind(17, t).bind(18, t);
  if (!upsert.step()) db.fail_sql("upsert returned no id");
  const int64_t id = upsert.i64(0);
  upsert.reset();
  if (w.existing_id >= 0) {
    ++rep.updated;
    if (!same_content) {
      for (auto& s : st.stale) s.bind(1, id).run();
      st.clear_score.bind(1, id).run();
    }
  } else {
    ++rep.added;
  }
  st.del_caps.bind(1, id).run();
  for (size_t k = 0; k < w.captions.size(); ++k)
    st.ins_cap.bind(1, id).bind(2, (int64_t)k).bind(3, w.captions[k].first).bind(4, w.captions[k].second).run();
  if (!w.features.empty())
    st.ins_feat.bind(1, id).bind(2, ext_id).bind_blob(3, w.features.data(), w.features.size()).run();
}

// 3. Decides and writes the batch in one transaction.
void write_batch(sql::Db& db, IngestStmts& st, std::vector<Work>& batch, const LicencePolicy& policy,
                 const std::string& ext_id, IngestReport& rep) {
  if (batch.empty()) return;
  const int64_t t = now_unix();
  sql::Transaction tx(db);
  for (Work& w : batch) {
    std::string lic;
    try {
      lic = w.license.empty() ? "" : normalise_spdx(w.license, w.c.path);
    } catch (const Error&) {
      lic = w.license;  // kept as written; never allowed
    }
    Decision d = decide(w, lic, policy, rep);
    const bool same_content = w.existing_id >= 0 && w.existing_sha == w.sha256;
    keep_later_decision(db, w, same_content, d);
    if (d.status == "active") ++rep.active;
    write_row(db, st, w, lic, d, same_content, t, ext_id, rep);
  }
  tx.commit();
}

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

  const Sources src = find_sources(opt);
  for (const auto& r : src.roots) stage_jsonl(m, r);
  const int64_t total = count_candidates(src);
  if (total == 0)
    fail(opt.source, ": found no images (looked for .png .jpg .jpeg .webp .bmp, hidden folders skipped)");
  Progress prog("ingest " + opt.source + (opt.shard.count > 1 ? " shard " + std::to_string(opt.shard.index) + "/" +
                                                                     std::to_string(opt.shard.count)
                                                               : ""),
                total, opt.progress);

  sql::Db& db = m.db();
  IngestStmts st(db);
  CandidateStream cands(src);
  bool more = true;
  std::vector<Work> batch;
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  while (more) {
    const auto t_scan = now();
    int64_t looked = 0;
    more = collect_batch(cands, st, opt, default_license, ext_id, &batch, &looked, rep);
    const auto t_decode = now();
    rep.scan_seconds += secs(t_scan, t_decode);
    ingest_file::decode_batch(batch, *extractor, default_license);
    const auto t_write = now();
    rep.decode_seconds += secs(t_decode, t_write);
    write_batch(db, st, batch, policy, ext_id, rep);
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
