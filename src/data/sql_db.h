// The data manifest's database seam: one small interface (Db, Stmt, Transaction) with two
// backends: the embedded SQLite file (sqlite_db.*, the default) and a PostgreSQL server through
// libpq (pg_db.*). sql::open() picks the backend from the --manifest value: "postgresql://..." /
// "postgres://..." URIs and libpq "key=value" connection strings go to PostgreSQL, anything else
// is an SQLite file path.
//
// Callers write one SQL dialect, the common subset of both: `?` placeholders (PostgreSQL's
// backend numbers them $1, $2, ...), INSERT ... ON CONFLICT ... DO UPDATE/NOTHING, RETURNING,
// TRUE/FALSE, `||`. Each backend keeps its own DDL (manifest_schema.cpp). Every failure becomes an
// oboro::Error that starts with the manifest's name (a PostgreSQL password is never shown) and
// says what to do.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace oboro::sql {

enum class Backend { sqlite, postgresql };

// One backend's prepared statement. Binding is 1-based; columns 0-based.
class StmtImpl {
 public:
  virtual ~StmtImpl() = default;
  virtual void bind_i64(int i, int64_t v) = 0;
  virtual void bind_f64(int i, double v) = 0;
  virtual void bind_text(int i, const std::string& v) = 0;
  virtual void bind_blob(int i, const void* p, size_t n) = 0;
  virtual void bind_null(int i) = 0;
  virtual bool step() = 0;
  virtual void reset() = 0;
  virtual int64_t i64(int col) const = 0;
  virtual double f64(int col) const = 0;
  virtual std::string text(int col) const = 0;
  virtual bool is_null(int col) const = 0;
  virtual const void* blob_ptr(int col, size_t* n) const = 0;
};

class Db {
 public:
  virtual ~Db() = default;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  virtual Backend backend() const = 0;
  // The manifest's name for messages: the file path, or the connection string without its password.
  const std::string& path() const { return name_; }

  virtual void exec(const std::string& sql) = 0;  // one or more statements, no results
  virtual std::unique_ptr<StmtImpl> prepare(const std::string& sql) = 0;
  virtual void begin() = 0;               // SQLite: BEGIN IMMEDIATE (one writer); PostgreSQL: BEGIN
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  virtual bool has_table(const std::string& name) = 0;  // in the manifest's schema
  virtual int64_t table_count() = 0;                     // tables of any kind in the manifest's schema
  virtual int64_t size_bytes() = 0;                      // on disk: the file (+ WAL), or the schema's relations
  // Serialises schema creation/migration between processes (PostgreSQL: a transaction-scoped
  // advisory lock; SQLite: BEGIN IMMEDIATE already does). Call inside a transaction.
  virtual void lock_schema() = 0;
  // The connection's settings that write to the database (SQLite: WAL mode, which is stored in the file). Called by
  // migrate_manifest only once the database is known to be a manifest (or empty), outside a transaction, so a
  // database that is not a manifest is refused without being changed.
  virtual void configure() {}
  [[noreturn]] virtual void fail_sql(const std::string& what) const = 0;

  // Single-value helpers.
  int64_t scalar_i64(const std::string& sql, int64_t dflt = 0);
  std::string scalar_text(const std::string& sql, const std::string& dflt = "");

 protected:
  Db() = default;
  std::string name_;
};

class Stmt {
 public:
  Stmt() = default;
  Stmt(Db& db, const std::string& sql) : db_(&db), impl_(db.prepare(sql)) {}

  // Strings/blobs are copied.
  Stmt& bind(int i, int64_t v) { return impl_->bind_i64(i, v), *this; }
  Stmt& bind(int i, int v) { return bind(i, (int64_t)v); }
  Stmt& bind(int i, double v) { return impl_->bind_f64(i, v), *this; }
  Stmt& bind(int i, const std::string& v) { return impl_->bind_text(i, v), *this; }
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind_blob(int i, const void* p, size_t n) { return impl_->bind_blob(i, p, n), *this; }
  Stmt& bind_null(int i) { return impl_->bind_null(i), *this; }

  bool step() { return impl_->step(); }  // true: a row is available; false: done. Throws on errors.
  void run() {                           // step() to completion, then reset()
    while (step()) {
    }
    reset();
  }
  void reset() { impl_->reset(); }  // reset and clear bindings

  int64_t i64(int col) const { return impl_->i64(col); }
  double f64(int col) const { return impl_->f64(col); }
  std::string text(int col) const { return impl_->text(col); }  // "" for NULL
  bool is_null(int col) const { return impl_->is_null(col); }
  std::vector<uint8_t> blob(int col) const;
  const void* blob_ptr(int col, size_t* n) const { return impl_->blob_ptr(col, n); }  // valid until the next step/reset

 private:
  Db* db_ = nullptr;
  std::unique_ptr<StmtImpl> impl_;
};

// begin() ... commit(); rolls back if destroyed without commit().
class Transaction {
 public:
  explicit Transaction(Db& db) : db_(db) {
    db_.begin();
    open_ = true;
  }
  ~Transaction() {
    if (open_) db_.rollback();
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    db_.commit();
    open_ = false;
  }

 private:
  Db& db_;
  bool open_ = false;
};

// True for "postgresql://...", "postgres://..." and libpq "key=value ..." strings.
bool is_postgres_target(const std::string& target);
// Opens the manifest's database. SQLite: `create` makes the file. PostgreSQL: the database must
// exist (createdb); `create` is not needed to make tables, that is the caller's schema step.
std::unique_ptr<Db> open(const std::string& target, bool create);
// The --manifest value as shown in messages and recorded in provenance: a PostgreSQL password is
// replaced by "***"; an SQLite path is unchanged.
std::string display_name(const std::string& target);

}  // namespace oboro::sql
