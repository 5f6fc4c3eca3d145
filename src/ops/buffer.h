// Buffer: a typed region of memory owned by a Backend (ggml's backend buffer). Model, sampler and trainer code hold
// their tensors in Buffers and hand the backend's own pointers (buf.f32() + offset) to its ops; they never read or
// write the memory themselves. The only crossings between host memory and a buffer are the backend's explicit
// upload/download calls (ops/backend.h). Under the checking backend (ops/checked_backend.h) any other access fails.
//
//   Buffer w = be.alloc(n);                 // n F32 values, zero-initialised, owned: freed by the destructor
//   Buffer ids = be.alloc(m, DType::I32);   // integers get an integer dtype (never bit-cast into floats)
//   be.upload(w.f32(), host.data(), n);     // host → backend
//   be.download(out.data(), w.f32(), n);    // backend → host
//
// A host buffer (is_host()) wraps memory the host already holds — weights memory-mapped from a file or converted
// at load time — without copying; it keeps that memory alive and lets the backend know of it. The CPU backend uses
// it in place; a device backend would copy it to the device when it is first used.
#pragma once
#include "core/dtype.h"
#include <cstddef>
#include <cstdint>
#include <memory>

namespace oboro {

class Backend;

class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  DType dtype() const { return dtype_; }
  size_t size() const { return n_; }  // elements
  size_t bytes() const { return n_ * dtype_size(dtype_); }
  Backend* backend() const { return be_; }
  bool is_host() const { return host_; }    // wraps host memory (wrap_host), not a backend allocation
  bool empty() const { return ptr_ == nullptr; }

  // The backend's pointer, typed (the dtype is checked): pass it, or an offset from it, to backend ops only.
  float* f32() const { return typed<float>(DType::F32); }
  double* f64() const { return typed<double>(DType::F64); }
  int32_t* i32() const { return typed<int32_t>(DType::I32); }
  uint8_t* u8() const { return typed<uint8_t>(DType::U8); }
  void* raw() const { return ptr_; }

  void reset();  // frees now (a no-op on an empty buffer)

 private:
  friend class Backend;
  template <class T> T* typed(DType t) const;
  [[noreturn]] void wrong_dtype(DType asked) const;
  Backend* be_ = nullptr;
  void* ptr_ = nullptr;
  size_t n_ = 0;
  DType dtype_ = DType::F32;
  bool host_ = false;
  std::shared_ptr<void> keep_;  // host buffers: what keeps the wrapped memory alive (may be null)
};

template <class T> T* Buffer::typed(DType t) const {
  if (ptr_ && dtype_ != t) wrong_dtype(t);
  return static_cast<T*>(ptr_);
}

}  // namespace oboro
