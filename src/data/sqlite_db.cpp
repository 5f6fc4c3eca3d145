#include "data/sqlite_db.h"

#include "core/error.h"

#include <sqlite3.h>

#include <cstring>
#include <filesystem>

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
}  // namespace

Db::Db(const std::string& path, bool create) : path_(path) {
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
  // A file that is not a database only shows up at the first read: a read, which changes nothing. The journal mode
  // (a write: WAL mode is stored in the file) is set by configure(), after the caller has checked the schema.
  try {
    exec("PRAGMA foreign_keys=ON; PRAGMA temp_store=FILE; SELECT count(*) FROM sqlite_master;");
  } catch (...) {
    sqlite3_close_v2(db_);  // the destructor does not run for a constructor that throws
    db_ = nullptr;
    throw;
  }
}

void Db::configure() { exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"); }

Db::~Db() {
  if (db_) sqlite3_close_v2(db_);
}

void Db::fail_sql(const std::string& what) const {
  int code = sqlite3_extended_errcode(db_);
  fail(path_, ": ", what, ": ", sqlite3_errmsg(db_), advice(code));
}

void Db::exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    fail(path_, ": ", msg, advice(rc));
  }
}

int64_t Db::last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
int Db::changes() const { return sqlite3_changes(db_); }

int64_t Db::scalar_i64(const std::string& q, int64_t dflt) {
  Stmt s(*this, q);
  return s.step() && !s.is_null(0) ? s.i64(0) : dflt;
}

std::string Db::scalar_text(const std::string& q, const std::string& dflt) {
  Stmt s(*this, q);
  return s.step() && !s.is_null(0) ? s.text(0) : dflt;
}

Stmt::Stmt(Db& db, const std::string& q) : db_(&db) {
  if (sqlite3_prepare_v2(db.handle(), q.c_str(), (int)q.size(), &st_, nullptr) != SQLITE_OK)
    db.fail_sql("cannot prepare `" + q.substr(0, 60) + "`");
}
Stmt::Stmt(Stmt&& o) noexcept : db_(o.db_), st_(o.st_) { o.st_ = nullptr; }
Stmt& Stmt::operator=(Stmt&& o) noexcept {
  if (this != &o) {
    if (st_) sqlite3_finalize(st_);
    db_ = o.db_;
    st_ = o.st_;
    o.st_ = nullptr;
  }
  return *this;
}
Stmt::~Stmt() {
  if (st_) sqlite3_finalize(st_);
}

Stmt& Stmt::bind(int i, int64_t v) {
  if (sqlite3_bind_int64(st_, i, v) != SQLITE_OK) db_->fail_sql("bind");
  return *this;
}
Stmt& Stmt::bind(int i, double v) {
  if (sqlite3_bind_double(st_, i, v) != SQLITE_OK) db_->fail_sql("bind");
  return *this;
}
Stmt& Stmt::bind(int i, const std::string& v) {
  if (sqlite3_bind_text(st_, i, v.data(), (int)v.size(), SQLITE_TRANSIENT) != SQLITE_OK) db_->fail_sql("bind");
  return *this;
}
Stmt& Stmt::bind_blob(int i, const void* p, size_t n) {
  if (sqlite3_bind_blob64(st_, i, p, n, SQLITE_TRANSIENT) != SQLITE_OK) db_->fail_sql("bind");
  return *this;
}
Stmt& Stmt::bind_null(int i) {
  if (sqlite3_bind_null(st_, i) != SQLITE_OK) db_->fail_sql("bind");
  return *this;
}

bool Stmt::step() {
  int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  std::string q = sqlite3_sql(st_) ? sqlite3_sql(st_) : "";
  sqlite3_reset(st_);
  db_->fail_sql("`" + q.substr(0, 60) + "` failed");
}

void Stmt::run() {
  while (step()) {
  }
  reset();
}

void Stmt::reset() {
  sqlite3_reset(st_);
  sqlite3_clear_bindings(st_);
}

int64_t Stmt::i64(int c) const { return sqlite3_column_int64(st_, c); }
double Stmt::f64(int c) const { return sqlite3_column_double(st_, c); }
bool Stmt::is_null(int c) const { return sqlite3_column_type(st_, c) == SQLITE_NULL; }
std::string Stmt::text(int c) const {
  const unsigned char* p = sqlite3_column_text(st_, c);
  int n = sqlite3_column_bytes(st_, c);
  return p ? std::string((const char*)p, (size_t)n) : std::string();
}
const void* Stmt::blob_ptr(int c, size_t* n) const {
  const void* p = sqlite3_column_blob(st_, c);
  *n = (size_t)sqlite3_column_bytes(st_, c);
  return p;
}
std::vector<uint8_t> Stmt::blob(int c) const {
  size_t n = 0;
  const uint8_t* p = (const uint8_t*)blob_ptr(c, &n);
  return p ? std::vector<uint8_t>(p, p + n) : std::vector<uint8_t>();
}

Transaction::Transaction(Db& db) : db_(db) {
  db_.exec("BEGIN IMMEDIATE");
  open_ = true;
}
Transaction::~Transaction() {
  if (open_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}
void Transaction::commit() {
  db_.exec("COMMIT");
  open_ = false;
}

}  // namespace oboro::sql
