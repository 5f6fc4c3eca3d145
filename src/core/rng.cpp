#include "core/rng.h"
#include "core/threads.h"
#include <cmath>

namespace oboro {

void Philox::block(uint64_t seed, uint64_t stream, uint64_t index, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)index, c1 = (uint32_t)(index >> 32), c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// Top 23 bits, centred: exactly representable, in [2^-24, 1 - 2^-24] (a float sum of all 32 bits
// would round to 1.0 for the largest words).
static inline float u01(uint32_t w) { return ((float)(w >> 9) + 0.5f) * 0x1p-23f; }
static inline double u01d(uint32_t w) { return ((double)w + 0.5) * (1.0 / 4294967296.0); }

float uniform_at(uint64_t seed, uint64_t stream, uint64_t index) {
  uint32_t w[4];
  Philox::block(seed, stream, index / 4, w);
  return u01(w[index % 4]);
}

// Block b yields 4 normals: pairs (w0,w1) and (w2,w3) through Box-Muller (in double, then rounded).
static inline void normals4(uint64_t seed, uint64_t stream, uint64_t b, float out[4]) {
  uint32_t w[4];
  Philox::block(seed, stream, b, w);
  for (int p = 0; p < 2; ++p) {
    double r = std::sqrt(-2.0 * std::log(u01d(w[2 * p])));
    double th = 2.0 * M_PI * u01d(w[2 * p + 1]);
    out[2 * p] = (float)(r * std::cos(th));
    out[2 * p + 1] = (float)(r * std::sin(th));
  }
}

float normal_at(uint64_t seed, uint64_t stream, uint64_t index) {
  float o[4];
  normals4(seed, stream, index / 4, o);
  return o[index % 4];
}

void fill_normal(float* dst, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std) {
  parallel_for(n, [&](int64_t b, int64_t e) {
    float o[4];
    uint64_t cached = UINT64_MAX;
    for (int64_t i = b; i < e; ++i) {
      uint64_t idx = offset + (uint64_t)i;
      if (idx / 4 != cached) { cached = idx / 4; normals4(seed, stream, cached, o); }
      dst[i] = mean + std * o[idx % 4];
    }
  }, 4096);
}

void fill_uniform(float* dst, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset, float lo, float hi) {
  parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = lo + (hi - lo) * uniform_at(seed, stream, offset + (uint64_t)i);
  }, 4096);
}

}  // namespace oboro
