// The SQLite backend of the manifest's database seam (sql_db.h), over Debian libsqlite3-dev: one
// connection in WAL mode, prepared statements, BEGIN IMMEDIATE transactions. Every SQLite failure
// becomes an oboro::Error that starts with the database path and says what to do.
#pragma once
#include "data/sql_db.h"

namespace oboro::sql {

// Opens (creating when `create`) with WAL journal, synchronous=NORMAL and a busy timeout, so several
// processes on this machine (one per --shard) can write the same file.
std::unique_ptr<Db> open_sqlite(const std::string& path, bool create);

}  // namespace oboro::sql
