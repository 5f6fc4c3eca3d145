// The data manifest: one database (an SQLite file, or a PostgreSQL database/schema) that knows every image of a dataset — where it is, its content
// hash, size, source, licence (SPDX), attribution, captions, scores, quality tags, buckets, cache
// entries and status (active, or removed with a reason) — and which exports and models used it.
// Schema: see schema_sql() in manifest.cpp and docs/data.md. Every write runs in a transaction, so a
// crash loses at most the batch in flight; every re-run skips what is already done.
#pragma once
#include "data/sql_db.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace oboro {

// ---- licences ----

// The licence allow-list. Default: CC0-1.0, CC-BY-4.0, CC-BY-SA-4.0, Apache-2.0, MIT.
struct LicencePolicy {
  std::vector<std::string> allowed;
  static LicencePolicy defaults();
  static LicencePolicy parse(const std::string& comma_list);  // "CC0-1.0,MIT"; errors name the bad item
  std::string str() const;                                    // comma-joined
  // An SPDX expression is allowed when it is an allowed id, or "A OR B" with any allowed
  // alternative, or "A AND B" with all allowed (parentheses are not supported: listed as not allowed).
  bool allows(const std::string& spdx) const;
};
// Trims and validates an SPDX identifier/expression ("" stays ""). Case of known ids is canonicalised
// ("cc0-1.0" → "CC0-1.0"). Throws naming `where` when it contains characters SPDX does not allow.
std::string normalise_spdx(const std::string& s, const std::string& where);

// The dataset digest a model records in its `oboro.dataset` metadata:
// "sha256:" + sha256 of the sorted lines "<image sha256> <licence>\n".
std::string dataset_digest(std::vector<std::string> lines);

// ---- the manifest ----

struct ShardSpec {
  int index = 0, count = 1;  // --shard i/n: this process handles files whose path hashes to i mod n
  static ShardSpec parse(const std::string& s);  // "i/n"; also "mpi": OMPI_COMM_WORLD_RANK/SIZE or PMI_RANK/SIZE
  bool mine(const std::string& key) const;       // FNV-1a 64 of key mod count == index
};

struct ImageRow {
  int64_t id = 0;
  std::string path, relpath, root, sha256, source, original, license, attribution, status, reason, reason_kind;
  int width = 0, height = 0;
  std::optional<double> score;
  std::string quality;  // quality tag ("excellent score", ...) or ""
  std::vector<std::string> captions;
};

class Manifest {
 public:
  // `path`: an SQLite file, or a PostgreSQL URI / libpq connection string (sql_db.h).
  // `create`: make the file (SQLite) and the tables when missing (ingest); otherwise the manifest
  // must exist. Upgrades an older schema (manifest_schema.h).
  static std::unique_ptr<Manifest> open(const std::string& path, bool create);
  sql::Db& db() { return *db_; }
  const std::string& path() const { return path_; }  // for messages: password hidden
  sql::Backend backend() const { return db_->backend(); }
  // A second connection to the same manifest (PostgreSQL work claims hold their row locks on it).
  std::unique_ptr<sql::Db> connect_again();

  std::string meta(const std::string& key, const std::string& dflt = "");
  void set_meta(const std::string& key, const std::string& value);  // own transaction unless one is open

  LicencePolicy policy();
  // Stores the policy and re-evaluates licences: active images whose licence is no longer allowed
  // are removed ("licence X not in the allow-list"); images removed only for that reason come back.
  // Returns the number of rows whose status changed.
  int64_t set_policy(const LicencePolicy& p);

  // Status changes. `kind` classifies the reason (licence, no-licence, corrupt, duplicate, score,
  // manual, mismatch) so that later re-evaluations only undo their own kind.
  int64_t count(const std::string& where_sql = "TRUE");
  std::optional<ImageRow> image_by_id(int64_t id);
  std::vector<ImageRow> images_by_hash(const std::string& hash_or_prefix);  // ≥ 8 hex digits
  std::vector<std::string> captions(int64_t image_id);
  // The caption used for training: the first caption plus the quality tag as configured in the
  // manifest (meta quality_tags = append | prepend | off; default append).
  std::string training_caption(int64_t image_id);

 private:
  std::string path_, target_;
  std::unique_ptr<sql::Db> db_;
};

// Text helpers shared by the data commands.
std::string trim_copy(const std::string& s);
int64_t now_unix();

// ---- ingest ----

struct IngestOptions {
  std::string source;                    // folder of images, or a kohya dataset .toml
  std::string default_license;           // --license: for images with no licence of their own
  std::optional<LicencePolicy> policy;   // --allow-licenses: replaces the stored policy
  std::string extractor = "dct-colour";  // embeddings for dedup, computed from the decoded pixels
  ShardSpec shard;
  int batch = 256;                       // images per transaction
  bool progress = true;
};

struct IngestReport {
  int64_t found = 0, other_shard = 0, unchanged = 0, added = 0, updated = 0;
  int64_t active = 0, corrupt = 0, no_licence = 0, not_allowed = 0, mismatch = 0;
  std::vector<std::string> no_licence_paths;   // first 20
  std::vector<std::string> not_allowed_paths;  // first 20, with the licence
  double seconds = 0;
  double scan_seconds = 0, decode_seconds = 0, write_seconds = 0;  // wall time of the three phases
  int shards_taken_over = 0;  // PostgreSQL: shards of crashed workers this process did (work_claims.h)
};

// Ingests opt.shard of the source; on PostgreSQL then also any shard whose worker died
// (work_claims.h).
IngestReport ingest(Manifest& m, const IngestOptions& opt);

}  // namespace oboro
