// The inference file of a LoRA run: output_dir/<output_name>.safetensors written by lora::write_lora (kohya keys,
// ss_* metadata, modelspec.architecture oboro-dit-v1/lora, the dataset provenance and the base model's hash), with
// the EMA of the LoRA weights when the run keeps one.
#pragma once
#include "train/checkpoint.h"

namespace oboro {

void save_lora_model(TrainState& state, const TrainConfig& cfg, const RunData& data);

}  // namespace oboro
