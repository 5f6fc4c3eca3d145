// The manifest test suites run on both backends (sql_db.h): GoogleTest value parameter "sqlite" or
// "postgresql". The PostgreSQL variant needs a server: OBORO_TEST_PG = a libpq connection string
// (tests/pg/with_server.sh starts a throwaway one and sets it; scripts/test.sh runs ctest under it).
// Without it those tests are skipped with the reason printed. Each manifest gets its own schema
// (search_path), dropped and re-created, so tests never see each other's rows.
#pragma once
#include "data/sql_db.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace oboro::test {

inline std::string pg_server() {
  const char* s = std::getenv("OBORO_TEST_PG");
  return s ? s : "";
}

// `base` with the search_path option set to `schema` (URI or key=value form).
inline std::string with_schema(const std::string& base, const std::string& schema) {
  if (base.rfind("postgres", 0) == 0 && base.find("://") != std::string::npos)
    return base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema;
  return base + " options=-csearch_path=" + schema;
}

// A fresh, empty manifest target named `name`: an SQLite file in `dir`, or a new schema on the server.
inline std::string manifest_target(const std::string& backend, const std::filesystem::path& dir, const std::string& name) {
  if (backend == "sqlite") {
    const std::filesystem::path p = dir / (name + ".db");
    std::error_code ec;
    for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + ext, ec);
    return p.string();
  }
  static std::atomic<int> n{0};
  std::string schema = "oboro_t" + std::to_string(::getpid()) + "_" + std::to_string(n++) + "_";
  for (char c : name) schema += std::isalnum((unsigned char)c) ? (char)std::tolower((unsigned char)c) : '_';
  auto admin = sql::open(pg_server(), false);
  admin->exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE; CREATE SCHEMA " + schema);
  return with_schema(pg_server(), schema);
}

class ManifestBackend : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql" && pg_server().empty())
      GTEST_SKIP() << "OBORO_TEST_PG is not set: run under tests/pg/with_server.sh (scripts/test.sh does) to test the "
                      "PostgreSQL manifest";
  }
  const std::string& backend() const { return GetParam(); }
  std::string target(const std::filesystem::path& dir, const std::string& name) const {
    return manifest_target(GetParam(), dir, name);
  }
};

inline std::string backend_name(const ::testing::TestParamInfo<std::string>& i) { return i.param; }

}  // namespace oboro::test

#define OBORO_MANIFEST_BACKENDS(Suite)                                                                 \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::Values(std::string("sqlite"), std::string("postgresql")), \
                           ::oboro::test::backend_name)
