// The loss-spike guard (config keys spike_max_rollbacks, spike_factor, spike_window, spike_lr_factor; off when
// spike_max_rollbacks = 0). After each step's summed loss and gradient norm (the same on every rank), check():
//   spike = a non-finite loss or gradient norm, or (spike_factor > 0, the window full) a loss above
//           spike_factor × the median of the last spike_window good step losses.
// The trainer then rolls back to the newest complete checkpoint, skips the data of the offending step (its
// micro-batches are read past when the run reaches that step again), and multiplies the learning rate by
// spike_lr_factor (TrainState::lr_scale, saved in checkpoints). After spike_max_rollbacks rollbacks the run
// stops with a clear message.
#pragma once
#include "train/train_config.h"
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <utility>

namespace oboro {

class SpikeGuard {
 public:
  explicit SpikeGuard(const TrainConfig& cfg) : cfg_(cfg) {}
  bool enabled() const { return cfg_.spike_max_rollbacks > 0; }

  // "" when step `step` (1-based) with this loss and gradient norm is good (its loss then joins the window),
  // else why it is a spike.
  std::string check(int64_t step, double loss, double grad_norm);
  // A rollback to the state after step `to_step` for the spike at `spike_step`: drops the window's later
  // losses, remembers the step whose data is skipped; false when the rollback budget is spent.
  bool rollback(int64_t spike_step, int64_t to_step);
  // True (once per rollback) when step `step` (1-based) is one whose data must be read past.
  bool skip_data_at(int64_t step) { return skip_.erase(step) > 0; }
  int rollbacks() const { return rollbacks_; }

 private:
  double median() const;

  const TrainConfig& cfg_;
  std::deque<std::pair<int64_t, double>> window_;  // (step, loss) of the last spike_window good steps
  std::set<int64_t> skip_;
  int rollbacks_ = 0;
};

// TEST HOOK (docs/distributed.md; never set in a real run): OBORO_TEST_CORRUPT_BATCH=EPOCH:INDEX:SCALE multiplies
// the latents of the micro-batch read for training at data position (EPOCH, INDEX) by SCALE ("nan" = NaN), as a
// corrupted sample would. Returns the factor to apply (1 = none).
float test_corrupt_factor(int64_t epoch, int64_t index);

}  // namespace oboro
