#include "io/file_hash.h"
#include "core/sha256.h"
#include "io/safetensors.h"  // write_file_atomic
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace oboro {
namespace fs = std::filesystem;

std::string file_hash_cache_path() {
  if (const char* d = std::getenv("OBORO_CACHE_DIR"); d && *d) return (fs::path(d) / "file-hashes.json").string();
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return (fs::path(d) / "oboro" / "file-hashes.json").string();
  if (const char* h = std::getenv("HOME"); h && *h) return (fs::path(h) / ".cache" / "oboro" / "file-hashes.json").string();
  return "";
}

namespace {

nlohmann::json read_cache(const std::string& path) {
  std::ifstream f(path);
  if (!f) return nlohmann::json::object();
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();  // a damaged cache is treated as empty
}

}  // namespace

std::string sha256_file_cached(const std::string& path) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec);
  const auto size = fs::file_size(path, ec);
  const auto mtime = ec ? fs::file_time_type{} : fs::last_write_time(path, ec);
  const std::string cache = file_hash_cache_path();
  if (ec || cache.empty()) return sha256_file(path);  // sha256_file names the unreadable file
  const std::string key = abs.lexically_normal().string();
  const long long stamp = (long long)mtime.time_since_epoch().count();
  nlohmann::json j = read_cache(cache);
  if (j.contains(key)) {
    const auto& e = j[key];
    if (e.is_object() && e.value("size", -1LL) == (long long)size && e.value("mtime", 0LL) == stamp) {
      const std::string h = e.value("sha256", std::string());
      if (h.size() == 64) return h;
    }
  }
  const std::string h = sha256_file(path);
  try {
    // Forget files that are gone (temporary benchmark files, deleted checkpoints) so the cache does not grow.
    for (auto it = j.begin(); it != j.end();) {
      std::error_code e2;
      if (!fs::exists(it.key(), e2)) it = j.erase(it);
      else ++it;
    }
    j[key] = {{"size", (long long)size}, {"mtime", stamp}, {"sha256", h}};
    fs::create_directories(fs::path(cache).parent_path());
    write_file_atomic(cache, j.dump(1));
  } catch (const std::exception&) {
    // Read-only home, full disk...: the hash is still right, only the next run recomputes it.
  }
  return h;
}

}  // namespace oboro
