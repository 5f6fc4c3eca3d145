// The gradient reduction of a data-parallel step, the one place where trainer gradients meet the communicator.
//
// Arithmetic (the same for every world size, so N ranks × accumulation A give the weights of 1 rank ×
// accumulation N·A bitwise on the CPU in F32): every micro-batch's gradient is computed alone (the gradient
// buffers zeroed before its backward), and the step's gradient is the left fold of the micro-batch gradients in
// global micro-batch order, ((g0 + g1) + g2) + …, done by Communicator::ordered_sum (rank r holds micro-batches
// r·A … r·A + A − 1). The losses are folded the same way.
//
// The Backend seam: gradients live in backend buffers; collect() downloads one micro-batch's gradients into a
// host part, reduce() uploads the sum back (the explicit crossings; the trainer never touches device memory).
// One rank with one micro-batch per step needs neither: the gradient is already in place (passthrough).
// A device communicator (NCCL) would instead keep the parts as backend Buffers and sum them with its own
// ordered kernel; this class is where it plugs in (docs/distributed.md).
#pragma once
#include "dist/communicator.h"
#include "ops/backend.h"
#include <cstddef>
#include <vector>

namespace oboro::dist {

// A trained parameter group's gradient on the backend: `size` floats at `data`.
struct GradSpan {
  float* data;
  size_t size;
};

class GradientSum {
 public:
  // `local_micro` = micro-batches per step on this rank (gradient_accumulation_steps).
  GradientSum(Backend& be, Communicator& comm, int local_micro) : be_(be), comm_(comm), local_(local_micro) {}

  // True when nothing needs collecting: one rank, one micro-batch (the gradient buffers hold the step's sum).
  bool passthrough() const { return comm_.size() == 1 && local_ == 1; }
  // After the backward of local micro-batch `a` (0 ≤ a < local_micro), the gradient buffers holding that
  // micro-batch's gradient alone: keeps a host copy (download).
  void collect(int a, const std::vector<GradSpan>& grads);
  // Every rank's micro-batch gradients folded in global order, uploaded into `grads` (on every rank).
  void reduce(const std::vector<GradSpan>& grads);
  // The left fold of every rank's `local` losses (local_micro values) in global order.
  double sum_losses(const std::vector<double>& local);

  double comm_seconds() const { return comm_s_; }  // time in the communicator (sums, waits) so far

 private:
  Backend& be_;
  Communicator& comm_;
  const int local_;
  std::vector<std::vector<float>> parts_;  // local_ host copies of the flat gradient (all spans concatenated)
  std::vector<float> total_;
  double comm_s_ = 0;
};

}  // namespace oboro::dist
