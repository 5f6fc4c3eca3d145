#include "data/sql_db.h"

#include "data/pg_db.h"
#include "data/sqlite_db.h"

#include <cctype>

namespace oboro::sql {

int64_t Db::scalar_i64(const std::string& q, int64_t dflt) {
  Stmt s(*this, q);
  return s.step() && !s.is_null(0) ? s.i64(0) : dflt;
}

std::string Db::scalar_text(const std::string& q, const std::string& dflt) {
  Stmt s(*this, q);
  return s.step() && !s.is_null(0) ? s.text(0) : dflt;
}

std::vector<uint8_t> Stmt::blob(int c) const {
  size_t n = 0;
  const uint8_t* p = (const uint8_t*)blob_ptr(c, &n);
  return p ? std::vector<uint8_t>(p, p + n) : std::vector<uint8_t>();
}

bool is_postgres_target(const std::string& t) {
  if (t.rfind("postgresql://", 0) == 0 || t.rfind("postgres://", 0) == 0) return true;
  // libpq key=value: starts with an identifier followed by '=' (a file path has no '=' there).
  size_t i = 0;
  while (i < t.size() && (std::isalnum((unsigned char)t[i]) || t[i] == '_')) ++i;
  while (i < t.size() && t[i] == ' ') ++i;
  if (i == 0 || i >= t.size() || t[i] != '=') return false;
  const std::string key = t.substr(0, t.find_first_of(" ="));
  for (const char* k : {"host", "hostaddr", "port", "dbname", "user", "password", "service", "sslmode", "options",
                        "application_name", "connect_timeout", "passfile"})
    if (key == k) return true;
  return false;
}

std::string display_name(const std::string& target) {
  return is_postgres_target(target) ? redact_conninfo(target) : target;
}

std::unique_ptr<Db> open(const std::string& target, bool create) {
  if (is_postgres_target(target)) return open_postgres(target);
  return open_sqlite(target, create);
}

}  // namespace oboro::sql
