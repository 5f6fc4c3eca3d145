// LoRA at inference (issue 19): which LoRAs a generation asks for (--lora FILE[:W], <lora:name:W> in the prompt),
// where their files are, and a DiT loaded with them merged in.
//
// How a LoRA is applied — merged into the weights at load, never at run time:
//   F32 model: W ← W + Σ_i weight_i · ΔW_i (ΔW = scale · up · down, lora/lora_merge.h), tensor by tensor, in the
//              order the LoRAs were given;
//   bf16 / f16 / f8 / q8_0 model (stored so, or --type): the model is loaded in F32 (dequantised), merged as above,
//              and re-quantised to the requested format (DiT::converted) — "dequantise, merge, requantise". The
//              result is by construction bitwise the F32 merge quantised, so the quantised path's correctness
//              reduces to the F32 merge's (tests/unit/test_lora_apply.cpp checks both). It costs one F32 copy of
//              the model while loading; a low-rank side path (x·Wᵀ + s·(x·downᵀ)·upᵀ at run time) would avoid that
//              but would put LoRA arithmetic into every forward, and the models oboro runs fit in F32 on the CPU.
// The weights a LoRA model is built from are always a fresh load (a LoRA'd model is cached, if at all, under a key
// naming its LoRAs), so no LoRA state survives into a later generation.
#pragma once
#include "lora/lora_merge.h"
#include "ops/weights.h"
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace oboro {

class Backend;
class DiT;

// One LoRA a request names: `spec` is a path (--lora) or a name (<lora:name:W>) looked up in the LoRA folder.
struct LoraRequest {
  std::string spec;
  float weight = 1.f;
  bool from_prompt = false;
};

// "FILE[:W]" → {FILE, W}; W defaults to 1 (a suffix that is not a number is part of the path). Fails naming `arg`.
LoraRequest parse_lora_arg(const std::string& arg);

// The prompt with every <lora:name[:te_w[:unet_w]]> removed (A1111's extra-network syntax; the DiT weight is unet_w
// when given, else te_w, else 1), and the LoRAs it named, in order. A malformed tag (missing name, a weight that is
// not a number) fails naming it.
std::string strip_prompt_loras(const std::string& prompt, std::vector<LoraRequest>& found);

// The LoRA folder: `flag`, else models_dir/loras when that exists, else "models/loras".
std::string lora_dir_or_default(const std::string& flag, const std::string& models_dir);
// The file of one request: an existing path as given; for a prompt name (or a bare --lora name) also
// lora_dir/NAME.safetensors and lora_dir/NAME. Fails naming every place it looked.
std::string locate_lora(const LoraRequest& r, const std::string& lora_dir);

// The LoRA files in `dir` (*.safetensors, sorted by name) with their metadata (the server's /sdapi/v1/loras). A
// missing folder lists nothing.
struct LoraListing {
  std::string name, path;
  std::map<std::string, std::string> metadata;
};
std::vector<LoraListing> list_loras(const std::string& dir);

// The LoRAs of a generation, resolved and read (validated against the model at `model_path`).
struct LoraSet {
  std::vector<lora::WeightedLora> loras;
  std::vector<std::string> paths;  // the files, parallel to loras
  bool empty() const { return loras.empty(); }
  // "path@weight;..." — part of the model cache key.
  std::string key() const;
  // A1111's `Lora hashes` value: "name: hash12, name: hash12" (names without ':' and ','), "" when empty.
  std::string infotext_hashes() const;
  // One "applied N of M LoRA tensors" line per file and a line per unused tensor.
  std::string report() const;
};
LoraSet read_lora_set(const std::vector<LoraRequest>& reqs, const std::string& lora_dir, const std::string& model_path);

// W += weight · ΔW for every module of every LoRA in `set`, into an F32 DiT's weights (through the backend).
void apply_loras_f32(DiT& dit, const LoraSet& set);

// DiT::load(path, be, type) with `set` merged in (see the top of this file). Without LoRAs it is DiT::load.
std::unique_ptr<DiT> load_dit_with_loras(const std::string& path, Backend& be, std::optional<WFormat> type,
                                         const LoraSet& set);

}  // namespace oboro
