// Memory over many generations in one process (issue 21): the generation pipeline (load the bundled default
// model, encode, sample, decode, release) run again and again keeps the resident set flat. The 1,000-generation
// run through `oboro serve` is tests/crash/rss_generations.py; this is the quick in-process version.
#include "flow/generate.h"
#include "flow/memory_plan.h"
#include "ops/backend.h"
#include <gtest/gtest.h>
#include <cstdio>

using namespace oboro;

TEST(MemoryFlat, TwoHundredGenerationsKeepTheResidentSetFlat) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer reserves terabytes of address space and keeps freed memory in quarantine: "
                  "this measures the plain build";
#endif
  GenerateRequest rq;
  rq.model = std::string(OBORO_SOURCE_DIR) + "/models/default/oboro-default.safetensors";
  rq.prompt = "a red circle";
  rq.width = rq.height = 32;
  rq.steps = 2;
  const int warm = 20, count = 200;
  size_t at_warm = 0;
  for (int i = 1; i <= count; ++i) {
    rq.seed = i;
    auto images = generate(cpu_backend(), rq, false);
    ASSERT_EQ(images.size(), 1u);
    trim_heap();  // freed heap back to the OS, as the server does after a job (what is still held is counted)
    if (i == warm) at_warm = current_rss_bytes();
  }
  const size_t at_end = current_rss_bytes();
  const double grew_kib = ((double)at_end - (double)at_warm) / 1024.0;
  std::printf("VmRSS %.1f MiB after %d generations, %.1f MiB after %d: %+.1f KiB\n", at_warm / 1048576.0, warm,
              at_end / 1048576.0, count, grew_kib);
  EXPECT_LT(grew_kib, 1024.0) << "the resident set grew by more than 1 MiB over " << count - warm << " generations";
}
