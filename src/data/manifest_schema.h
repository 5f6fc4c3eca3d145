// The manifest's schema versions and migrations (manifest_schema.cpp), for SQLite and PostgreSQL.
#pragma once
#include "data/sql_db.h"

namespace oboro {

int manifest_schema_version();  // the newest version this oboro writes
// Creates (when `create` and the database/schema is empty) or upgrades the manifest's tables in one
// transaction; fails with one line for a database that is not a manifest or of a newer version.
void migrate_manifest(sql::Db& db, bool create);

}  // namespace oboro
