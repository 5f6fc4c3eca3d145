// Base64 (RFC 4648) for binary blobs stored in safetensors string metadata (e.g. a tokenizer model).
#pragma once
#include <string>

namespace oboro {
std::string base64_encode(const std::string& bytes);
std::string base64_decode(const std::string& text);  // throws oboro::Error on invalid input
}  // namespace oboro
