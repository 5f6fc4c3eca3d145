#include "models/params.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include <cmath>
#include <cstring>
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

void load_params(const ParamLayout& layout, float* dst, Backend& be, const TensorSource& src, const std::string& what,
                 const std::function<bool(const std::string&)>& also_known) {
  auto known = [&](const std::string& n) { return layout.find(n) || (also_known && also_known(n)); };
  std::vector<std::string> unknown;
  for (const auto& n : src.names()) {
    if (known(n)) continue;
    const size_t k = n.size();
    if (k > 6 && n.compare(k - 6, 6, "_scale") == 0 && known(n.substr(0, k - 6))) continue;
    unknown.push_back(n);
  }
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
    Tensor t = read_weight_f32(src, v.name, v.shape, what);
    be.upload(dst + v.offset, t.f32(), v.numel());
  }
}

WFormat file_weight_format(const TensorSource& src) {
  auto it = src.metadata().find(kWeightFormatKey);
  if (it == src.metadata().end()) return WFormat::F32;
  auto f = wformat_from_name(it->second);
  if (!f)
    fail(src.path(), ": metadata ", kWeightFormatKey, " = '", it->second, "' is not a weight format (valid: ",
         wformat_list(), ")");
  return *f;
}

WFormat stored_format(const TensorSource& src, const std::string& name) {
  const TensorInfo& info = src.info(name);
  const std::string sc = scale_companion(name);
  switch (info.dtype) {
    case DType::F32: case DType::F64: return WFormat::F32;
    case DType::BF16: return WFormat::BF16;
    case DType::F16: return WFormat::F16;
    case DType::F8_E4M3: {
      if (src.has(sc)) {
        const TensorInfo& s = src.info(sc);
        if (s.dtype != DType::F32 || shape_numel(s.shape) != 1)
          fail(src.path(), ": tensor ", sc, " (the f8 scale of ", name, ") must be F32 with one value, got ",
               dtype_name(s.dtype), " ", shape_str(s.shape));
      }
      return WFormat::F8;
    }
    case DType::I8: {
      if (!src.has(sc))
        fail(src.path(), ": tensor ", name, " is I8 but has no ", sc,
             " companion: a q8_0 weight needs its block scales (docs/formats.md)");
      const TensorInfo& s = src.info(sc);
      if (info.shape.size() != 2 || info.shape[1] % kQ8Block || s.dtype != DType::F32 ||
          s.shape != Shape{info.shape[0], info.shape[1] / kQ8Block})
        fail(src.path(), ": q8_0 tensor ", name, " ", shape_str(info.shape), " needs an F32 ", sc, " of shape (N, K/",
             kQ8Block, "), got ", dtype_name(s.dtype), " ", shape_str(s.shape));
      return WFormat::Q8_0;
    }
    default:
      fail(src.path(), ": tensor ", name, " has dtype ", dtype_name(info.dtype),
           "; weights must be F32, F16, BF16, F8_E4M3 (optionally scaled) or q8_0 (I8 + scales)");
  }
}

static QuantizedWeight stored_weight(const TensorSource& src, const std::string& name, WFormat f) {
  QuantizedWeight q;
  q.fmt = f;
  q.data = src.tensor(name);
  q.N = (int)q.data.dim(0);
  q.K = q.data.ndim() > 1 ? (int)q.data.dim(1) : 1;
  const std::string sc = scale_companion(name);
  if (f == WFormat::Q8_0) {
    q.scale = src.tensor(sc);
  } else if (f == WFormat::F8) {
    q.scale = src.has(sc) ? src.tensor(sc) : Tensor::from_f32({1.f}, {1});
  }
  return q;
}

static Tensor read_weight_f32_unchecked(const TensorSource& src, const std::string& name, const Shape& shape,
                                        const std::string& what);

namespace {

// NaN / inf in a weight: a model whose weights are not finite gives an all-black (or all-NaN) image with exit 0, so
// it is refused where the weight is read, naming the tensor and the first bad element.
[[noreturn]] void nonfinite(const TensorSource& src, const std::string& name, int64_t at, const char* why) {
  fail(src.path(), ": tensor ", name, " holds ", why, " (element ", at, "): the model file is damaged or its "
       "training diverged — use an earlier checkpoint or download the file again");
}

// NaN/inf = all exponent bits set. Tested on the bits, branch-free, so it vectorises (std::isfinite does not):
// 16.9 GB/s against 2.4 GB/s on the 2-core AMD EPYC (Zen 4) — docs/reliability.md.
// (memcpy loads: a memory-mapped tensor need not be aligned to its element size.)
template <class U>
U load_bits(const void* data, int64_t i) {
  U x;
  std::memcpy(&x, static_cast<const unsigned char*>(data) + (size_t)i * sizeof(U), sizeof(U));
  return x;
}
template <class U>
bool any_all_ones(const void* data, int64_t n, U mask) {
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= (U)((U)(load_bits<U>(data, i) & mask) == mask);
  return bad != 0;
}

void check_finite_f32(const TensorSource& src, const std::string& name, const float* v, int64_t n) {
  if (!any_all_ones<uint32_t>(v, n, 0x7F800000u)) return;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) nonfinite(src, name, i, std::isnan(v[i]) ? "NaN" : "an infinite value");
}

// A weight used as stored (memory-mapped): its raw bits, without converting it.
void check_finite_stored(const TensorSource& src, const std::string& name, const QuantizedWeight& q) {
  const int64_t n = q.data.numel();
  auto scan = [&](auto mask, const char* why) {
    using U = decltype(mask);
    if (!any_all_ones<U>(q.data.raw(), n, mask)) return;
    for (int64_t i = 0; i < n; ++i)
      if ((U)(load_bits<U>(q.data.raw(), i) & mask) == mask) nonfinite(src, name, i, why);
  };
  if (q.fmt == WFormat::BF16) scan((uint16_t)0x7F80, "NaN or an infinite value");
  else if (q.fmt == WFormat::F16) scan((uint16_t)0x7C00, "NaN or an infinite value");
  else if (q.fmt == WFormat::F8) scan((uint8_t)0x7F, "NaN");  // E4M3FN: S.1111.111 is its only NaN, no inf
  if (q.scale.defined() && q.scale.numel() > 0 && q.scale.dtype() == DType::F32) {
    const Tensor sc = q.scale.contiguous();
    check_finite_f32(src, scale_companion(name), sc.data<float>(), sc.numel());
  }
}

}  // namespace

Tensor read_weight_f32(const TensorSource& src, const std::string& name, const Shape& shape, const std::string& what) {
  Tensor t = read_weight_f32_unchecked(src, name, shape, what);
  check_finite_f32(src, name, t.f32(), t.numel());
  return t;
}

static Tensor read_weight_f32_unchecked(const TensorSource& src, const std::string& name, const Shape& shape,
                                        const std::string& what) {
  const TensorInfo& info = src.info(name);
  if (info.shape != shape)
    fail(src.path(), ": tensor ", name, " has shape ", shape_str(info.shape), " but ", what, " expects ",
         shape_str(shape), " — the file's config does not match its tensors");
  const WFormat f = stored_format(src, name);
  if (f == WFormat::F32 || f == WFormat::BF16 || f == WFormat::F16 || (f == WFormat::F8 && !src.has(scale_companion(name))))
    return src.tensor_f32(name);
  QuantizedWeight q = stored_weight(src, name, f);
  Tensor out = Tensor::empty(shape);
  dequantize_weight(q.view(), out.f32());
  return out;
}

QuantizedWeight load_weight(const TensorSource& src, const std::string& name, const Shape& shape, WFormat fmt,
                            const std::string& what) {
  if (shape.size() != 2) fail("internal error: load_weight of ", name, " with shape ", shape_str(shape));
  if (src.info(name).shape != shape)
    fail(src.path(), ": tensor ", name, " has shape ", shape_str(src.info(name).shape), " but ", what, " expects ",
         shape_str(shape), " — the file's config does not match its tensors");
  if (stored_format(src, name) == fmt && fmt != WFormat::F32) {
    QuantizedWeight q = stored_weight(src, name, fmt);
    if (q.data.is_contiguous()) {  // memory-mapped, no copy
      check_finite_stored(src, name, q);
      return q;
    }
  }
  Tensor t = read_weight_f32(src, name, shape, what);
  return quantize_weight(t.f32(), (int)shape[0], (int)shape[1], fmt, src.path() + ": " + name);
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

void convert_weights_to(Backend& be, const ParamLayout& full, const ParamLayout& src_layout, const float* src_params,
                        const std::map<std::string, QuantizedWeight>& src_qw, const ParamLayout& dst_layout,
                        float* dst_params, std::map<std::string, QuantizedWeight>& dst_qw, WFormat fmt) {
  std::vector<float> host;
  for (const auto& v : full.views()) {
    host.resize(v.numel());
    if (const ParamView* mine = src_layout.find(v.name)) be.download(host.data(), src_params + mine->offset, v.numel());
    else dequantize_weight(src_qw.at(v.name).view(), host.data());
    if (const ParamView* theirs = dst_layout.find(v.name))
      be.upload(dst_params + theirs->offset, host.data(), v.numel());
    else
      dst_qw[v.name] = quantize_weight(host.data(), (int)v.shape[0], (int)(v.numel() / v.shape[0]), fmt, v.name);
  }
}

}  // namespace oboro
