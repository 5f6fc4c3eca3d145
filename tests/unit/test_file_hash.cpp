// Model-file hashes cached by (path, size, mtime): the cache is used when the file is unchanged, ignored when it
// changed or is damaged, and a cache that cannot be written never fails the hash.
#include "core/sha256.h"
#include "io/file_hash.h"
#include "test_util.h"
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace oboro;

namespace {
void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
// Sets $OBORO_CACHE_DIR for one test, restores it after.
struct CacheDir {
  std::string old;
  bool had;
  explicit CacheDir(const fs::path& d) {
    const char* o = std::getenv("OBORO_CACHE_DIR");
    had = o != nullptr;
    if (o) old = o;
    setenv("OBORO_CACHE_DIR", d.c_str(), 1);
  }
  ~CacheDir() { had ? (void)setenv("OBORO_CACHE_DIR", old.c_str(), 1) : (void)unsetenv("OBORO_CACHE_DIR"); }
};
}  // namespace

TEST(FileHash, CachedByPathSizeAndMtime) {
  const fs::path dir = test::process_tmpdir("oboro_file_hash") / "a";
  fs::create_directories(dir);
  CacheDir env(dir / "cache");
  const fs::path f = dir / "model.safetensors";
  write(f, "first contents");
  const std::string truth = sha256_file(f.string());
  EXPECT_EQ(sha256_file_cached(f.string()), truth);
  const fs::path cache = dir / "cache" / "file-hashes.json";
  ASSERT_EQ(file_hash_cache_path(), cache.string());
  ASSERT_TRUE(fs::exists(cache));
  // The entry is what later runs read: plant a different (well-formed) hash and it is returned unchanged.
  nlohmann::json j = nlohmann::json::parse(slurp(cache));
  const std::string key = fs::absolute(f).lexically_normal().string();
  ASSERT_TRUE(j.contains(key)) << j.dump();
  const std::string planted(64, 'a');
  j[key]["sha256"] = planted;
  write(cache, j.dump());
  EXPECT_EQ(sha256_file_cached(f.string()), planted);
  // A changed file (new size and mtime) is hashed again and the entry replaced.
  write(f, "second, longer contents");
  const std::string truth2 = sha256_file(f.string());
  ASSERT_NE(truth2, truth);
  EXPECT_EQ(sha256_file_cached(f.string()), truth2);
  EXPECT_EQ(nlohmann::json::parse(slurp(cache))[key]["sha256"].get<std::string>(), truth2);
  // Entries of deleted files are dropped at the next write.
  const fs::path g = dir / "other.safetensors";
  write(g, "other");
  (void)sha256_file_cached(g.string());
  fs::remove(f);
  write(g, "other, changed");
  (void)sha256_file_cached(g.string());
  j = nlohmann::json::parse(slurp(cache));
  EXPECT_FALSE(j.contains(key)) << j.dump();
  EXPECT_TRUE(j.contains(fs::absolute(g).lexically_normal().string())) << j.dump();
}

TEST(FileHash, DamagedOrUnwritableCacheStillHashes) {
  const fs::path dir = test::process_tmpdir("oboro_file_hash") / "b";
  fs::create_directories(dir / "cache");
  const fs::path f = dir / "m.bin";
  write(f, "payload");
  const std::string truth = sha256_file(f.string());
  {
    CacheDir env(dir / "cache");
    write(dir / "cache" / "file-hashes.json", "{not json");
    EXPECT_EQ(sha256_file_cached(f.string()), truth);
    EXPECT_NO_THROW({
      const auto j = nlohmann::json::parse(slurp(dir / "cache" / "file-hashes.json"));
      (void)j;
    });  // rewritten whole
  }
  {
    write(dir / "blocker", "a file where the cache folder should be");
    CacheDir env(dir / "blocker" / "sub");
    EXPECT_EQ(sha256_file_cached(f.string()), truth);
  }
  CacheDir env(dir / "cache");
  EXPECT_NE(test::error_of([&] { sha256_file_cached((dir / "missing.safetensors").string()); }).find("missing.safetensors"),
            std::string::npos);
}
