// Attention test inputs shared by the F32 (test_attention_fast.cpp) and BF16 (test_attention_bf16.cpp) kernel
// tests: a shape, a key-mask pattern and the optional T5 relative bias, with deterministic random Q, K, V.
#pragma once
#include "core/rng.h"
#include "op_test_util.h"

#include <cmath>

namespace oboro::test::attn {

struct Case {
  int B, S, H, dh;
  int mask;  // 0 none, 1 scattered + trailing padding, 2 the second 64-key tile, 3 batch 1 fully masked
  bool rel;
};

struct Data {
  Case c;
  Vec q, k, v, valid, rel;
  size_t n() const { return (size_t)c.B * c.S * c.H * c.dh; }
  const float* kv() const { return valid.empty() ? nullptr : valid.data(); }
  const float* rb() const { return rel.empty() ? nullptr : rel.data(); }
  float scale() const { return 1.f / std::sqrt((float)c.dh); }
};

inline Data make(const Case& c, uint64_t seed) {
  Data d{c, {}, {}, {}, {}, {}};
  d.q = randn(d.n(), seed);
  d.k = randn(d.n(), seed + 1);
  d.v = randn(d.n(), seed + 2);
  if (c.rel) d.rel = randn((size_t)c.H * (2 * c.S - 1), seed + 3, 1.5f);
  if (c.mask) {
    d.valid.assign((size_t)c.B * c.S, 1.f);
    for (int b = 0; b < c.B; ++b)
      for (int j = 0; j < c.S; ++j) {
        float& vj = d.valid[(size_t)b * c.S + j];
        if (c.mask == 1) vj = b == 0 ? ((j > 0 && uniform_at(seed, 3, j) < 0.25f) ? 0.f : 1.f) : (j < c.S - c.S / 3 ? 1.f : 0.f);
        if (c.mask == 2) vj = (j >= 64 && j < 128) ? 0.f : 1.f;
        if (c.mask == 3) vj = b == 1 ? 0.f : 1.f;
      }
  }
  return d;
}

}  // namespace oboro::test::attn
