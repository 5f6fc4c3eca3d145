// Tensor: dtype + shape + strides (in elements) over shared storage.
// Storage is either owned (64-byte aligned heap) or borrowed from something that keeps
// the bytes alive (e.g. a memory-mapped safetensors file): `keepalive` holds it.
#pragma once
#include "core/dtype.h"
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);   // "(2, 3, 4)"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // Owning, zero-initialised, contiguous.
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);  // contents unspecified
  // Borrowed bytes; `keepalive` owns them (may be null if the caller guarantees lifetime).
  static Tensor borrow(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keepalive);
  static Tensor from_f32(const std::vector<float>& v, const Shape& shape);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + (int)shape_.size() : i]; }
  int ndim() const { return (int)shape_.size(); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || numel() == 0; }
  bool is_contiguous() const;

  void* raw() const { return data_; }
  template <class T> T* data() const { return static_cast<T*>(data_); }
  float* f32() const;  // checks dtype F32 and contiguity

  // Views (share storage).
  Tensor reshape(const Shape& shape) const;          // contiguous only; one -1 allowed
  Tensor slice(int dim, int64_t begin, int64_t end) const;
  Tensor select(int64_t index) const;                // drop dim 0

  Tensor contiguous() const;  // copy if not contiguous
  Tensor to_f32() const;      // converted contiguous copy (or self if already contiguous F32)
  Tensor clone() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_, strides_;
  void* data_ = nullptr;
  std::shared_ptr<void> keep_;
};

}  // namespace oboro
