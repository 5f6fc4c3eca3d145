// SHA-256 (FIPS 180-4), streaming; used for model hashes (A1111 "AutoV2" = first 10 hex digits).
#pragma once
#include <cstdint>
#include <string>

namespace oboro {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();  // finalises

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);  // streams the file; error names it
}  // namespace oboro
