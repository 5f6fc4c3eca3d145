#include "dist/fault_hook.h"
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <unistd.h>

namespace oboro::dist {

void test_fault_point(int rank, int64_t step) {
  const char* v = std::getenv("OBORO_TEST_FAULT");
  if (!v || !*v) return;
  char kind[8] = {0};
  int r = -1;
  long long s = -1;
  int used = 0;
  if (std::sscanf(v, "%7[a-z]:%d:%lld%n", kind, &r, &s, &used) != 3 || r != rank || s != step) return;
  std::string marker = v[used] == ':' ? std::string(v + used + 1) : std::string();
  if (!marker.empty()) {
    if (std::filesystem::exists(marker)) return;
    std::ofstream(marker) << "fired\n";
  }
  std::fprintf(stderr, "OBORO_TEST_FAULT: rank %d %s after step %lld\n", rank, kind, s);
  std::fflush(stderr);
  if (std::string(kind) == "kill") ::kill(::getpid(), SIGKILL);
  if (std::string(kind) == "hang")
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace oboro::dist
