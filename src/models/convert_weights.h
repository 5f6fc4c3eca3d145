// Offline weight-format conversion of DiT and T5 files (`oboro convert --type`, docs/formats.md).
#pragma once
#include "ops/weights.h"
#include <string>

namespace oboro {

struct ConvertStats {
  std::string kind;            // "dit" or "t5"
  int quantized = 0, kept_f32 = 0;
  size_t bytes_out = 0;        // tensor data written
};

// Reads IN (an oboro DiT file, or a T5 encoder: oboro file, HF .safetensors, sharded index or directory) and writes
// OUT atomically with every quantisable Linear weight (dit_quantizable / t5_quantizable) in `fmt` and every other
// tensor in F32; metadata is kept, `oboro.weight_format` records `fmt`. A T5 without `oboro.t5_config` gets the
// inferred config, and a `spiece.model` beside an HF checkpoint is embedded as `oboro.tokenizer`, so OUT is
// self-contained. Weights already stored in `fmt` are copied unchanged (no second rounding).
ConvertStats convert_weights(const std::string& in, const std::string& out, WFormat fmt);

// Fails when OUT exists and is IN (by file-system identity) or one of IN's shards: a conversion never replaces its
// input (`oboro convert IN IN` would).
void refuse_output_over_input(const std::string& in, const std::string& out);

}  // namespace oboro
