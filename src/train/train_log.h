// What a run reports: output_dir/log.jsonl (one JSON line per optimizer step, appended across resumes),
// the progress line on stderr, and output_dir/loss.svg (the whole log's loss curve).
// log.jsonl after interruptions: a resume from step S first drops the records after S (steps the interrupted
// run did past its last checkpoint, which the resumed run does again) and a torn last line, so the log holds
// exactly one record per step 1..N in order; every field but samples_per_s (wall-clock timing) is bitwise what
// an uninterrupted run writes (tests/crash/crash_train.py checks it).
#pragma once
#include "train/train_config.h"
#include <chrono>
#include <map>
#include <cstdint>
#include <fstream>
#include <string>

namespace oboro {

// One line of log.jsonl (the keys are these names).
struct StepRecord {
  int64_t step = 0;  // optimizer steps done
  double loss = 0, loss_ema = 0;
  float lr = 0;
  double grad_norm = 0;      // before clipping
  double samples_per_s = 0;  // timing: differs between runs
  int64_t epoch = 0, skipped_images = 0;
};

class TrainLog {
 public:
  // Opens output_dir/log.jsonl for appending (creating output_dir), first keeping only its records of steps
  // 1..start_step (a new run, start_step 0, starts an empty log); the progress ETA counts from now and from
  // `start_step` (the step this invocation starts at).
  TrainLog(const TrainConfig& cfg, int64_t start_step);
  void record(const StepRecord& r);  // the log line (flushed), and the progress line when cfg.progress
  void end_progress();               // ends a terminal's progress line
  // An event line in log.jsonl ({"event": …, "step": …, …}: a loss spike and its rollback); the loss plot marks it.
  void event(const std::string& json_line);
  void write_loss_plot() const;

 private:
  const TrainConfig& cfg_;
  std::ofstream log_;
  bool tty_;  // progress on a terminal: one line redrawn, else a line every 50 steps
  std::chrono::steady_clock::time_point start_;
  int64_t start_step_;
};

}  // namespace oboro
