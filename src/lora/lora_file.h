// LoRA files (issue 19): read kohya- and PEFT-layout LoRA safetensors for a DiT, and write oboro's own (kohya keys,
// kohya `ss_*` metadata, `modelspec.architecture = oboro-dit-v1/lora`, dataset provenance).
//
// One module adapts one 2-D DiT weight W (N,K): ΔW = scale · up · down, down (r,K), up (N,r).
//   kohya: scale = alpha / r; a module without `.alpha` has alpha = r (scale 1), as kohya's networks/lora.py does
//          for alpha 0 / None;
//   PEFT:  scale 1 (lora_A = down, lora_B = up).
// The multiplier a user asks for (--lora FILE:W, <lora:name:W>) multiplies ΔW on top (lora_apply.h).
//
// Reading validates everything against the base model before anything is applied: `modelspec.architecture`
// (when present it must be oboro-dit-v1/lora), every key (a LoRA key of either layout naming a 2-D weight of the
// model), both halves of each module present, ranks equal, shapes (r,K)/(N,r) against the model's (N,K), alpha
// a finite scalar. Each problem is one error naming the file and the first bad key. Keys of a text-encoder LoRA
// (`lora_te*`: kohya's for CLIP; oboro adapts only the DiT) are not errors: they are reported as unused.
#pragma once
#include "core/tensor.h"
#include "lora/lora_keys.h"
#include <map>
#include <string>
#include <vector>

namespace oboro::lora {

inline constexpr const char* kLoraArchitecture = "oboro-dit-v1/lora";
inline constexpr const char* kArchitectureKey = "modelspec.architecture";

struct LoraModule {
  std::string tensor;  // the DiT tensor it adapts, e.g. "layers.0.attention.qkv.weight"
  std::string key;     // its down key in the file (for messages)
  Tensor down;         // (r, K) F32
  Tensor up;           // (N, r) F32
  float alpha = 0;     // kohya alpha (= r when absent; = r for PEFT)
  float scale = 1;     // alpha / r
  int rank() const { return (int)down.dim(0); }
};

struct LoraFile {
  std::string path;
  KeyLayout layout = KeyLayout::Kohya;
  std::vector<LoraModule> modules;               // in the order of the model's targets
  std::vector<std::string> unused;               // keys read but applied to nothing (text-encoder keys)
  size_t tensors = 0;                            // M: tensors in the file
  std::map<std::string, std::string> metadata;
  size_t used() const { return tensors - unused.size(); }  // N: the tensors that take part in some ΔW
};

// Reads and validates `path` against the model whose targets `map` holds (LoraKeyMap::from_layout(dit layout)).
LoraFile read_lora(const std::string& path, const LoraKeyMap& map);

// ΔW = scale · up · down (N,K), F32, without the user multiplier; computed in double and rounded once.
std::vector<float> lora_delta(const LoraModule& m);

// The hash A1111 shows for a LoRA (`Lora hashes`, extensions-builtin/Lora/network.py): the file's
// `sshs_model_hash` metadata when present, else kohya's "addnet" hash = SHA-256 of the bytes after the header
// (8-byte length + JSON), which changes with the tensors but not with the metadata. 64 hex characters; A1111
// prints its first 12 (lora_short_hash).
std::string lora_addnet_hash(const std::string& path);
std::string lora_short_hash(const std::string& path);

// ---- Writing (the trainer's LoRA files; `oboro merge --mode extract-lora`) ----

struct LoraWriteModule {
  std::string tensor;  // DiT tensor name
  Tensor down, up;     // (r,K), (N,r); written in their own dtype (F32 or BF16/F16)
  float alpha = 0;     // 0 = r
};

// kohya's metadata vocabulary (sd-scripts train_network.py), written as strings; empty / zero fields are omitted.
struct LoraMetadata {
  std::string network_module = "networks.lora";  // ss_network_module
  int network_dim = 0;                           // ss_network_dim (0 = the modules' rank)
  float network_alpha = 0;                       // ss_network_alpha (0 = network_dim)
  std::string network_args;                      // ss_network_args: a JSON object as text ("" = omitted)
  long long steps = 0;                           // ss_steps and ss_max_train_steps
  double learning_rate = 0;                      // ss_learning_rate and ss_unet_lr
  int resolution_w = 0, resolution_h = 0;        // ss_resolution "(W, H)"
  std::string dataset_summary;                   // ss_dataset_dirs: JSON {dir: {"n_repeats", "img_count"}}
  std::string tag_frequency;                     // ss_tag_frequency: JSON {dir: {tag: count}}
  std::string base_model_hash;                   // ss_new_sd_model_hash (SHA-256 of the base model file)
  std::string base_model_name;                   // ss_sd_model_name
  std::string provenance;                        // oboro.dataset: DatasetSummary JSON ("" = none)
  std::map<std::string, std::string> extra;      // anything else (oboro.base_model is written from the hash)
};

// Writes the LoRA atomically with kohya keys, ss_* metadata, `modelspec.architecture = oboro-dit-v1/lora`,
// `oboro.base_model` (sha256) and `sshs_model_hash` (the addnet hash of the written tensors, as kohya records it).
// Checks each module's shapes (down (r,K), up (N,r), the same r).
void write_lora(const std::string& path, const std::vector<LoraWriteModule>& modules, const LoraMetadata& meta);

}  // namespace oboro::lora
