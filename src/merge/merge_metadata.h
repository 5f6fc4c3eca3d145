// Metadata of merged checkpoints and extracted LoRAs: the A1111 merge recipe keys and the union of the inputs'
// dataset provenance.
//
// Provenance: a model trained by oboro records `oboro.dataset` (one DatasetSummary, data/provenance.h). A merged
// model or LoRA was made from several: it records `oboro.datasets`, a JSON array of
// {"model": name, "sha256": file hash, "dataset": <summary object>} — one entry per distinct dataset digest over
// every input (each input's own `oboro.dataset`, and the entries of its `oboro.datasets` when it is itself a
// merge) — and `oboro.dataset` itself when exactly one distinct dataset is behind it (so digest-based tools keep
// working). `oboro data audit` lists every entry (data/audit.h read_model_datasets).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace oboro::merge {

inline constexpr const char* kDatasetsKey = "oboro.datasets";

struct InputFile {
  std::string path, role;  // role "A", "B", "C", "lora"
  std::string sha256;
  std::map<std::string, std::string> metadata;
};

// `oboro.datasets` / `oboro.dataset` for the union of the inputs' provenance (keys absent when no input has any).
std::map<std::string, std::string> union_provenance(const std::vector<InputFile>& inputs);

// `sd_merge_models`: {sha256: {"name": stem, "sd_merge_recipe": the input's own recipe or null}} plus each input's
// own sd_merge_models entries.
std::string merge_models_json(const std::vector<InputFile>& inputs);

}  // namespace oboro::merge
