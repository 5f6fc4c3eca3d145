#include "train/spike_guard.h"
#include "core/error.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace oboro {

double SpikeGuard::median() const {
  std::vector<double> v;
  for (const auto& [s, l] : window_) v.push_back(l);
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string SpikeGuard::check(int64_t step, double loss, double grad_norm) {
  if (!std::isfinite(loss)) return str("the loss is ", loss);
  if (!std::isfinite(grad_norm)) return str("the gradient norm is ", grad_norm);
  if (cfg_.spike_factor > 0 && (int)window_.size() >= cfg_.spike_window) {
    const double m = median();
    if (loss > cfg_.spike_factor * m)
      return str("the loss ", loss, " is above spike_factor ", cfg_.spike_factor, " × the median ", m, " of the last ",
                 window_.size(), " steps");
  }
  window_.emplace_back(step, loss);
  while ((int)window_.size() > cfg_.spike_window) window_.pop_front();
  return "";
}

bool SpikeGuard::rollback(int64_t spike_step, int64_t to_step) {
  if (rollbacks_ >= cfg_.spike_max_rollbacks) return false;
  ++rollbacks_;
  while (!window_.empty() && window_.back().first > to_step) window_.pop_back();
  skip_.insert(spike_step);
  return true;
}

float test_corrupt_factor(int64_t epoch, int64_t index) {
  const char* v = std::getenv("OBORO_TEST_CORRUPT_BATCH");
  if (!v || !*v) return 1.f;
  long long e = -1, i = -1;
  char scale[32] = {0};
  if (std::sscanf(v, "%lld:%lld:%31s", &e, &i, scale) != 3 || e != epoch || i != index) return 1.f;
  if (std::strcmp(scale, "nan") == 0) return std::numeric_limits<float>::quiet_NaN();
  return std::strtof(scale, nullptr);
}

}  // namespace oboro
