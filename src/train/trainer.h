// `oboro train`: I-CFM training of the DiT (and optionally a small T5 from scratch, jointly),
// with AdamW, LR schedules, gradient accumulation, EMA, checkpoints every N steps (atomic, last N
// kept), bit-identical resume, a progress bar, JSONL logs and sample images.
//
// The parts: train_config.h (settings), train_state.h (models, optimizers, EMA, counters),
// batch_source.h (folder or cache batches), checkpoint.h (state and model files), samples.h (previews),
// train_log.h (log.jsonl, progress, loss plot); trainer.cpp holds the loop.
#pragma once
#include "dist/communicator.h"
#include "ops/backend.h"
#include "train/train_config.h"
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct TrainResult {
  int64_t steps = 0;
  double final_loss = 0;
  std::string model_path, text_encoder_path, state_path;
  int64_t text_cache_hits = 0, text_cache_misses = 0;  // cache mode with a frozen text encoder
};

// Runs (or resumes from `resume_state`, a state file or "latest" = newest in output_dir/state).
// `stop_after` > 0 stops (with a checkpoint) after that many steps in this invocation: used to test
// interrupt + resume. `be` holds the models and every tensor of the run and runs every op (the CLI passes
// cli::backend(), chosen by --backend). `comm` = the data-parallel world (dist/communicator.h; null = one
// process): every rank runs train() alike; rank 0 alone writes logs, samples and checkpoints.
TrainResult train(const TrainConfig& cfg, Backend& be, const std::string& resume_state = "", int64_t stop_after = 0,
                  dist::Communicator* comm = nullptr);

// Samples per optimizer step over all ranks: ranks × train_batch_size × gradient_accumulation_steps.
inline int64_t global_batch(const TrainConfig& cfg, int ranks) {
  return (int64_t)ranks * cfg.train_batch_size * cfg.gradient_accumulation_steps;
}

// Write inference files (`out`.safetensors + `out`.t5.safetensors) from a training state, with the
// EMA weights (`use_ema`, the default for a run with EMA) or the raw weights.
void export_from_state(Backend& be, const std::string& state_path, bool use_ema, const std::string& out_model_path);

}  // namespace oboro
