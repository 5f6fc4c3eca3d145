#include "data/sqlite_db.h"
#include "data/sql_db.h"

#include "core/error.h"

#include <sqlite3.h>

#include <cstring>
#include <filesystem>
#include <sys/stat.h>

namespace oboro::sql {

namespace {
std::string advice(int code) {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return ": another process kept the manifest locked for over 10 minutes; wait for it or stop it";
    case SQLITE_NOTADB:
      return ": this is not an SQLite manifest: pass a file created by `oboro data ingest`";
    case SQLITE_CORRUPT:
      return ": the manifest is corrupt: restore it from a backup or re-ingest into a new file";
    case SQLITE_FULL:
      return ": the disk is full: free space and re-run (committed work is kept)";
    case SQLITE_READONLY:
      return ": the manifest is read-only: check the file's and its folder's permissions";
    case SQLITE_CANTOPEN:
      return ": cannot open the manifest: check that its folder exists and is writable";
    case SQLITE_IOERR:
      return ": I/O error: check the disk";
    default:
      return "";
  }
}

class SqliteDb final : public Db {
 public:
  SqliteDb(const std::string& path, bool create) {
    name_ = path;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      fail(path, ": cannot open the manifest: ", msg, advice(rc));
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, 600000);
    // A file that is not a database only shows up at the first read: a read, which changes nothing. The journal
    // mode (a write: WAL mode is stored in the file) is set by configure(), after the schema check.
    try {
      exec("PRAGMA foreign_keys=ON; PRAGMA temp_store=FILE; SELECT count(*) FROM sqlite_master;");
    } catch (...) {
      sqlite3_close_v2(db_);  // the destructor does not run for a constructor that throws
      db_ = nullptr;
      throw;
    }
  }
  ~SqliteDb() override {
    if (db_) sqlite3_close_v2(db_);
  }

  Backend backend() const override { return Backend::sqlite; }
  sqlite3* handle() const { return db_; }

  [[noreturn]] void fail_sql(const std::string& what) const override {
    int code = sqlite3_extended_errcode(db_);
    fail(name_, ": ", what, ": ", sqlite3_errmsg(db_), advice(code));
  }

  void exec(const std::string& sql) override {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      fail(name_, ": ", msg, advice(rc));
    }
  }

  std::unique_ptr<StmtImpl> prepare(const std::string& sql) override;

  void begin() override { exec("BEGIN IMMEDIATE"); }
  void commit() override { exec("COMMIT"); }
  void rollback() noexcept override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  void lock_schema() override {}  // BEGIN IMMEDIATE holds the only write lock
  void configure() override { exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"); }

  bool has_table(const std::string& name) override {
    Stmt s(*this, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?");
    s.bind(1, name);
    return s.step() && s.i64(0) > 0;
  }
  int64_t table_count() override { return scalar_i64("SELECT count(*) FROM sqlite_master"); }
  int64_t size_bytes() override {
    int64_t n = 0;
    for (const char* ext : {"", "-wal", "-shm"}) {
      struct stat st {};
      if (::stat((name_ + ext).c_str(), &st) == 0) n += (int64_t)st.st_size;
    }
    return n;
  }

 private:
  sqlite3* db_ = nullptr;
};

class SqliteStmt final : public StmtImpl {
 public:
  SqliteStmt(SqliteDb& db, const std::string& q) : db_(&db) {
    if (sqlite3_prepare_v2(db.handle(), q.c_str(), (int)q.size(), &st_, nullptr) != SQLITE_OK)
      db.fail_sql("cannot prepare `" + q.substr(0, 60) + "`");
  }
  ~SqliteStmt() override {
    if (st_) sqlite3_finalize(st_);
  }
  void bind_i64(int i, int64_t v) override { check(sqlite3_bind_int64(st_, i, v)); }
  void bind_f64(int i, double v) override { check(sqlite3_bind_double(st_, i, v)); }
  void bind_text(int i, const std::string& v) override {
    check(sqlite3_bind_text(st_, i, v.data(), (int)v.size(), SQLITE_TRANSIENT));
  }
  void bind_blob(int i, const void* p, size_t n) override { check(sqlite3_bind_blob64(st_, i, p, n, SQLITE_TRANSIENT)); }
  void bind_null(int i) override { check(sqlite3_bind_null(st_, i)); }

  bool step() override {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    std::string q = sqlite3_sql(st_) ? sqlite3_sql(st_) : "";
    sqlite3_reset(st_);
    db_->fail_sql("`" + q.substr(0, 60) + "` failed");
  }
  void reset() override {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }

  int64_t i64(int c) const override { return sqlite3_column_int64(st_, c); }
  double f64(int c) const override { return sqlite3_column_double(st_, c); }
  bool is_null(int c) const override { return sqlite3_column_type(st_, c) == SQLITE_NULL; }
  std::string text(int c) const override {
    const unsigned char* p = sqlite3_column_text(st_, c);
    int n = sqlite3_column_bytes(st_, c);
    return p ? std::string((const char*)p, (size_t)n) : std::string();
  }
  const void* blob_ptr(int c, size_t* n) const override {
    const void* p = sqlite3_column_blob(st_, c);
    *n = (size_t)sqlite3_column_bytes(st_, c);
    return p;
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) db_->fail_sql("bind");
  }
  SqliteDb* db_ = nullptr;
  sqlite3_stmt* st_ = nullptr;
};

std::unique_ptr<StmtImpl> SqliteDb::prepare(const std::string& sql) { return std::make_unique<SqliteStmt>(*this, sql); }

}  // namespace

std::unique_ptr<Db> open_sqlite(const std::string& path, bool create) { return std::make_unique<SqliteDb>(path, create); }

}  // namespace oboro::sql
