// LoRA key mapping (issue 19): the names a LoRA file gives its tensors and the DiT tensors they modify.
//
// A LoRA adapts one 2-D DiT weight W (N,K) — a tensor whose name ends in ".weight" and whose rank is 2 — by
// ΔW = scale · up · down with down (r,K) and up (N,r). Two key layouts are read:
//   kohya: "lora_unet_" + the tensor name without ".weight", dots as underscores, then ".lora_down.weight",
//          ".lora_up.weight" and ".alpha" (a scalar; scale = alpha / r, absent alpha → alpha = r):
//          layers.0.attention.qkv.weight ← lora_unet_layers_0_attention_qkv.lora_down.weight
//   PEFT:  the tensor name without ".weight", then ".lora_A.weight" (down) / ".lora_B.weight" (up), optionally
//          prefixed "transformer." or "diffusion_model." (scale 1):
//          layers.0.attention.qkv.weight ← transformer.layers.0.attention.qkv.lora_A.weight
// DiT names hold underscores of their own (adaLN_modulation, feed_forward, attention_norm1), so a kohya stem cannot be
// turned back into a tensor name by replacing underscores; LoraKeyMap maps by building the forward table from the
// model's actual tensor names (and refuses a model whose names collide as kohya stems).
#pragma once
#include "core/tensor.h"
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace oboro {

class ParamLayout;

namespace lora {

enum class KeyLayout { Kohya, Peft };
enum class KeyPart { Down, Up, Alpha };  // Down = lora_down / lora_A, Up = lora_up / lora_B; Alpha: kohya only

inline constexpr const char* kKohyaPrefix = "lora_unet_";

// "layers.0.attention.qkv.weight" → "layers.0.attention.qkv" (the module path); fails when the name does not end
// in ".weight".
std::string module_of(const std::string& tensor);
// "layers.0.attention.qkv.weight" → "lora_unet_layers_0_attention_qkv".
std::string kohya_stem(const std::string& tensor);
// The kohya key of one part: kohya_stem + ".lora_down.weight" / ".lora_up.weight" / ".alpha".
std::string kohya_key(const std::string& tensor, KeyPart part);
// The PEFT key of Down / Up: prefix + module_of + ".lora_A.weight" / ".lora_B.weight" (prefix "", "transformer."
// or "diffusion_model."). Alpha has no PEFT key (fails).
std::string peft_key(const std::string& tensor, KeyPart part, const std::string& prefix = "");

// A LoRA file key split into its layout, its module (the kohya stem, or the PEFT module path without prefix) and
// its part. nullopt: not a LoRA key of either layout.
struct ParsedKey {
  KeyLayout layout;
  std::string module;
  KeyPart part;
};
std::optional<ParsedKey> parse_key(const std::string& key);

// Which part of the DiT a tensor belongs to (LoRA target families, merge block groups).
enum class Family { Embedder, Attention, FeedForward, Modulation, Final, Other };
struct TensorPlace {
  Family family = Family::Other;
  int block = -1;  // "layers.<i>." → i; -1 outside the blocks
};
TensorPlace place_of(const std::string& tensor);
const char* family_name(Family f);  // "embedder", "attention", "feed_forward", "modulation", "final", "other"

// The LoRA-targetable tensors of a model: every name ending in ".weight" with a rank-2 shape, in layout order.
struct Target {
  std::string tensor;
  Shape shape;  // (N, K)
};

// The table kohya stem → tensor and PEFT module → tensor, built from a model's tensor names and shapes.
class LoraKeyMap {
 public:
  // From (name, shape) pairs: rank-2 ".weight" tensors become targets. Fails (internal error) when two targets
  // share a kohya stem.
  explicit LoraKeyMap(const std::vector<Target>& all_tensors);
  // From a model's parameter layout (dit_param_layout(cfg) for the DiT).
  static LoraKeyMap from_layout(const ParamLayout& layout);

  const std::vector<Target>& targets() const { return targets_; }
  // The target a parsed key refers to, or null (no such tensor, or not a rank-2 weight).
  const Target* find(const ParsedKey& k) const;
  const Target* find_tensor(const std::string& tensor) const;

 private:
  std::vector<Target> targets_;
  std::map<std::string, size_t> by_kohya_, by_module_, by_tensor_;
};

}  // namespace lora
}  // namespace oboro
