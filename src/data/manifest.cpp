#include "data/manifest.h"

#include "core/error.h"
#include "core/sha256.h"
#include "data/manifest_schema.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>

namespace oboro {

namespace fs = std::filesystem;

namespace {

const char* const kKnownSpdx[] = {
    "CC0-1.0",     "CC-BY-4.0",     "CC-BY-SA-4.0",    "CC-BY-3.0",       "CC-BY-SA-3.0",  "CC-BY-2.0",
    "CC-BY-SA-2.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0",    "CC-BY-NC-ND-4.0", "CC-PDDC",
    "Apache-2.0",  "MIT",           "BSD-2-Clause",    "BSD-3-Clause",    "Unlicense",     "GPL-3.0-only",
    "GPL-3.0-or-later", "LGPL-3.0-only", "MPL-2.0",    "OFL-1.1",         "ODbL-1.0",      "PDDL-1.0"};

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isspace((unsigned char)c)) {
      if (!cur.empty()) out.push_back(cur), cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

std::string trim_copy(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace((unsigned char)s[a])) ++a;
  while (b > a && std::isspace((unsigned char)s[b - 1])) --b;
  return s.substr(a, b - a);
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---- licences ----

std::string normalise_spdx(const std::string& s, const std::string& where) {
  std::vector<std::string> toks = split_ws(trim_copy(s));
  std::string out;
  for (auto& t : toks) {
    const std::string u = lower(t);
    if (u == "or" || u == "and" || u == "with") {
      t = u == "or" ? "OR" : u == "and" ? "AND" : "WITH";
    } else {
      for (char c : t)
        if (!(std::isalnum((unsigned char)c) || c == '.' || c == '-' || c == '+' || c == ':' || c == '(' || c == ')'))
          fail(where, ": \"", s, "\" is not an SPDX licence identifier (letters, digits, '.', '-', '+'): use e.g. "
                      "CC0-1.0, CC-BY-4.0, MIT");
      for (const char* k : kKnownSpdx)
        if (u == lower(k)) t = k;
    }
    out += (out.empty() ? "" : " ") + t;
  }
  return out;
}

LicencePolicy LicencePolicy::defaults() { return {{"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "Apache-2.0", "MIT"}}; }

LicencePolicy LicencePolicy::parse(const std::string& list) {
  LicencePolicy p;
  std::string cur;
  auto flush = [&] {
    std::string t = trim_copy(cur);
    cur.clear();
    if (t.empty()) return;
    t = normalise_spdx(t, "--allow-licenses");
    if (t.find(' ') != std::string::npos)
      fail("--allow-licenses: \"", t, "\" is an expression; list single SPDX ids separated by commas");
    if (std::find(p.allowed.begin(), p.allowed.end(), t) == p.allowed.end()) p.allowed.push_back(t);
  };
  for (char c : list) {
    if (c == ',') flush();
    else cur += c;
  }
  flush();
  if (p.allowed.empty()) fail("--allow-licenses: the list is empty: name at least one SPDX id, e.g. CC0-1.0");
  return p;
}

std::string LicencePolicy::str() const {
  std::string s;
  for (const auto& a : allowed) s += (s.empty() ? "" : ",") + a;
  return s;
}

bool LicencePolicy::allows(const std::string& spdx) const {
  const std::vector<std::string> toks = split_ws(spdx);
  if (toks.empty()) return false;
  auto one = [&](const std::string& id) {
    for (const auto& a : allowed)
      if (lower(a) == lower(id)) return true;
    return false;
  };
  // Alternatives separated by OR; each alternative is ids joined by AND (WITH/parentheses: not allowed).
  bool any = false;
  std::vector<std::string> conj;
  auto close = [&] {
    if (conj.empty()) return;
    bool all = true;
    for (const auto& id : conj) all = all && one(id);
    any = any || all;
    conj.clear();
  };
  for (size_t i = 0; i < toks.size(); ++i) {
    if (toks[i] == "OR") {
      close();
    } else if (toks[i] == "AND") {
      continue;
    } else if (toks[i] == "WITH" || toks[i].find('(') != std::string::npos || toks[i].find(')') != std::string::npos) {
      return false;
    } else {
      conj.push_back(toks[i]);
    }
  }
  close();
  return any;
}

std::string dataset_digest(std::vector<std::string> lines) {
  std::sort(lines.begin(), lines.end());
  Sha256 h;
  for (const auto& l : lines) h.update(l.data(), l.size());
  return "sha256:" + h.hex();
}

// ---- shards ----

ShardSpec ShardSpec::parse(const std::string& s) {
  ShardSpec sp;
  if (s.empty()) return sp;
  if (s == "mpi") {
    const char* pairs[][2] = {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                              {"PMI_RANK", "PMI_SIZE"},
                              {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE"},
                              {"SLURM_PROCID", "SLURM_NTASKS"}};
    for (const auto& p : pairs) {
      const char *r = std::getenv(p[0]), *n = std::getenv(p[1]);
      if (r && n) return parse(std::string(r) + "/" + n);
    }
    fail("--shard mpi: no MPI rank in the environment (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE or "
         "SLURM_PROCID/NTASKS): start it with mpirun -n N, or pass --shard i/n");
  }
  const size_t slash = s.find('/');
  char* e1 = nullptr;
  char* e2 = nullptr;
  if (slash != std::string::npos) {
    sp.index = (int)std::strtol(s.c_str(), &e1, 10);
    sp.count = (int)std::strtol(s.c_str() + slash + 1, &e2, 10);
  }
  if (slash == std::string::npos || e1 != s.c_str() + slash || *e2 != '\0' || sp.count < 1 || sp.index < 0 ||
      sp.index >= sp.count)
    fail("--shard \"", s, "\": expected i/n with 0 <= i < n (e.g. 0/4 for the first of four processes), or mpi");
  return sp;
}

bool ShardSpec::mine(const std::string& key) const {
  if (count <= 1) return true;
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) h = (h ^ c) * 0x100000001b3ull;
  return (int)(h % (uint64_t)count) == index;
}

// ---- Manifest ----

std::unique_ptr<Manifest> Manifest::open(const std::string& path, bool create) {
  std::error_code ec;
  if (path.empty())
    fail("--manifest is empty: pass the manifest file (e.g. --manifest data.db) or a PostgreSQL URI "
         "(postgresql://user@host/db)");
  if (!sql::is_postgres_target(path)) {
    const bool exists = fs::exists(path, ec);
    if (!exists && !create)
      fail(path, ": no such manifest: create it with `oboro data ingest DIR --manifest ", path, "`");
    if (exists && fs::is_directory(path, ec)) fail(path, ": is a folder: --manifest takes a file, e.g. ", path, "/data.db");
    if (!exists) {
      const fs::path parent = fs::path(path).parent_path();
      if (!parent.empty() && !fs::is_directory(parent, ec))
        fail(path, ": the folder ", parent.string(), " does not exist: create it first");
    }
  }
  auto m = std::unique_ptr<Manifest>(new Manifest());
  m->target_ = path;
  m->db_ = sql::open(path, create);
  m->path_ = m->db_->path();
  migrate_manifest(*m->db_, create);
  return m;
}

std::unique_ptr<sql::Db> Manifest::connect_again() { return sql::open(target_, false); }

std::string Manifest::meta(const std::string& key, const std::string& dflt) {
  sql::Stmt s(*db_, "SELECT value FROM meta WHERE key=?");
  s.bind(1, key);
  return s.step() ? s.text(0) : dflt;
}

void Manifest::set_meta(const std::string& key, const std::string& value) {
  sql::Stmt s(*db_, "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value");
  s.bind(1, key).bind(2, value).run();
}

LicencePolicy Manifest::policy() { return LicencePolicy::parse(meta("licence_policy", LicencePolicy::defaults().str())); }

int64_t Manifest::set_policy(const LicencePolicy& p) {
  sql::Transaction tx(*db_);
  set_meta("licence_policy", p.str());
  int64_t changed = 0;
  const int64_t t = now_unix();
  sql::Stmt q(*db_, "SELECT id, license, status, reason_kind FROM images WHERE license != '' AND "
                    "(status = 'active' OR reason_kind = 'licence')");
  sql::Stmt up(*db_, "UPDATE images SET status=?, reason=?, reason_kind=?, updated_at=? WHERE id=?");
  std::vector<std::tuple<int64_t, std::string, std::string>> rows;
  while (q.step()) rows.emplace_back(q.i64(0), q.text(1), q.text(2));
  for (const auto& [id, lic, status] : rows) {
    const bool ok = p.allows(lic);
    if (ok && status == "removed") {
      up.bind(1, "active").bind(2, "").bind(3, "").bind(4, t).bind(5, id).run();
      ++changed;
    } else if (!ok && status == "active") {
      up.bind(1, "removed").bind(2, "licence " + lic + " not in the allow-list").bind(3, "licence").bind(4, t).bind(5, id).run();
      ++changed;
    }
  }
  tx.commit();
  return changed;
}

int64_t Manifest::count(const std::string& where) { return db_->scalar_i64("SELECT count(*) FROM images WHERE " + where); }

namespace {
const char* const kRowCols =
    "id, path, relpath, root, sha256, source, original, license, attribution, status, reason, reason_kind, width, "
    "height, score, quality";
ImageRow read_row(sql::Stmt& s) {
  ImageRow r;
  r.id = s.i64(0);
  r.path = s.text(1);
  r.relpath = s.text(2);
  r.root = s.text(3);
  r.sha256 = s.text(4);
  r.source = s.text(5);
  r.original = s.text(6);
  r.license = s.text(7);
  r.attribution = s.text(8);
  r.status = s.text(9);
  r.reason = s.text(10);
  r.reason_kind = s.text(11);
  r.width = (int)s.i64(12);
  r.height = (int)s.i64(13);
  if (!s.is_null(14)) r.score = s.f64(14);
  r.quality = s.text(15);
  return r;
}
}  // namespace

std::optional<ImageRow> Manifest::image_by_id(int64_t id) {
  sql::Stmt s(*db_, std::string("SELECT ") + kRowCols + " FROM images WHERE id=?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  ImageRow r = read_row(s);
  r.captions = captions(id);
  return r;
}

std::vector<ImageRow> Manifest::images_by_hash(const std::string& h) {
  const std::string hl = lower(trim_copy(h));
  const bool hex = !hl.empty() && std::all_of(hl.begin(), hl.end(), [](char c) { return std::isxdigit((unsigned char)c); });
  if (!hex || hl.size() < 8 || hl.size() > 64)
    fail("--hash \"", h, "\": expected the image's sha256 (64 hex digits, or a unique prefix of at least 8); "
         "`oboro data list --manifest M.db --long` shows them");
  sql::Stmt s(*db_, std::string("SELECT ") + kRowCols + " FROM images WHERE sha256 >= ? AND sha256 < ? ORDER BY id");
  std::string hi = hl;
  hi.back() = (char)(hi.back() + 1);
  s.bind(1, hl).bind(2, hi);
  std::vector<ImageRow> out;
  while (s.step()) out.push_back(read_row(s));
  std::vector<std::string> distinct;
  for (const auto& r : out)
    if (std::find(distinct.begin(), distinct.end(), r.sha256) == distinct.end()) distinct.push_back(r.sha256);
  if (distinct.size() > 1)
    fail("--hash ", h, ": the prefix matches ", distinct.size(), " different images (", distinct[0].substr(0, 16), "..., ",
         distinct[1].substr(0, 16), "...): give more digits");
  return out;
}

std::vector<std::string> Manifest::captions(int64_t image_id) {
  sql::Stmt s(*db_, "SELECT text FROM captions WHERE image_id=? ORDER BY idx");
  s.bind(1, image_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::string Manifest::training_caption(int64_t image_id) {
  std::string cap;
  {
    sql::Stmt s(*db_, "SELECT text FROM captions WHERE image_id=? ORDER BY idx LIMIT 1");
    s.bind(1, image_id);
    if (s.step()) cap = s.text(0);
  }
  const std::string mode = meta("quality_tags", "append");
  std::string tag;
  {
    sql::Stmt s(*db_, "SELECT quality FROM images WHERE id=?");
    s.bind(1, image_id);
    if (s.step()) tag = s.text(0);
  }
  if (tag.empty() || mode == "off") return cap;
  if (cap.empty()) return tag;
  return mode == "prepend" ? tag + ", " + cap : cap + ", " + tag;
}

}  // namespace oboro
