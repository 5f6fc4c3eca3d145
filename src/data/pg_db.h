// The PostgreSQL backend of the manifest's database seam (sql_db.h), over libpq (Debian libpq-dev):
// one connection per Db, statements prepared once per connection (cached by their SQL text), text
// results (bytea decoded), blobs bound in binary. Errors are one line naming the manifest (password
// hidden), what failed and the fix: an unreachable server, a wrong password, a missing database,
// a connection lost mid-batch (the open transaction is then rolled back by the server).
#pragma once
#include "data/sql_db.h"

namespace oboro::sql {

std::unique_ptr<Db> open_postgres(const std::string& conninfo);

// The connection string with any password replaced by "***" (URI user:password@ or password=...).
std::string redact_conninfo(const std::string& conninfo);

// Rewrites `?` placeholders (outside quotes) to $1, $2, ...; returns their number through *n.
std::string number_placeholders(const std::string& sql, int* n);

}  // namespace oboro::sql
