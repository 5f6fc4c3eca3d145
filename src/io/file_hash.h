// SHA-256 of model files with a cache keyed by (absolute path, size, modification time), so `generate` does not
// re-read a multi-GB checkpoint every run just to print "Model hash" in the infotext (A1111 caches the same way).
// The cache is a JSON file in $OBORO_CACHE_DIR, else $XDG_CACHE_HOME/oboro, else ~/.cache/oboro
// (`file-hashes.json`); it is only an optimisation: when it cannot be read or written the hash is computed and
// nothing fails. Entries of files that no longer exist are dropped whenever the cache is written. A file replaced in place keeps its path but changes size or mtime, so its entry is not reused.
#pragma once
#include <string>

namespace oboro {

// Lower-case hex SHA-256 of the file (64 characters). Errors (unreadable file) name the file.
std::string sha256_file_cached(const std::string& path);

// The cache file in use ("" when no cache folder can be named).
std::string file_hash_cache_path();

}  // namespace oboro
