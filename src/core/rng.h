// Counter-based RNG (Philox4x32-10, Salmon et al. 2011). Every value is a pure function of
// (seed, stream, index), so a sample never depends on thread count, batch split or device.
#pragma once
#include <cstdint>

namespace oboro {

struct Philox {
  // Four 32-bit random words for counter (index, stream) under key = seed.
  static void block(uint64_t seed, uint64_t stream, uint64_t index, uint32_t out[4]);
};

// Uniform in (0, 1): top 23 bits of a word -> (w' + 0.5) / 2^23, never 0 or 1.
float uniform_at(uint64_t seed, uint64_t stream, uint64_t index);
// Standard normal for element `index` (Box-Muller on the block holding it).
float normal_at(uint64_t seed, uint64_t stream, uint64_t index);

// dst[i] = normal_at(seed, stream, offset + i), in parallel.
void fill_normal(float* dst, int64_t n, uint64_t seed, uint64_t stream = 0, uint64_t offset = 0,
                 float mean = 0.f, float std = 1.f);
void fill_uniform(float* dst, int64_t n, uint64_t seed, uint64_t stream = 0, uint64_t offset = 0,
                  float lo = 0.f, float hi = 1.f);

}  // namespace oboro
