// Shared by the convolution tests (test_vae_bf16.cpp, test_winograd.cpp): tensor sizes of a Conv2dShape and the
// named test case.
#pragma once
#include "ops/backend.h"
#include <cstddef>

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

}  // namespace oboro::test::conv
