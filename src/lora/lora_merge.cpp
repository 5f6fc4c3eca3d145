#include "lora/lora_merge.h"
#include "core/error.h"

namespace oboro::lora {

void add_delta(float* W, const LoraModule& m, float weight) {
  const std::vector<float> d = lora_delta(m);
  for (size_t i = 0; i < d.size(); ++i) W[i] += weight * d[i];
}

std::vector<std::pair<const LoraModule*, float>> modules_for(const std::vector<WeightedLora>& loras,
                                                             const std::string& tensor) {
  std::vector<std::pair<const LoraModule*, float>> out;
  for (const WeightedLora& l : loras)
    for (const LoraModule& m : l.file.modules)
      if (m.tensor == tensor) out.push_back({&m, l.weight});
  return out;
}

std::string applied_report(const LoraFile& f, const std::string& name) {
  std::string s = str("lora ", name, " (", f.path, "): applied ", f.used(), " of ", f.tensors, " LoRA tensors (",
                      f.modules.size(), " modules, ", f.layout == KeyLayout::Kohya ? "kohya" : "PEFT", " keys)\n");
  for (const std::string& k : f.unused) s += str("lora ", name, ": unused tensor ", k, " (text-encoder LoRA keys are not applied: oboro adapts the DiT only)\n");
  return s;
}

}  // namespace oboro::lora
