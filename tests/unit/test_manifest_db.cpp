// The manifest's database seam on both backends (manifest_backends.h): schema versions and
// migrations, append-only provenance, `data manifest copy` round trips, and PostgreSQL's failure
// modes: an unreachable server, a wrong password, a connection lost mid-batch — each one line naming
// the thing and the fix, with nothing of the batch committed.
#include "test_util.h"
#include "manifest_backends.h"
#include "core/error.h"
#include "data/audit.h"
#include "data/manifest.h"
#include "data/manifest_copy.h"
#include "data/manifest_schema.h"
#include "data/pg_db.h"
#include "data/synth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;
using oboro::test::error_of;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_manifest_db_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// 40 synthetic images (4 planted duplicates) ingested into `target`.
std::unique_ptr<Manifest> filled(const std::string& target, const fs::path& dir) {
  synth::Options so;
  so.out_dir = (dir / "data").string();
  so.count = 40;
  so.size = 32;
  so.dup_fraction = 0.1;
  so.force = true;
  synth::write_dataset(so);
  auto m = Manifest::open(target, true);
  IngestOptions io;
  io.source = so.out_dir;
  io.progress = false;
  ingest(*m, io);
  return m;
}

bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == std::string::npos; }

class ManifestSeam : public oboro::test::ManifestBackend {};

}  // namespace

TEST_P(ManifestSeam, SchemaVersionsMigrationsAndAppendOnlyProvenance) {
  const fs::path d = fresh_dir("schema-" + backend());
  const std::string t = target(d, "v");
  auto m = filled(t, d);
  EXPECT_EQ(m->meta("schema_version"), std::to_string(manifest_schema_version()));
  EXPECT_EQ(m->db().scalar_i64("SELECT count(*) FROM schema_migrations"), manifest_schema_version());
  // Provenance rows are append-only: a model row cannot be changed or deleted.
  {
    sql::Stmt ins(m->db(), "INSERT INTO models(path, file_sha256, digest, images, linked_by, registered) VALUES "
                           "('x.safetensors', 'ab', 'sha256:00', 0, 'test', 0)");
    ins.run();
  }
  for (const char* q : {"UPDATE models SET path='y'", "DELETE FROM models"}) {
    const std::string e = error_of([&] { m->db().exec(q); });
    EXPECT_NE(e.find("append-only"), std::string::npos) << q << ": " << e;
  }
  EXPECT_EQ(m->db().scalar_text("SELECT path FROM models"), "x.safetensors");
  // A manifest written by a newer oboro is refused with the fix; nothing is changed.
  m->set_meta("schema_version", "99");
  m.reset();
  const std::string e = error_of([&] { Manifest::open(t, false); });
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_NE(e.find("schema version 99 is newer"), std::string::npos) << e;
  EXPECT_NE(e.find("update oboro"), std::string::npos) << e;
  // A version-1 manifest (before the version table) is migrated on open.
  auto db = sql::open(t, false);
  db->exec("UPDATE meta SET value='1' WHERE key='schema_version'; DROP TABLE schema_migrations; DROP TABLE work_claims");
  db.reset();
  auto m2 = Manifest::open(t, false);
  EXPECT_EQ(m2->meta("schema_version"), std::to_string(manifest_schema_version()));
  EXPECT_EQ(m2->db().scalar_i64("SELECT count(*) FROM schema_migrations"), manifest_schema_version());
  EXPECT_EQ(m2->count(), 40);
}

TEST_P(ManifestSeam, CopyRoundTripKeepsRowsAndDigests) {
  const fs::path d = fresh_dir("copy-" + backend());
  const std::string src = (d / "src.db").string();
  {
    auto m = filled(src, d);
    sql::Stmt s(m->db(), "UPDATE images SET score=0.1+0.2, quality='good score' WHERE id % 3 = 0");  // reals copy exactly
    s.run();
    ExportOptions eo;
    eo.out_dir = (d / "export").string();
    eo.progress = false;
    export_dataset(*m, eo);
  }
  // sqlite → backend → sqlite
  const std::string mid = target(d, "mid"), back = (d / "back.db").string();
  // What a copy into back.db killed earlier left (its temp database and WAL) goes once that process is gone.
  const std::string dead = std::to_string(oboro::test::dead_pid());
  for (const char* ext : {"", "-wal"}) std::ofstream(back + ".tmp." + dead + ext) << "half a database";
  const CopyReport a = copy_manifest(src, mid, false);
  const CopyReport b = copy_manifest(mid, back, false);
  EXPECT_EQ(a.active, 40);
  ASSERT_EQ(a.tables.size(), b.tables.size());
  for (size_t i = 0; i < a.tables.size(); ++i) {
    EXPECT_EQ(a.tables[i].rows, b.tables[i].rows) << a.tables[i].name;
    EXPECT_EQ(a.tables[i].digest, b.tables[i].digest) << a.tables[i].name;
  }
  EXPECT_EQ(a.dataset_digest, b.dataset_digest);
  EXPECT_FALSE(fs::exists(back + ".tmp." + dead));
  EXPECT_FALSE(fs::exists(back + ".tmp." + dead + "-wal"));
  auto m = Manifest::open(back, false);
  EXPECT_EQ(m->count(), 40);
  // Independent of the copy's own column types: every column of every image row, as SQLite text, unchanged.
  auto dump = [](const std::string& file) {
    auto db = sql::open(file, false);
    sql::Stmt s(*db, "SELECT * FROM images ORDER BY id");
    std::vector<std::string> rows;
    while (s.step()) {
      std::string r;
      for (int c = 0; c < 21; ++c) r += (s.is_null(c) ? std::string("NULL") : s.text(c)) + "|";
      rows.push_back(r);
    }
    return rows;
  };
  EXPECT_EQ(dump(src), dump(back));
  EXPECT_GT(m->db().scalar_i64("SELECT count(*) FROM export_images"), 30);
  // New rows continue after the copied ids (PostgreSQL identity columns are moved past them).
  auto mm = Manifest::open(mid, false);
  sql::Stmt ins(mm->db(), "INSERT INTO exports(dir, digest, images, created) VALUES ('d', '', 0, 0) RETURNING id");
  ASSERT_TRUE(ins.step());
  EXPECT_EQ(ins.i64(0), 2);
  ins.reset();
  // DST must be new/empty; nothing half-written is left behind.
  EXPECT_NE(error_of([&] { copy_manifest(src, back, false); }).find("already exists"), std::string::npos);
  EXPECT_NE(error_of([&] { copy_manifest(src, mid, false); }).find(backend() == "sqlite" ? "already exists" : "not empty"),
            std::string::npos);
  EXPECT_NE(error_of([&] { copy_manifest((d / "none.db").string(), (d / "x.db").string(), false); }).find("no such manifest"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(d / "x.db"));
}

OBORO_MANIFEST_BACKENDS(ManifestSeam);

// ---- PostgreSQL only ----

class PgManifest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (oboro::test::pg_server().empty())
      GTEST_SKIP() << "OBORO_TEST_PG is not set: run under tests/pg/with_server.sh (scripts/test.sh does)";
  }
};

TEST_F(PgManifest, UnreachableServerAndWrongPasswordAreOneLineWithTheFix) {
  std::string e = error_of([] { Manifest::open("postgresql://oboro@127.0.0.1:1/postgres", false); });
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_NE(e.find("not reachable"), std::string::npos) << e;
  EXPECT_NE(e.find("127.0.0.1"), std::string::npos) << e;
  e = error_of([] { Manifest::open("host=/nonexistent-oboro-socket-dir dbname=postgres", false); });
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_NE(e.find("not reachable"), std::string::npos) << e;
  const char* user = std::getenv("OBORO_TEST_PG_PW_USER");
  if (!user) GTEST_SKIP() << "OBORO_TEST_PG_PW_USER is not set (tests/pg/with_server.sh sets it): wrong password not tested";
  const std::string bad = oboro::test::pg_server() + " user=" + user + " password=s3cret-guess";
  e = error_of([&] { Manifest::open(bad, false); });
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_NE(e.find("password authentication failed"), std::string::npos) << e;
  EXPECT_NE(e.find("fix the password"), std::string::npos) << e;
  EXPECT_EQ(e.find("s3cret-guess"), std::string::npos) << "the password is shown: " << e;
  EXPECT_NE(e.find("password=***"), std::string::npos) << e;
  e = error_of([] { Manifest::open(oboro::test::pg_server() + " dbname=oboro_no_such_db", false); });
  EXPECT_NE(e.find("createdb"), std::string::npos) << e;
  EXPECT_EQ(sql::redact_conninfo("postgresql://u:pw@h:5/db?password=x&sslmode=require"),
            "postgresql://u:***@h:5/db?password=***&sslmode=require");
}

TEST_F(PgManifest, ConnectionLostMidBatchCommitsNothing) {
  const fs::path d = fresh_dir("lost");
  const std::string t = oboro::test::manifest_target("postgresql", d, "lost");
  auto m = Manifest::open(t, true);
  const int64_t pid = m->db().scalar_i64("SELECT pg_backend_pid()");
  std::string e;
  {
    sql::Transaction tx(m->db());
    sql::Stmt ins(m->db(), "INSERT INTO images(path, root, relpath, sha256, file_size, ingested_at, updated_at) "
                           "VALUES (?, '/r', ?, 'ab', 1, 0, 0)");
    for (int i = 0; i < 5; ++i) ins.bind(1, "/r/" + std::to_string(i)).bind(2, std::to_string(i)).run();
    sql::open(oboro::test::pg_server(), false)->exec("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
    e = error_of([&] {
      ins.bind(1, "/r/5").bind(2, "5").run();
      tx.commit();
    });
  }
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_NE(e.find("lost the connection to the PostgreSQL server"), std::string::npos) << e;
  EXPECT_NE(e.find("re-run"), std::string::npos) << e;
  EXPECT_EQ(Manifest::open(t, false)->count(), 0);  // the batch in flight was rolled back by the server
}
