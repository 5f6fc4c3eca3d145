#include "models/params.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include <set>

namespace oboro {

void ParamLayout::add(const std::string& name, const Shape& shape) {
  if (index_.count(name)) fail("internal error: parameter ", name, " declared twice");
  index_[name] = views_.size();
  views_.push_back({name, shape, total_});
  total_ += (size_t)shape_numel(shape);
  total_ = (total_ + 15) / 16 * 16;  // keep every view 64-byte aligned
}

const ParamView* ParamLayout::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &views_[it->second];
}

const ParamView& ParamLayout::at(const std::string& name) const {
  const ParamView* v = find(name);
  if (!v) fail("internal error: no parameter named ", name);
  return *v;
}

void load_params(const ParamLayout& layout, float* dst, Backend& be, const TensorSource& src, const std::string& what) {
  std::vector<std::string> unknown;
  for (const auto& n : src.names())
    if (!layout.find(n)) unknown.push_back(n);
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 5; ++i) list += (i ? ", " : "") + unknown[i];
    if (unknown.size() > 5) list += str(", ... (", unknown.size(), " in all)");
    fail(src.path(), ": unknown tensor(s) for ", what, ": ", list,
         " — is this the right kind of model file, and does its oboro.config match its tensors?");
  }
  for (const auto& v : layout.views()) {
    if (!src.has(v.name))
      fail(src.path(), ": tensor ", v.name, " is missing (", what, " expects shape ", shape_str(v.shape),
           ") — the file is incomplete or its config does not match its tensors");
    const TensorInfo& info = src.info(v.name);
    if (info.shape != v.shape)
      fail(src.path(), ": tensor ", v.name, " has shape ", shape_str(info.shape), " but the config expects ",
           shape_str(v.shape), " — the file's oboro.config does not match its tensors");
    if (!dtype_is_float(info.dtype))
      fail(src.path(), ": tensor ", v.name, " has dtype ", dtype_name(info.dtype),
           "; weights must be F32, F16, BF16 or F8_E4M3");
    Tensor t = src.tensor_f32(v.name);
    be.upload(dst + v.offset, t.f32(), v.numel());
  }
}

std::vector<std::pair<std::string, Tensor>> download_params(const ParamLayout& layout, const float* src, Backend& be) {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(layout.views().size());
  for (const auto& v : layout.views()) {
    Tensor t = Tensor::empty(v.shape);
    be.download(t.f32(), src + v.offset, v.numel());
    out.emplace_back(v.name, std::move(t));
  }
  return out;
}

}  // namespace oboro
