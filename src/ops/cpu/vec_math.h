// Branch-free elementwise math that GCC vectorises in plain loops (no -ffast-math needed): used by the softmax
// (attention), SiLU / SwiGLU and the fused GroupNorm + SiLU.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>

namespace oboro::cpu {

// e^x: x = n·ln2 + r, |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial (relative error < 2e-8 before rounding),
// 2^n through the exponent bits. Inputs below −87 (including −inf) give exactly 0; inputs are clamped at 88
// (e^88 ≈ 1.65e38, finite), which callers such as 1/(1 + e^−x) treat as "huge".
inline float exp_approx(float x) {
  const float v = std::min(std::max(x, -87.0f), 88.0f);
  const float t = v * 1.44269504088896341f;
  const float k = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer
  const float r = v - k * 0.693145751953125f - k * 1.42860682030941723e-6f;
  const float p =
      1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t e = ((int32_t)k + 127) << 23;
  const float y = p * std::bit_cast<float>(e);
  return x < -87.0f ? 0.f : y;
}

// e^x in place over a row.
inline void exp_row(float* x, int n) {
  for (int j = 0; j < n; ++j) x[j] = exp_approx(x[j]);
}

// σ(x) = 1 / (1 + e^−x).
inline float sigmoid_approx(float x) { return 1.f / (1.f + exp_approx(-x)); }

// Row reductions in double with 8 independent partial sums combined in a fixed order: they vectorise (each lane's
// sum is its own chain, no reassociation needed) and give the same result on any thread count.
template <class F>
inline double sum8_f64(int64_t n, F term) {
  double part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += term(i + l);
  for (int l = 0; i < n; ++i, ++l) part[l] += term(i);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}
// Σ x
inline double sum_f64(const float* x, int64_t n) { return sum8_f64(n, [x](int64_t i) { return (double)x[i]; }); }
// Σ x²
inline double sum_sq_f64(const float* x, int64_t n) {
  return sum8_f64(n, [x](int64_t i) { return (double)x[i] * (double)x[i]; });
}
// Σ (x − μ)²
inline double sum_sq_dev_f64(const float* x, int64_t n, double mu) {
  return sum8_f64(n, [x, mu](int64_t i) {
    const double d = (double)x[i] - mu;
    return d * d;
  });
}

}  // namespace oboro::cpu
