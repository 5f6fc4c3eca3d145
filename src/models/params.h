// Flat parameter storage with named views (llm.c style): one buffer for weights, one for
// gradients, optimizer state later mirrors the same layout. Views are in declaration order.
#pragma once
#include "core/tensor.h"
#include "ops/weights.h"
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace oboro {

class Backend;
class TensorSource;

struct ParamView {
  std::string name;
  Shape shape;
  size_t offset = 0;  // in floats, into the flat buffer
  size_t numel() const { return (size_t)shape_numel(shape); }
};

class ParamLayout {
 public:
  void add(const std::string& name, const Shape& shape);
  const std::vector<ParamView>& views() const { return views_; }
  size_t total() const { return total_; }
  const ParamView* find(const std::string& name) const;
  const ParamView& at(const std::string& name) const;

 private:
  std::vector<ParamView> views_;
  std::map<std::string, size_t> index_;
  size_t total_ = 0;
};

// Load every view of `layout` from `src` into the backend buffer `dst` (converting to F32).
// Fails with one line naming the file and tensor on: a missing tensor, a wrong shape, a
// tensor in the file that the layout does not know (unknown key).
// Tensors stored in a low-precision format (ops/weights.h) are read back as F32 (dequantised); their `<name>_scale`
// companions are known names. `also_known` names tensors that are not in `layout` but are not unknown either
// (the quantised weights of a model loaded in a low-precision format).
void load_params(const ParamLayout& layout, float* dst, Backend& be, const TensorSource& src, const std::string& what,
                 const std::function<bool(const std::string&)>& also_known = {});

// ---- Low-precision weight files (docs/formats.md) ----
// Metadata key recording the format of a file's quantisable Linear weights ("f32", "bf16", "f16", "f8", "q8_0").
inline constexpr const char* kWeightFormatKey = "oboro.weight_format";
inline std::string scale_companion(const std::string& name) { return name + "_scale"; }
// The format the file records for its quantisable weights; F32 when it records none.
WFormat file_weight_format(const TensorSource& src);
// How one tensor is stored: F32 for F32/F64, BF16, F16, F8 (F8_E4M3, with or without a `_scale` companion),
// Q8_0 (I8 with a `_scale` companion of shape (N, K/32)). Other dtypes fail naming the file and tensor.
WFormat stored_format(const TensorSource& src, const std::string& name);
// The tensor as F32 (dequantising q8_0 and scaled f8), checked against `shape`.
Tensor read_weight_f32(const TensorSource& src, const std::string& name, const Shape& shape, const std::string& what);
// A Linear weight (N,K) in `fmt`: the file's own bytes (zero-copy, memory-mapped) when it is stored in `fmt`,
// else read as F32 and quantised.
QuantizedWeight load_weight(const TensorSource& src, const std::string& name, const Shape& shape, WFormat fmt,
                            const std::string& what);

// Models hold their weights split into F32 parameters (a layout + a buffer) and quantised weights (by name), as
// the DiT, T5 and VAE do. Copies every tensor of `full` from the source split into the destination split, which was
// built for `fmt`: tensors in the destination's F32 layout are copied (dequantised when the source holds them
// quantised), the others are quantised to `fmt` as (shape[0], numel / shape[0]) matrices. Each converted() uses it.
void convert_weights_to(Backend& be, const ParamLayout& full, const ParamLayout& src_layout, const float* src_params,
                        const std::map<std::string, QuantizedWeight>& src_qw, const ParamLayout& dst_layout,
                        float* dst_params, std::map<std::string, QuantizedWeight>& dst_qw, WFormat fmt);

// Host copies of each view (for saving), in layout order.
std::vector<std::pair<std::string, Tensor>> download_params(const ParamLayout& layout, const float* src, Backend& be);

}  // namespace oboro
