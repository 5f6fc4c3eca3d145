#include "data/manifest_copy.h"
#include "io/atomic_file.h"

#include "core/error.h"
#include "core/sha256.h"
#include "data/manifest.h"
#include "data/progress.h"

#include <cstring>
#include <map>
#include <filesystem>
#include <unistd.h>

namespace oboro {

namespace fs = std::filesystem;

namespace {

// Each copied table: its columns with their types (i integer, r real, t text, b blob; any may be NULL)
// and its primary key. schema_migrations and work_claims are the destination's own.
struct TableSpec {
  const char* name;
  const char* cols;
  const char* types;
  const char* key;
};
const TableSpec kTables[] = {
    {"meta", "key, value", "tt", "key"},
    {"images",
     "id, path, root, relpath, sha256, file_size, width, height, source, original, license, license_from, attribution, "
     "score, quality, status, reason, reason_kind, sig, ingested_at, updated_at",
     "ittttiiitttttrtttttii", "id"},
    {"captions", "image_id, idx, origin, text", "iitt", "image_id, idx"},
    {"scores", "image_id, name, value", "itr", "image_id, name"},
    {"features", "image_id, extractor, vec", "itb", "image_id, extractor"},
    {"buckets", "image_id, stage, width, height, crop_x, crop_y, crop_w, crop_h", "iiiiiiii", "image_id, stage"},
    {"cache_entries", "key, kind, shard, tensor, created", "tttti", "key"},
    {"image_cache", "image_id, stage, codec, latent_key, text_key", "iittt", "image_id, stage, codec"},
    {"exports", "id, dir, digest, images, created", "ittii", "id"},
    {"export_images", "export_id, image_id", "ii", "export_id, image_id"},
    {"models", "id, path, file_sha256, digest, images, linked_by, registered", "itttiti", "id"},
    {"model_images", "model_id, image_id", "ii", "model_id, image_id"},
    {"jsonl_records", "root, file, record", "ttt", "root, file"},
};

// The spec's type letters against the table's declared column types, so that the copy (which reads and
// verifies both sides with the spec) can never agree with itself on a wrong type.
void check_spec(sql::Db& db, const TableSpec& t) {
  const bool pg = db.backend() == sql::Backend::postgresql;
  sql::Stmt s(db, pg ? "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
                       "AND table_name = ?"
                     : "SELECT name, type FROM pragma_table_info(?)");
  s.bind(1, t.name);
  std::map<std::string, char> declared;
  while (s.step()) {
    const std::string ty = s.text(1);
    declared[s.text(0)] = ty == "INTEGER" || ty == "bigint" ? 'i' : ty == "REAL" || ty == "double precision" ? 'r'
                          : ty == "TEXT" || ty == "text"   ? 't' : ty == "BLOB" || ty == "bytea" ? 'b' : '?';
  }
  std::string cols = t.cols;
  size_t k = 0;
  for (size_t a = 0; a <= cols.size(); ++k) {
    size_t b = cols.find(',', a);
    if (b == std::string::npos) b = cols.size();
    const std::string name = trim_copy(cols.substr(a, b - a));
    auto it = declared.find(name);
    if (k >= std::strlen(t.types) || it == declared.end() || it->second != t.types[k])
      fail(db.path(), ": table ", t.name, " column ", name, " does not have the type the copy expects: this oboro's copy "
           "does not match the manifest's schema; report it");
    a = b + 1;
  }
  if (k != std::strlen(t.types)) fail(db.path(), ": table ", t.name, ": column list and types disagree; report it");
}

// Row count and content digest of one table: every value tagged with its type (reals by their bits,
// so both backends' text formatting of floats never matters).
CopyTable digest_table(sql::Db& db, const TableSpec& t) {
  CopyTable out;
  out.name = t.name;
  Sha256 h;
  sql::Stmt s(db, std::string("SELECT ") + t.cols + " FROM " + t.name + " ORDER BY " + t.key);
  const int n = (int)std::strlen(t.types);
  while (s.step()) {
    ++out.rows;
    for (int c = 0; c < n; ++c) {
      std::string v;
      if (s.is_null(c)) {
        v = 'N';
      } else if (t.types[c] == 'i') {
        v = 'i';
        v += std::to_string(s.i64(c));
      } else if (t.types[c] == 'r') {
        const double d = s.f64(c);
        uint64_t bits;
        std::memcpy(&bits, &d, 8);
        v = 'r';
        v += std::to_string(bits);
      } else if (t.types[c] == 'b') {
        size_t len = 0;
        const void* p = s.blob_ptr(c, &len);
        v = 'b';
        v += std::to_string(len);
        v += ':';
        v.append((const char*)p, len);
      } else {
        const std::string x = s.text(c);
        v = 't';
        v += std::to_string(x.size());
        v += ':';
        v += x;
      }
      h.update(v.data(), v.size());
    }
    h.update("\n", 1);
  }
  out.digest = h.hex();
  return out;
}

std::string active_digest(sql::Db& db, int64_t* n) {
  std::vector<std::string> lines;
  sql::Stmt s(db, "SELECT sha256, license FROM images WHERE status='active'");
  while (s.step()) lines.push_back(s.text(0) + " " + s.text(1) + "\n");
  *n = (int64_t)lines.size();
  return dataset_digest(std::move(lines));
}

CopyReport copy_into(const std::string& src_target, const std::string& dst_target, bool progress) {
  Progress timer("", 0, false);
  auto src = Manifest::open(src_target, false);
  auto dst = Manifest::open(dst_target, true);
  sql::Db& in = src->db();
  sql::Db& out = dst->db();
  if (src->path() == dst->path()) fail(dst->path(), ": SRC and DST are the same manifest: name a new DST");
  for (const TableSpec& t : kTables) {
    if (std::string(t.name) == "meta") continue;
    const int64_t n = out.scalar_i64(std::string("SELECT count(*) FROM ") + t.name);
    if (n > 0)
      fail(dst->path(), ": is not empty (", n, " rows in ", t.name, "): copy into a new file, or an empty PostgreSQL "
           "database/schema");
  }
  int64_t total = 0;
  for (const TableSpec& t : kTables) total += in.scalar_i64(std::string("SELECT count(*) FROM ") + t.name);
  Progress prog("copy " + src->path() + " -> " + dst->path(), total, progress);
  for (const TableSpec& t : kTables) check_spec(in, t), check_spec(out, t);
  CopyReport rep;
  sql::Transaction tx(out);
  for (const TableSpec& t : kTables) {
    const int n = (int)std::strlen(t.types);
    std::string marks;
    for (int c = 0; c < n; ++c) marks += c ? ",?" : "?";
    std::string ins = std::string("INSERT INTO ") + t.name + "(" + t.cols + ") VALUES (" + marks + ")";
    if (std::string(t.name) == "meta") ins += " ON CONFLICT(key) DO UPDATE SET value=excluded.value";  // DST's defaults
    sql::Stmt w(out, ins);
    sql::Stmt r(in, std::string("SELECT ") + t.cols + " FROM " + t.name + " ORDER BY " + t.key);
    int64_t rows = 0;
    while (r.step()) {
      for (int c = 0; c < n; ++c) {
        if (r.is_null(c)) w.bind_null(c + 1);
        else if (t.types[c] == 'i') w.bind(c + 1, r.i64(c));
        else if (t.types[c] == 'r') w.bind(c + 1, r.f64(c));
        else if (t.types[c] == 'b') {
          size_t len = 0;
          const void* p = r.blob_ptr(c, &len);
          w.bind_blob(c + 1, p, len);
        } else {
          w.bind(c + 1, r.text(c));
        }
      }
      w.run();
      if (++rows % 4096 == 0) prog.add(4096);
    }
    prog.add(rows % 4096);
  }
  if (out.backend() == sql::Backend::postgresql)  // identity columns continue after the copied ids
    for (const char* t : {"images", "exports", "models"})
      out.exec(std::string("SELECT setval(pg_get_serial_sequence('") + t + "', 'id'), coalesce(max(id), 0) + 1, false) FROM " + t);
  // Verify inside the transaction: nothing is committed unless both sides agree.
  for (const TableSpec& t : kTables) {
    const CopyTable a = digest_table(in, t), b = digest_table(out, t);
    if (a.rows != b.rows || a.digest != b.digest)
      fail(dst->path(), ": copy verification failed for table ", t.name, " (", a.rows, " rows in SRC, ", b.rows,
           " in DST; content digests ", a.digest.substr(0, 12), " vs ", b.digest.substr(0, 12),
           "): nothing was committed; report this with both manifests");
    rep.tables.push_back(b);
  }
  int64_t na = 0, nb = 0;
  rep.dataset_digest = active_digest(in, &na);
  if (active_digest(out, &nb) != rep.dataset_digest || na != nb)
    fail(dst->path(), ": copy verification failed: the active set's dataset digest differs: nothing was committed");
  rep.active = na;
  tx.commit();
  prog.finish();
  rep.seconds = timer.seconds();
  return rep;
}

}  // namespace

CopyReport copy_manifest(const std::string& src, const std::string& dst, bool progress) {
  if (sql::is_postgres_target(dst)) return copy_into(src, dst, progress);
  // An SQLite DST is written as DST.tmp.PID and renamed once verified and committed: no half-written file. A copy
  // killed earlier left its temp (and its -wal/-shm): removed once its process is gone.
  std::error_code ec;
  if (fs::exists(dst, ec)) fail(dst, ": already exists: copy into a new file (or remove it first)");
  if (!sql::is_postgres_target(src) && fs::exists(src, ec) && fs::equivalent(src, dst, ec))
    fail(dst, ": SRC and DST are the same manifest: name a new DST");
  remove_stale_temps_of(dst);
  const std::string tmp = atomic_temp_path(dst, (long)::getpid());
  auto cleanup = [&] {
    for (const char* ext : {"", "-wal", "-shm", "-journal"}) fs::remove(tmp + ext, ec);
  };
  cleanup();
  try {
    CopyReport r = copy_into(src, tmp, progress);  // the connection is closed when copy_into returns
    fs::rename(tmp, dst, ec);
    if (ec) fail(dst, ": cannot rename ", tmp, " to it: ", ec.message());
    cleanup();
    return r;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace oboro
