#include "dist/grad_sync.h"
#include "core/error.h"
#include <chrono>

namespace oboro::dist {

namespace {

size_t total_size(const std::vector<GradSpan>& grads) {
  size_t n = 0;
  for (const GradSpan& g : grads) n += g.size;
  return n;
}

}  // namespace

void GradientSum::collect(int a, const std::vector<GradSpan>& grads) {
  if (passthrough()) return;
  OBORO_ASSERT(a >= 0 && a < local_);
  const size_t n = total_size(grads);
  parts_.resize(local_);
  std::vector<float>& p = parts_[a];
  p.resize(n);
  size_t off = 0;
  for (const GradSpan& g : grads) be_.download(p.data() + off, g.data, g.size), off += g.size;
}

void GradientSum::reduce(const std::vector<GradSpan>& grads) {
  if (passthrough()) return;
  const size_t n = total_size(grads);
  std::vector<const float*> ptrs(local_);
  for (int a = 0; a < local_; ++a) {
    OBORO_ASSERT(parts_.size() == (size_t)local_ && parts_[a].size() == n);
    ptrs[a] = parts_[a].data();
  }
  total_.resize(n);
  const auto t0 = std::chrono::steady_clock::now();
  comm_.ordered_sum(ptrs.data(), local_, total_.data(), n);
  comm_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t off = 0;
  for (const GradSpan& g : grads) be_.upload(g.data, total_.data() + off, g.size), off += g.size;
}

double GradientSum::sum_losses(const std::vector<double>& local) {
  OBORO_ASSERT(local.size() == (size_t)local_);
  std::vector<const double*> ptrs(local_);
  for (int a = 0; a < local_; ++a) ptrs[a] = &local[a];
  double total = 0;
  const auto t0 = std::chrono::steady_clock::now();
  comm_.ordered_sum(ptrs.data(), local_, &total, 1);
  comm_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return total;
}

}  // namespace oboro::dist
