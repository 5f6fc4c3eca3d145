// UTF-8 validation of user text (prompts, captions) where it enters: a bad byte is reported with its offset before
// any work is done, never later by a JSON library that does not know which field it was.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace oboro {

// The byte offset of the first byte that does not start or continue a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or std::string_view::npos when `s` is valid.
size_t utf8_invalid_at(std::string_view s);

// Fails (oboro::Error) with "<what>: not valid UTF-8 at byte N (0xHH); save the text as UTF-8" when `s` is not valid.
void check_utf8(std::string_view s, const std::string& what);

}  // namespace oboro
