// A thin RAII layer over SQLite (Debian libsqlite3-dev) for the data manifest: one connection,
// prepared statements, transactions. Every SQLite failure becomes an oboro::Error that starts
// with the database path and says what to do.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace oboro::sql {

class Db;

class Stmt {
 public:
  Stmt() = default;
  Stmt(Db& db, const std::string& sql);
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept;
  Stmt& operator=(Stmt&& o) noexcept;
  ~Stmt();

  // Bind by 1-based position. Strings/blobs are copied (SQLITE_TRANSIENT).
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, int v) { return bind(i, (int64_t)v); }
  Stmt& bind(int i, double v);
  Stmt& bind(int i, const std::string& v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind_blob(int i, const void* p, size_t n);
  Stmt& bind_null(int i);

  bool step();  // true: a row is available; false: done. Throws on errors.
  void run();   // step() to completion, then reset()
  void reset();  // reset and clear bindings

  int64_t i64(int col) const;
  double f64(int col) const;
  std::string text(int col) const;      // "" for NULL
  bool is_null(int col) const;
  std::vector<uint8_t> blob(int col) const;
  const void* blob_ptr(int col, size_t* n) const;  // valid until the next step/reset

 private:
  Db* db_ = nullptr;
  sqlite3_stmt* st_ = nullptr;
};

class Db {
 public:
  // Opens (creating when `create`) with a busy timeout; reads only, so a file that turns out not to be the caller's
  // database is left exactly as it was. configure() then sets the WAL journal and synchronous=NORMAL, so several
  // processes (one per --shard) can write the same file — call it once the schema is known to be the right one.
  Db(const std::string& path, bool create);
  void configure();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db();

  void exec(const std::string& sql);  // one or more statements, no results
  int64_t last_insert_id() const;
  int changes() const;
  const std::string& path() const { return path_; }
  sqlite3* handle() const { return db_; }
  [[noreturn]] void fail_sql(const std::string& what) const;  // throws with the path and sqlite's message

  // Single-value helpers.
  int64_t scalar_i64(const std::string& sql, int64_t dflt = 0);
  std::string scalar_text(const std::string& sql, const std::string& dflt = "");

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back if destroyed without commit().
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  void commit();

 private:
  Db& db_;
  bool open_ = false;
};

}  // namespace oboro::sql
