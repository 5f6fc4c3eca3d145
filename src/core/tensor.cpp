#include "core/tensor.h"
#include "core/error.h"
#include <cstdlib>
#include <cstring>

namespace oboro {

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

static Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = (int)s.size() - 1; i >= 0; --i) { st[i] = acc; acc *= s[i]; }
  return st;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (auto d : shape)
    if (d < 0) fail("negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  size_t bytes = (size_t)shape_numel(shape) * dtype_size(dtype);
  size_t alloc = ((bytes + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, alloc ? alloc : 64);
  if (!p) fail("out of memory allocating ", bytes, " bytes for a tensor of shape ", shape_str(shape),
               ": use a smaller model, batch or image size");
  t.data_ = p;
  t.keep_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keepalive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.data_ = data;
  t.keep_ = std::move(keepalive);
  return t;
}

Tensor Tensor::from_f32(const std::vector<float>& v, const Shape& shape) {
  if ((int64_t)v.size() != shape_numel(shape)) fail("from_f32: ", v.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.data_, v.data(), v.size() * 4);
  return t;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

float* Tensor::f32() const {
  if (dtype_ != DType::F32) fail("expected an F32 tensor, got ", dtype_name(dtype_));
  if (!is_contiguous()) fail("expected a contiguous tensor");
  return static_cast<float*>(data_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (!is_contiguous()) fail("reshape of a non-contiguous tensor");
  Shape s = shape;
  int neg = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) { if (neg >= 0) fail("reshape: more than one -1"); neg = (int)i; }
    else known *= s[i];
  }
  if (neg >= 0) s[neg] = known ? numel() / known : 0;
  if (shape_numel(s) != numel()) fail("cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int d, int64_t begin, int64_t end) const {
  if (d < 0) d += ndim();
  if (d < 0 || d >= ndim() || begin < 0 || end > shape_[d] || begin > end)
    fail("slice [", begin, ", ", end, ") out of range for dim ", d, " of ", shape_str(shape_));
  Tensor t = *this;
  t.shape_[d] = end - begin;
  t.data_ = static_cast<char*>(data_) + begin * strides_[d] * (int64_t)dtype_size(dtype_);
  return t;
}

Tensor Tensor::select(int64_t i) const {
  Tensor t = slice(0, i, i + 1);
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape_, dtype_);
  size_t es = dtype_size(dtype_);
  int64_t n = numel();
  std::vector<int64_t> idx(shape_.size(), 0);
  char* dst = static_cast<char*>(out.data_);
  for (int64_t k = 0; k < n; ++k) {
    int64_t off = 0;
    for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * strides_[i];
    std::memcpy(dst + k * es, static_cast<char*>(data_) + off * es, es);
    for (int i = (int)idx.size() - 1; i >= 0; --i) {
      if (++idx[i] < shape_[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

Tensor Tensor::to_f32() const {
  Tensor c = contiguous();
  if (c.dtype_ == DType::F32) return c;
  Tensor out = empty(shape_, DType::F32);
  convert_to_f32(c.data_, c.dtype_, (size_t)numel(), out.f32());
  return out;
}

Tensor Tensor::clone() const {
  Tensor c = contiguous();
  Tensor out = empty(shape_, dtype_);
  std::memcpy(out.data_, c.data_, nbytes());
  return out;
}

}  // namespace oboro
