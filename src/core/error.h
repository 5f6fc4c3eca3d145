// One error type for everything a user can cause: the message names the thing and the fix.
#pragma once
#include <stdexcept>
#include <string>
#include <sstream>

namespace oboro {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void cat_into(std::ostringstream&) {}
template <class T, class... R>
void cat_into(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  cat_into(os, rest...);
}
}  // namespace detail

// str("a", 1, "b") -> "a1b"
template <class... A>
std::string str(const A&... a) {
  std::ostringstream os;
  detail::cat_into(os, a...);
  return os.str();
}

template <class... A>
[[noreturn]] void fail(const A&... a) {
  throw Error(str(a...));
}

// Internal invariant (a bug, not a user error).
#define OBORO_ASSERT(cond)                                                              \
  do {                                                                                  \
    if (!(cond)) ::oboro::fail("internal error: ", #cond, " at ", __FILE__, ":", __LINE__); \
  } while (0)

}  // namespace oboro
