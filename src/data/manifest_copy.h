// `oboro data manifest copy SRC DST`: moves a manifest between backends (SQLite ↔ PostgreSQL, or
// file to file) in one transaction on DST, verified before it commits: every table's row count and
// a content digest of every table (typed values in primary-key order), and the active set's dataset
// digest, equal on both sides. DST must be empty. Ids are kept, so export and model links stay valid.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct CopyTable {
  std::string name;
  int64_t rows = 0;
  std::string digest;  // sha256 of the table's rows, typed, in primary-key order (same on both sides)
};

struct CopyReport {
  std::vector<CopyTable> tables;
  std::string dataset_digest;  // of the active images, as `oboro data audit` computes it
  int64_t active = 0;
  double seconds = 0;
};

CopyReport copy_manifest(const std::string& src, const std::string& dst, bool progress);

}  // namespace oboro
