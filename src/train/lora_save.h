// The inference file of a LoRA run: output_dir/<output_name>.safetensors written by lora::write_lora (kohya keys,
// ss_* metadata, modelspec.architecture oboro-dit-v1/lora, the dataset provenance and the base model's hash), with
// the EMA of the LoRA weights when the run keeps one.
#pragma once
#include "train/checkpoint.h"

namespace oboro {

void save_lora_model(TrainState& state, const TrainConfig& cfg, const RunData& data);

// kohya's ss_tag_frequency: {"<dataset folder name>": {"<tag>": count}} over the captions' comma-separated tags
// (trimmed, empty ones skipped; each image counted once), as sd-scripts writes it.
std::string kohya_tag_frequency(const std::string& dataset_dir, const std::vector<std::string>& captions);

}  // namespace oboro
