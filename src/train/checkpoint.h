// Training checkpoints (output_dir/state/step-NNNNNNNN.safetensors: weights, AdamW moments, EMA, counters
// and config, for a bit-identical resume) and the inference files written from a TrainState
// (output_dir/<output_name>.safetensors + .t5.safetensors, with the EMA weights when the run keeps one).
#pragma once
#include "train/train_state.h"
#include <cstdint>
#include <string>

namespace oboro {

// What the run trains on, as checkpoints and model files record it.
struct RunData {
  size_t num_images = 0;       // ss_num_train_images (repeats included)
  int64_t skipped_images = 0;  // unreadable images met so far
  std::string provenance;      // DatasetSummary JSON for `oboro.dataset` ("" = no manifest)
  std::string tag_frequency;   // ss_tag_frequency of a LoRA run (kohya: {"dir": {"tag": count}}; "" = none)
};

// The run's files.
std::string step_name(int64_t step);                 // "step-00000012"
std::string state_dir(const TrainConfig& cfg);       // output_dir/state
std::string state_path(const TrainConfig& cfg, int64_t step);
std::string model_path(const TrainConfig& cfg);      // output_dir/<output_name>.safetensors
std::string text_encoder_path(const TrainConfig& cfg);  // output_dir/<output_name>.t5.safetensors

// Writes state_path(cfg, state.step); then, with save_last_n_steps, removes the checkpoints older than
// the last that many steps.
void save_state(TrainState& state, const TrainConfig& cfg, const RunData& data);
// The newest step-*.safetensors of `dir` (for --resume latest); fails when there is none.
std::string latest_state(const std::string& dir);
// Builds the models from the checkpoint's configs, initialises the optimizers as cfg says (EMA when
// cfg.ema_decay > 0) and reads every tensor and counter back. `dataset_provenance` (optional) receives
// the checkpoint's `oboro.dataset` ("" when none).
void load_state(TrainState& state, const std::string& path, const TrainConfig& cfg,
                std::string* dataset_provenance = nullptr);
// The inference files (EMA weights when the run keeps an EMA), with kohya-style metadata.
void save_models(TrainState& state, const TrainConfig& cfg, const RunData& data);

}  // namespace oboro
