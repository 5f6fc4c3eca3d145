// Helpers shared by the unit tests: the message of the oboro::Error a call throws, and a per-process scratch
// folder (removed and recreated on first use, so reruns start clean).
#pragma once
#include "core/error.h"

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <unistd.h>

namespace oboro::test {

// The what() of the oboro::Error `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// $TMPDIR/<prefix>_<pid>: created fresh the first time it is asked for in this process.
inline std::filesystem::path process_tmpdir(const std::string& prefix) {
  namespace fs = std::filesystem;
  fs::path p = fs::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()));
  static std::set<std::string> made;
  if (made.insert(prefix).second) {
    fs::remove_all(p);
    fs::create_directories(p);
  }
  return p;
}

}  // namespace oboro::test
