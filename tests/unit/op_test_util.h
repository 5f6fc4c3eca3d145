// Helpers for op tests: seeded random vectors, relative errors, a central finite-difference
// gradient checker and a scoped thread-count override.
#pragma once
#include "core/rng.h"
#include "core/threads.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace oboro::test {

using Vec = std::vector<float>;

// n values ~ N(mean, std²) from the project's Philox generator (stream 7 keeps test data apart).
inline Vec randn(size_t n, uint64_t seed, float std = 1.f, float mean = 0.f) {
  Vec v(n);
  fill_normal(v.data(), (int64_t)n, seed, 7, 0, mean, std);
  return v;
}

// ||a − b|| / ||b|| in double; when ||b|| == 0 returns ||a − b||.
inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline double rel_err(const Vec& a, const Vec& b) { return rel_err(a.data(), b.data(), std::min(a.size(), b.size())); }

inline double max_abs_diff(const Vec& a, const Vec& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs((double)a[i] - (double)b[i]));
  return m;
}

// Σ y ⊙ r in double (the scalar loss used for gradient checks).
inline double dot(const float* y, const float* r, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += (double)y[i] * (double)r[i];
  return s;
}
inline double dot(const Vec& y, const Vec& r) { return dot(y.data(), r.data(), std::min(y.size(), r.size())); }

inline bool bitwise_equal(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline Vec scaled(const Vec& v, float s) {
  Vec o(v);
  for (auto& e : o) e *= s;
  return o;
}

struct FdResult {
  double rel = 0;      // ||fd − analytic|| / ||fd|| over the probed entries (absolute when ||fd|| == 0)
  size_t probed = 0;
};

// Central finite differences of loss() with respect to the entries of x (perturbed in place, then
// restored) compared with the analytic gradient `grad`. loss() must recompute the op from the current
// contents of x. At most max_probe entries are probed (a fixed pseudo-random subset when x is
// larger; always including the first and last entry). The step actually taken is the fp32
// difference (x+eps) − (x−eps), so representation error in x does not bias the quotient.
inline FdResult fd_check(Vec& x, const Vec& grad, const std::function<double()>& loss, double eps,
                         size_t max_probe = SIZE_MAX, uint64_t seed = 12345) {
  std::vector<size_t> idx;
  const size_t n = x.size();
  if (n <= max_probe) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
  } else {
    idx.push_back(0);
    idx.push_back(n - 1);
    for (uint64_t k = 0; idx.size() < max_probe; ++k) {
      size_t i = (size_t)(uniform_at(seed, 99, k) * (double)n);
      if (i >= n) i = n - 1;
      if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
    }
  }
  double num = 0, den = 0;
  for (size_t i : idx) {
    const float x0 = x[i];
    const float xp = (float)(x0 + eps), xm = (float)(x0 - eps);
    x[i] = xp;
    const double lp = loss();
    x[i] = xm;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / ((double)xp - (double)xm);
    const double d = fd - (double)grad[i];
    num += d * d;
    den += fd * fd;
  }
  FdResult r;
  r.rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  r.probed = idx.size();
  return r;
}

// Sets the pool size for a scope and restores it afterwards. A trivial parallel region runs right
// after every resize (see the ThreadPool.RespawnAfterWork test for why that matters).
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(num_threads()) { set(n); }
  ~ThreadCount() { set(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
  static void set(int n) {
    if (num_threads() == n) return;  // no needless respawn of the workers
    set_num_threads(n);
    parallel_for(1024, [](int64_t, int64_t) {}, 1);
  }

 private:
  int saved_;
};

}  // namespace oboro::test
