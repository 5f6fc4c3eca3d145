#include "core/crash_point.h"
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

namespace oboro {

namespace {

struct CrashTarget {
  std::string name;  // "" = no target
  long nth = 1;
  long seen = 0;
};

CrashTarget& target() {
  static CrashTarget t = [] {
    CrashTarget c;
    if (const char* v = std::getenv("OBORO_CRASH_AT")) {
      std::string s = v;
      const auto hash = s.find('#');
      c.name = s.substr(0, hash);
      if (hash != std::string::npos) c.nth = std::max(1L, std::atol(s.c_str() + hash + 1));
    }
    return c;
  }();
  return t;
}

}  // namespace

void crash_point(const char* name) {
  CrashTarget& t = target();
  if (t.name.empty() || t.name != name) return;
  if (++t.seen == t.nth) std::raise(SIGKILL);
}

}  // namespace oboro
