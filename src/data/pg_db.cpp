#include "data/pg_db.h"

#include "core/error.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <regex>

namespace oboro::sql {

std::string redact_conninfo(const std::string& c) {
  std::string s = c;
  if (s.rfind("postgresql://", 0) == 0 || s.rfind("postgres://", 0) == 0) {
    // scheme://user:password@host → scheme://user:***@host
    const size_t start = s.find("://") + 3;
    const size_t at = s.find('@', start);
    const size_t slash = s.find('/', start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const size_t colon = s.find(':', start);
      if (colon != std::string::npos && colon < at) s = s.substr(0, colon + 1) + "***" + s.substr(at);
    }
    return std::regex_replace(s, std::regex("([?&]password=)[^&]*"), "$1***");
  }
  return std::regex_replace(s, std::regex("(password\\s*=\\s*)('([^'\\\\]|\\\\.)*'|\\S*)"), "$1***");
}

std::string number_placeholders(const std::string& sql, int* n) {
  std::string out;
  out.reserve(sql.size() + 16);
  *n = 0;
  char quote = 0;
  for (char c : sql) {
    if (quote) {
      if (c == quote) quote = 0;
      out += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      out += c;
    } else if (c == '?') {
      out += "$" + std::to_string(++*n);
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

// The first line of a libpq message, without "FATAL:  "/"ERROR:  " and trailing blanks.
std::string one_line(const char* msg) {
  std::string s = msg ? msg : "";
  for (const char* tag : {"FATAL:  ", "ERROR:  "}) {
    const size_t p = s.find(tag);
    if (p != std::string::npos) s = s.substr(0, p) + s.substr(p + std::strlen(tag));
  }
  const size_t nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string connect_advice(const std::string& msg) {
  if (msg.find("password authentication failed") != std::string::npos)
    return "wrong password or user: fix the password in --manifest (or in ~/.pgpass / PGPASSWORD)";
  if (msg.find("no password supplied") != std::string::npos)
    return "the server wants a password: put it in ~/.pgpass or PGPASSWORD (or user:password@ in the URI)";
  if (msg.find("does not exist") != std::string::npos && msg.find("database") != std::string::npos)
    return "create the database first (createdb NAME, or CREATE DATABASE on the server)";
  if (msg.find("role") != std::string::npos && msg.find("does not exist") != std::string::npos)
    return "create the user on the server (createuser NAME) or name another user in --manifest";
  if (msg.find("Connection refused") != std::string::npos || msg.find("No such file or directory") != std::string::npos ||
      msg.find("could not translate host name") != std::string::npos || msg.find("timeout expired") != std::string::npos ||
      msg.find("No route to host") != std::string::npos)
    return "the PostgreSQL server is not reachable: start it, or fix the host/port/socket in --manifest";
  if (msg.find("pg_hba.conf") != std::string::npos)
    return "the server refuses this host/user: add a line for it to the server's pg_hba.conf";
  return "check the connection string (libpq URI postgresql://user@host/db or key=value)";
}

class PgDb;

class PgStmt final : public StmtImpl {
 public:
  PgStmt(PgDb& db, std::string name, std::string sql, int nparams)
      : db_(&db), name_(std::move(name)), sql_(std::move(sql)), vals_((size_t)nparams), set_((size_t)nparams, 0),
        fmt_((size_t)nparams, 0), len_((size_t)nparams, 0) {}
  ~PgStmt() override { clear(); }

  void bind_i64(int i, int64_t v) override { put(i, std::to_string(v), 0); }
  void bind_f64(int i, double v) override {
    char b[40];
    std::snprintf(b, sizeof b, "%.17g", v);
    put(i, b, 0);
  }
  void bind_text(int i, const std::string& v) override { put(i, v, 0); }
  void bind_blob(int i, const void* p, size_t n) override { put(i, std::string((const char*)p, n), 1); }
  void bind_null(int i) override {
    check_index(i);
    set_[(size_t)i - 1] = 0;
  }

  bool step() override;
  void reset() override {
    clear();
    std::fill(set_.begin(), set_.end(), 0);
  }

  int64_t i64(int c) const override {
    const char* v = PQgetvalue(res_, row_, c);
    if (v[0] == 't' && v[1] == 0) return 1;
    if (v[0] == 'f' && v[1] == 0) return 0;
    return std::strtoll(v, nullptr, 10);
  }
  double f64(int c) const override { return std::strtod(PQgetvalue(res_, row_, c), nullptr); }
  std::string text(int c) const override {
    return std::string(PQgetvalue(res_, row_, c), (size_t)PQgetlength(res_, row_, c));
  }
  bool is_null(int c) const override { return PQgetisnull(res_, row_, c) != 0; }
  const void* blob_ptr(int c, size_t* n) const override {
    // bytea in text form: "\x" + hex digits.
    const char* v = PQgetvalue(res_, row_, c);
    const size_t len = (size_t)PQgetlength(res_, row_, c);
    blob_.clear();
    if (len >= 2 && v[0] == '\\' && v[1] == 'x') {
      auto hex = [](char h) { return h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10; };
      blob_.reserve((len - 2) / 2);
      for (size_t k = 2; k + 1 < len; k += 2) blob_.push_back((uint8_t)(hex(v[k]) << 4 | hex(v[k + 1])));
    } else {
      blob_.assign((const uint8_t*)v, (const uint8_t*)v + len);
    }
    *n = blob_.size();
    return blob_.data();
  }

 private:
  void check_index(int i);
  void put(int i, std::string v, int fmt) {
    check_index(i);
    vals_[(size_t)i - 1] = std::move(v);
    set_[(size_t)i - 1] = 1;
    fmt_[(size_t)i - 1] = fmt;
    len_[(size_t)i - 1] = (int)vals_[(size_t)i - 1].size();
  }
  void clear() {
    if (res_) PQclear(res_);
    res_ = nullptr;
    row_ = -1;
  }

  PgDb* db_;
  std::string name_, sql_;
  std::vector<std::string> vals_;
  std::vector<char> set_;
  std::vector<int> fmt_, len_;
  PGresult* res_ = nullptr;
  int row_ = -1;
  mutable std::vector<uint8_t> blob_;
};

class PgDb final : public Db {
 public:
  explicit PgDb(const std::string& conninfo) {
    name_ = redact_conninfo(conninfo);
    // connect_timeout: an unreachable host fails in seconds, not after the OS's TCP timeout.
    std::string ci = conninfo;
    if (ci.find("connect_timeout") == std::string::npos) {
      if (ci.rfind("postgres", 0) == 0) ci += (ci.find('?') == std::string::npos ? "?" : "&") + std::string("connect_timeout=10");
      else ci += " connect_timeout=10";
    }
    conn_ = PQconnectdb(ci.c_str());
    if (!conn_) fail(name_, ": cannot connect to the PostgreSQL manifest: out of memory");
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string full = PQerrorMessage(conn_);
      std::string msg;  // the line that says what went wrong (libpq 15 puts it after "connection to server ... failed: ")
      for (size_t a = 0; a < full.size();) {
        size_t b = full.find('\n', a);
        if (b == std::string::npos) b = full.size();
        const std::string line = one_line(full.substr(a, b - a).c_str());
        if (!line.empty() && line[0] != '\t' && msg.empty()) msg = line;
        a = b + 1;
      }
      PQfinish(conn_);
      conn_ = nullptr;
      fail(name_, ": cannot connect to the PostgreSQL manifest: ", msg, ": ", connect_advice(full));
    }
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);  // "relation exists, skipping" etc.
    try {
      exec("SET client_min_messages = warning");
    } catch (...) {
      PQfinish(conn_);  // the destructor does not run for a constructor that throws
      conn_ = nullptr;
      throw;
    }
  }
  ~PgDb() override {
    if (conn_) PQfinish(conn_);
  }

  Backend backend() const override { return Backend::postgresql; }
  PGconn* conn() const { return conn_; }

  [[noreturn]] void fail_sql(const std::string& what) const override { fail_result(what, nullptr); }

  // Throws for a failed result: a lost connection (the server rolls back the open transaction),
  // or the server's first error line with advice for the SQLSTATEs a user can act on.
  [[noreturn]] void fail_result(const std::string& what, const PGresult* r) const {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const std::string st = state ? state : "";
    const std::string msg = one_line(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
    const std::string lost_msg = msg.empty() ? one_line(PQerrorMessage(conn_)) : msg;
    if (PQstatus(conn_) == CONNECTION_BAD || st.rfind("08", 0) == 0 || st == "57P01" || st == "57P02" || st == "57P03")
      fail(name_, ": lost the connection to the PostgreSQL server (", lost_msg,
           "): the batch in flight was not committed; re-run the command when the server is back (finished work is kept)");
    std::string advice;
    if (st == "40P01" || st == "40001") advice = ": another process conflicted with this batch; re-run the command (finished work is kept)";
    else if (st == "53100") advice = ": the server's disk is full: free space and re-run (committed work is kept)";
    else if (st == "42501") advice = ": the user has no rights on this database/schema: GRANT them, or connect as its owner";
    else if (st == "3F000") advice = ": the schema named in search_path does not exist: CREATE SCHEMA it first";
    else if (st == "P0001") advice = "";  // our own triggers' messages already say what to do
    fail(name_, ": ", what, ": ", msg, advice);
  }

  // Runs `sql` (no parameters); returns the result, which the caller clears.
  PGresult* run(const std::string& sql, const std::string& what) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
      try {
        fail_result(what, r);
      } catch (...) {
        PQclear(r);
        throw;
      }
    }
    return r;
  }

  void exec(const std::string& sql) override { PQclear(run(sql, "`" + sql.substr(0, 60) + "` failed")); }

  std::unique_ptr<StmtImpl> prepare(const std::string& sql) override {
    int n = 0;
    const std::string pg = number_placeholders(sql, &n);
    auto it = prepared_.find(pg);
    if (it == prepared_.end()) {
      const std::string name = "oboro_" + std::to_string(prepared_.size());
      PGresult* r = PQprepare(conn_, name.c_str(), pg.c_str(), n, nullptr);
      if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        try {
          fail_result("cannot prepare `" + sql.substr(0, 60) + "`", r);
        } catch (...) {
          PQclear(r);
          throw;
        }
      }
      PQclear(r);
      it = prepared_.emplace(pg, name).first;
    }
    return std::make_unique<PgStmt>(*this, it->second, sql, n);
  }

  void begin() override { exec("BEGIN"); }
  void commit() override {
    PGresult* r = run("COMMIT", "COMMIT failed");
    const std::string tag = PQcmdStatus(r);
    PQclear(r);
    if (tag == "ROLLBACK") fail(name_, ": the transaction was rolled back by the server: re-run the command");
  }
  void rollback() noexcept override {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) PQclear(PQexec(conn_, "ROLLBACK"));
  }
  void lock_schema() override { exec("SELECT pg_advisory_xact_lock(hashtext('oboro-manifest:' || current_schema()))"); }

  bool has_table(const std::string& name) override {
    Stmt s(*this, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?");
    s.bind(1, name);
    return s.step() && s.i64(0) > 0;
  }
  int64_t table_count() override {
    return scalar_i64("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p', 'f')");
  }
  int64_t size_bytes() override {
    return scalar_i64("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c JOIN pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'");
  }

 private:
  PGconn* conn_ = nullptr;
  std::map<std::string, std::string> prepared_;  // SQL text → prepared statement name
};

void PgStmt::check_index(int i) {
  if (i < 1 || i > (int)vals_.size())
    db_->fail_sql("bind: parameter " + std::to_string(i) + " of `" + sql_.substr(0, 60) + "` out of range");
}

bool PgStmt::step() {
  if (!res_) {
    std::vector<const char*> v(vals_.size());
    for (size_t k = 0; k < vals_.size(); ++k) v[k] = set_[k] ? vals_[k].data() : nullptr;
    res_ = PQexecPrepared(db_->conn(), name_.c_str(), (int)v.size(), v.data(), len_.data(), fmt_.data(), 0);
    const ExecStatusType t = PQresultStatus(res_);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
      PGresult* r = res_;
      res_ = nullptr;
      try {
        db_->fail_result("`" + sql_.substr(0, 60) + "` failed", r);
      } catch (...) {
        PQclear(r);
        throw;
      }
    }
    row_ = 0;
  } else {
    ++row_;
  }
  return row_ < PQntuples(res_);
}

}  // namespace

std::unique_ptr<Db> open_postgres(const std::string& conninfo) { return std::make_unique<PgDb>(conninfo); }

}  // namespace oboro::sql
