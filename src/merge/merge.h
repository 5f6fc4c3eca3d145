// `oboro merge` (issue 19): checkpoint merging with A1111 semantics (merge_math.h), per-block weights, baking LoRAs
// into a checkpoint, and extracting a LoRA from the difference of two checkpoints by truncated SVD.
//
// Streaming: the inputs are memory-mapped; the output is written by SafetensorsWriter::add_lazy, which computes each
// tensor when the writer reaches it (reading that tensor of each input as F32, combining, adding LoRA deltas,
// converting to the output dtype) and drops it once written: peak memory ≈ one tensor per input plus the output
// tensor (extract-lora keeps only the small LoRA it builds). The write is atomic (temp + fsync + rename).
//
// Checks before anything is written: every input is an oboro DiT (`oboro.config`) with the same tensors and shapes
// as A (the first mismatch is named) and the same config; the output is none of the inputs and does not exist
// unless `force`; LoRAs are validated against A (lora/lora_file.h).
//
// Metadata (merge_metadata.h): A's metadata minus merge/hash/provenance keys, `sd_merge_recipe` (JSON: type "oboro",
// mode, multiplier(s), block weights, LoRAs, input hashes) and `sd_merge_models` ({sha256: {name, sd_merge_recipe}}
// joined with the inputs' own sd_merge_models, as A1111 does), and the union of the inputs' dataset provenance.
#pragma once
#include "merge/merge_math.h"
#include <optional>
#include <string>
#include <vector>

namespace oboro::merge {

struct MergeLora {
  std::string path;
  float weight = 1.f;
};

struct MergeOptions {
  Mode mode = Mode::WeightedSum;
  std::vector<std::string> inputs;   // A, B[, C] as the mode takes
  double multiplier = 0.5;           // M
  double multiplier2 = 0.0;          // N (triple-sum)
  std::string block_weights;         // BlockWeights spec ("" = none)
  std::vector<MergeLora> loras;      // baked after the combination, in order
  std::string output;
  bool force = false;
  std::string dtype;                 // "f32" (default), "bf16", "f16"; extract-lora: the LoRA's dtype
  int rank = 0;                      // extract-lora
  bool progress = true;
};

struct TensorEnergy {
  std::string tensor;
  int rank = 0;
  double retained = 1;  // fraction of ‖A − B‖_F² kept
};

struct MergeReport {
  size_t tensors = 0;                  // tensors written
  size_t lora_modules_applied = 0;     // baked LoRA modules
  std::vector<std::string> lora_lines; // "applied N of M LoRA tensors" per LoRA
  // extract-lora:
  std::vector<TensorEnergy> energy;
  double energy_total = 0, energy_kept = 0;  // over every extracted tensor
  std::vector<std::string> lost_1d;          // 1-D tensors that differ (a LoRA cannot carry them)
  size_t identical = 0;                      // 2-D tensors with A == B (no module written)
  double retained() const { return energy_total > 0 ? energy_kept / energy_total : 1.0; }
};

MergeReport run_merge(const MergeOptions& opt);

}  // namespace oboro::merge
