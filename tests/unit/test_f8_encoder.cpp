// The direct F8 E4M3 encoder against a brute-force nearest-(ties-to-even) search over all codes.
#include "core/dtype.h"
#include <gtest/gtest.h>
#include <cmath>
#include <cstring>

using namespace oboro;

static uint8_t brute_f8(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  uint8_t best = 0;
  float bestd = a;
  for (uint8_t c = 1; c < 0x7f; ++c) {
    float d = std::fabs(f8e4m3_to_f32(c) - a);
    if (d < bestd || (d == bestd && (c & 1) == 0)) { best = c; bestd = d; }
  }
  return sign | best;
}

TEST(DtypeF8Encoder, MatchesBruteForceAtEveryCodeAndMidpoint) {
  int checked = 0;
  for (int c = 0; c < 0x7e; ++c) {
    float lo = f8e4m3_to_f32((uint8_t)c), hi = f8e4m3_to_f32((uint8_t)(c + 1)), mid = (lo + hi) / 2;
    for (float f : {lo, hi, mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f), -mid, -lo}) {
      ASSERT_EQ(brute_f8(f), f32_to_f8e4m3(f)) << f;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 7 * 0x7e);
}

TEST(DtypeF8Encoder, MatchesBruteForceOnSampledFloats) {
  int checked = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += 104729) {
    uint32_t w = (uint32_t)u;
    float f;
    std::memcpy(&f, &w, 4);
    if (std::isnan(f) || std::fabs(f) > 460.f) continue;
    ASSERT_EQ(brute_f8(f), f32_to_f8e4m3(f)) << f;
    ++checked;
  }
  EXPECT_GT(checked, 10000);
  EXPECT_EQ(f32_to_f8e4m3(1e9f), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(-1e9f), 0xfe);
  EXPECT_EQ(f32_to_f8e4m3(NAN), 0x7f);
}
