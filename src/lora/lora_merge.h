// Adding LoRA deltas into full weights (host F32): generate's merge (flow/lora_apply.h) and `oboro merge --lora`.
#pragma once
#include "lora/lora_file.h"
#include <string>
#include <vector>

namespace oboro::lora {

// One LoRA file with the multiplier a user asked for (negative allowed).
struct WeightedLora {
  LoraFile file;
  float weight = 1;
  std::string name;  // as the user named it (infotext)
};

// W (N,K) += weight · ΔW of `m` (ΔW = scale · up · down, rounded to F32 once, then multiplied by weight in F32 and
// added: the same operation order everywhere, so generate's merge and `oboro merge --lora` give the same bits).
void add_delta(float* W, const LoraModule& m, float weight);

// The modules of `loras` that adapt `tensor`, in the order given (stacking order).
std::vector<std::pair<const LoraModule*, float>> modules_for(const std::vector<WeightedLora>& loras,
                                                             const std::string& tensor);

// "applied N of M LoRA tensors" and the unused keys, one line each, for one file.
std::string applied_report(const LoraFile& f, const std::string& name);

}  // namespace oboro::lora
