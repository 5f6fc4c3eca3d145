// The manifest's schema and its migrations, for both backends. schema_migrations records each
// applied version (the version table); meta.schema_version mirrors the newest, so an older oboro
// refuses a newer manifest with "update oboro". A migration runs in one transaction under the
// schema lock (PostgreSQL: an advisory lock), so many processes opening a new manifest at once
// create it exactly once.
#include "data/manifest_schema.h"

#include "core/error.h"
#include "data/manifest.h"

#include <regex>

namespace oboro {

namespace {

constexpr int kSchemaVersion = 2;

// One row per image; child tables hang off images.id. Removal never deletes a row: status and
// reason stay for the audit trail.
const char* const kBaseSchema = R"SQL(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images(
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL UNIQUE,            -- absolute path
  root TEXT NOT NULL,                   -- the dataset folder it was ingested from
  relpath TEXT NOT NULL,                -- path relative to root ('/' separated)
  sha256 TEXT NOT NULL,                 -- of the file's bytes
  file_size INTEGER NOT NULL,
  width INTEGER NOT NULL DEFAULT 0,
  height INTEGER NOT NULL DEFAULT 0,
  source TEXT NOT NULL DEFAULT '',
  original TEXT NOT NULL DEFAULT '',    -- where it came from (URL, id), from manifest.jsonl
  license TEXT NOT NULL DEFAULT '',     -- SPDX id or expression; '' = none
  license_from TEXT NOT NULL DEFAULT '',-- manifest.jsonl | sidecar | --license
  attribution TEXT NOT NULL DEFAULT '',
  score REAL,                           -- quality score (oboro data score)
  quality TEXT NOT NULL DEFAULT '',     -- quality tag derived from the score
  status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active', 'removed')),
  reason TEXT NOT NULL DEFAULT '',
  reason_kind TEXT NOT NULL DEFAULT '', -- licence | no-licence | corrupt | mismatch | duplicate | score | manual
  sig TEXT NOT NULL DEFAULT '',         -- size/mtime of the file and its sidecars: re-ingest skips unchanged rows
  ingested_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images(sha256);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS captions(
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  origin TEXT NOT NULL,                 -- sidecar | manifest.jsonl | toml
  text TEXT NOT NULL,
  PRIMARY KEY(image_id, idx));
CREATE TABLE IF NOT EXISTS scores(
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value REAL NOT NULL,
  PRIMARY KEY(image_id, name));
CREATE TABLE IF NOT EXISTS features(
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  extractor TEXT NOT NULL,              -- extractor id, e.g. dct-colour-v3
  vec BLOB NOT NULL,                    -- float16 little-endian, L2-normalised
  PRIMARY KEY(image_id, extractor));
CREATE TABLE IF NOT EXISTS buckets(
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  stage INTEGER NOT NULL,
  width INTEGER NOT NULL, height INTEGER NOT NULL,      -- training size
  crop_x INTEGER NOT NULL, crop_y INTEGER NOT NULL,     -- source window that is resized to it
  crop_w INTEGER NOT NULL, crop_h INTEGER NOT NULL,
  PRIMARY KEY(image_id, stage));
CREATE TABLE IF NOT EXISTS cache_entries(
  key TEXT PRIMARY KEY,                 -- sha256 of content hash + bucket + codec/encoder identity
  kind TEXT NOT NULL,                   -- latent | text
  shard TEXT NOT NULL,                  -- file name inside the cache folder
  tensor TEXT NOT NULL,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS image_cache(
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  stage INTEGER NOT NULL,
  codec TEXT NOT NULL,                  -- codec identity, e.g. pixels/stride=2
  latent_key TEXT NOT NULL,
  text_key TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(image_id, stage, codec));
CREATE TABLE IF NOT EXISTS exports(
  id INTEGER PRIMARY KEY,
  dir TEXT NOT NULL,
  digest TEXT NOT NULL,
  images INTEGER NOT NULL,
  created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS exports_digest ON exports(digest);
CREATE TABLE IF NOT EXISTS export_images(
  export_id INTEGER NOT NULL REFERENCES exports(id) ON DELETE CASCADE,
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  PRIMARY KEY(export_id, image_id));
CREATE TABLE IF NOT EXISTS models(
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  file_sha256 TEXT NOT NULL UNIQUE,
  digest TEXT NOT NULL,
  images INTEGER NOT NULL,
  linked_by TEXT NOT NULL,              -- export <id> | data folder <dir> | active set
  registered INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS model_images(
  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  PRIMARY KEY(model_id, image_id));
CREATE INDEX IF NOT EXISTS model_images_image ON model_images(image_id);
CREATE TABLE IF NOT EXISTS jsonl_records(  -- manifest.jsonl of each ingested folder, staged for lookups
  root TEXT NOT NULL,
  file TEXT NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY(root, file));
)SQL";

// v2: the version table, work claims (PostgreSQL's shard hand-out, see work_claims.h) and
// append-only provenance: exports, models and their image lists are never changed or deleted
// once written (an export's digest is filled in once, in the transaction that creates it).
const char* const kV2Tables = R"SQL(
CREATE TABLE IF NOT EXISTS schema_migrations(
  version INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS work_claims(
  job TEXT NOT NULL,                    -- command and its input, e.g. "ingest /data/set"
  parts INTEGER NOT NULL,               -- n of --shard i/n
  part INTEGER NOT NULL,                -- i
  worker TEXT NOT NULL DEFAULT '',      -- host:pid that last started or finished it
  started_at INTEGER NOT NULL,          -- µs since 1970 (server clock) its own worker last started
  done_at INTEGER,                      -- µs since 1970 it was last finished; NULL: never
  PRIMARY KEY(job, parts, part));
)SQL";

const char* const kV2SqliteTriggers = R"SQL(
CREATE TRIGGER IF NOT EXISTS exports_append_only_u BEFORE UPDATE ON exports WHEN OLD.digest != ''
  BEGIN SELECT RAISE(ABORT, 'exports are append-only provenance records: record a new export instead'); END;
CREATE TRIGGER IF NOT EXISTS exports_append_only_d BEFORE DELETE ON exports
  BEGIN SELECT RAISE(ABORT, 'exports are append-only provenance records: record a new export instead'); END;
CREATE TRIGGER IF NOT EXISTS export_images_append_only_u BEFORE UPDATE ON export_images
  BEGIN SELECT RAISE(ABORT, 'export_images are append-only provenance records'); END;
CREATE TRIGGER IF NOT EXISTS export_images_append_only_d BEFORE DELETE ON export_images
  BEGIN SELECT RAISE(ABORT, 'export_images are append-only provenance records'); END;
CREATE TRIGGER IF NOT EXISTS models_append_only_u BEFORE UPDATE ON models
  BEGIN SELECT RAISE(ABORT, 'models are append-only provenance records: register the new file instead'); END;
CREATE TRIGGER IF NOT EXISTS models_append_only_d BEFORE DELETE ON models
  BEGIN SELECT RAISE(ABORT, 'models are append-only provenance records: register the new file instead'); END;
CREATE TRIGGER IF NOT EXISTS model_images_append_only_u BEFORE UPDATE ON model_images
  BEGIN SELECT RAISE(ABORT, 'model_images are append-only provenance records'); END;
CREATE TRIGGER IF NOT EXISTS model_images_append_only_d BEFORE DELETE ON model_images
  BEGIN SELECT RAISE(ABORT, 'model_images are append-only provenance records'); END;
)SQL";

const char* const kV2PgTriggers = R"SQL(
CREATE OR REPLACE FUNCTION oboro_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% are append-only provenance records: record a new one instead', TG_TABLE_NAME;
END $$;
DROP TRIGGER IF EXISTS exports_append_only_u ON exports;
CREATE TRIGGER exports_append_only_u BEFORE UPDATE ON exports FOR EACH ROW WHEN (OLD.digest <> '')
  EXECUTE FUNCTION oboro_append_only();
DROP TRIGGER IF EXISTS exports_append_only_d ON exports;
CREATE TRIGGER exports_append_only_d BEFORE DELETE ON exports FOR EACH ROW EXECUTE FUNCTION oboro_append_only();
DROP TRIGGER IF EXISTS export_images_append_only ON export_images;
CREATE TRIGGER export_images_append_only BEFORE UPDATE OR DELETE ON export_images FOR EACH ROW
  EXECUTE FUNCTION oboro_append_only();
DROP TRIGGER IF EXISTS models_append_only ON models;
CREATE TRIGGER models_append_only BEFORE UPDATE OR DELETE ON models FOR EACH ROW EXECUTE FUNCTION oboro_append_only();
DROP TRIGGER IF EXISTS model_images_append_only ON model_images;
CREATE TRIGGER model_images_append_only BEFORE UPDATE OR DELETE ON model_images FOR EACH ROW
  EXECUTE FUNCTION oboro_append_only();
)SQL";

// The SQLite DDL in PostgreSQL's types: 64-bit integers (ids, sizes, unix times), identity ids,
// double precision, bytea, and byte-order ("C") collation so that ORDER BY sorts text exactly
// as SQLite does.
std::string to_pg(const std::string& ddl) {
  std::string s = std::regex_replace(ddl, std::regex("\\bINTEGER PRIMARY KEY\\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
  s = std::regex_replace(s, std::regex("\\bINTEGER\\b"), "BIGINT");
  s = std::regex_replace(s, std::regex("\\bREAL\\b"), "DOUBLE PRECISION");
  s = std::regex_replace(s, std::regex("\\bBLOB\\b"), "BYTEA");
  s = std::regex_replace(s, std::regex("\\bTEXT\\b"), "TEXT COLLATE \"C\"");
  return s;
}

struct Migration {
  int version;
  const char* description;
  std::string (*ddl)(sql::Backend);
};

const Migration kMigrations[] = {
    {1, "base schema: images, captions, scores, features, buckets, cache, exports, models",
     [](sql::Backend b) { return b == sql::Backend::postgresql ? to_pg(kBaseSchema) : std::string(kBaseSchema); }},
    {2, "schema_migrations, work_claims, append-only provenance triggers",
     [](sql::Backend b) {
       return b == sql::Backend::postgresql ? to_pg(kV2Tables) + kV2PgTriggers : std::string(kV2Tables) + kV2SqliteTriggers;
     }},
};

}  // namespace

int manifest_schema_version() { return kSchemaVersion; }

void migrate_manifest(sql::Db& db, bool create) {
  const std::string& name = db.path();
  const std::string fix = db.backend() == sql::Backend::postgresql
                              ? "point --manifest at another database or schema (options=-csearch_path=NAME)"
                              : "pass another --manifest file";
  // The schema version, or 0 for an empty database; a database that is not a manifest is refused (reads only).
  auto check = [&]() -> int {
    if (!db.has_table("meta")) {
      if (db.table_count() > 0) fail(name, ": holds other tables but is not an oboro manifest: ", fix);
      if (!create) fail(name, ": is empty, not a manifest: create it with `oboro data ingest DIR --manifest ", name, "`");
      return 0;
    }
    const std::string v = db.scalar_text("SELECT value FROM meta WHERE key='schema_version'");
    if (v.empty()) fail(name, ": not an oboro manifest (no schema_version): ", fix);
    const int version = std::atoi(v.c_str());
    if (version > kSchemaVersion)
      fail(name, ": manifest schema version ", v, " is newer than this oboro's (", kSchemaVersion,
           "): update oboro, or `oboro data manifest copy` it with the newer oboro into a new manifest");
    if (version < 1) fail(name, ": manifest schema version \"", v, "\" is not valid: restore the manifest from a backup");
    return version;
  };
  check();          // before anything is written: a foreign database is refused unchanged
  db.configure();   // then the connection's writing settings (SQLite: WAL)
  sql::Transaction tx(db);
  db.lock_schema();
  const int have = check();  // again under the schema lock: another process may have created it meanwhile
  const int64_t t = now_unix();
  for (const Migration& m : kMigrations) {
    if (m.version <= have) continue;
    db.exec(m.ddl(db.backend()));
    if (m.version >= 2) {
      // The version table exists from v2 on; v1 (and a pre-table v1 manifest) is recorded then.
      sql::Stmt rec(db, "INSERT INTO schema_migrations(version, description, applied_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(version) DO NOTHING");
      for (const Migration& r : kMigrations)
        if (r.version <= m.version) rec.bind(1, r.version).bind(2, r.description).bind(3, t).run();
    }
  }
  sql::Stmt set(db, "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value");
  if (have < kSchemaVersion) set.bind(1, "schema_version").bind(2, std::to_string(kSchemaVersion)).run();
  sql::Stmt dflt(db, "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING");
  dflt.bind(1, "licence_policy").bind(2, LicencePolicy::defaults().str()).run();
  dflt.bind(1, "quality_tags").bind(2, "append").run();
  tx.commit();
}

}  // namespace oboro
