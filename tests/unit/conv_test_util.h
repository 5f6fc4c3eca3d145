// Shared by the convolution tests (test_vae_bf16.cpp, test_winograd.cpp): tensor sizes of a Conv2dShape and the
// named test case, and element-wise helpers on test vectors.
#pragma once
#include "core/dtype.h"
#include "ops/backend.h"
#include <cmath>
#include <cstddef>
#include <vector>

namespace oboro::test::conv {

inline size_t in_n(const Conv2dShape& s) { return (size_t)s.B * s.Ci * s.H * s.W; }
inline size_t out_n(const Conv2dShape& s) { return (size_t)s.B * s.Co * s.out_h() * s.out_w(); }
inline size_t w_n(const Conv2dShape& s) { return (size_t)s.Co * s.Ci * s.kh * s.kw; }
inline int k_of(const Conv2dShape& s) { return s.Ci * s.kh * s.kw; }

struct Case {
  const char* name;
  Conv2dShape s;
  bool bias;
};

// Each value rounded to BF16 (nearest even) and back.
inline std::vector<float> bf16_round(const std::vector<float>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_f32(f32_to_bf16(v[i]));
  return o;
}
// |v| element-wise.
inline std::vector<float> absv(const std::vector<float>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = std::fabs(v[i]);
  return o;
}

}  // namespace oboro::test::conv
