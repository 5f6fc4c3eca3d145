#include "ops/buffer.h"
#include <new>
#include "core/error.h"
#include "ops/backend.h"

namespace oboro {

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    be_ = o.be_, ptr_ = o.ptr_, n_ = o.n_, dtype_ = o.dtype_, host_ = o.host_, keep_ = std::move(o.keep_);
    o.be_ = nullptr, o.ptr_ = nullptr, o.n_ = 0, o.host_ = false;
  }
  return *this;
}

void Buffer::reset() {
  if (ptr_) {
    if (host_) be_->unregister_host(ptr_);
    else be_->free_bytes(ptr_);
  }
  keep_.reset();
  be_ = nullptr, ptr_ = nullptr, n_ = 0, host_ = false;
}

void Buffer::wrong_dtype(DType asked) const {
  fail("internal error: a ", dtype_name(dtype_), " buffer used as ", dtype_name(asked));
}

Buffer Backend::alloc(size_t n, DType t, const char* what) {
  Buffer b;
  b.be_ = this;
  b.n_ = n;
  b.dtype_ = t;
  const size_t bytes = n * dtype_size(t);
  try {
    b.ptr_ = alloc_bytes(bytes, what);
  } catch (const std::bad_alloc&) {  // a backend whose allocator throws: the same one line as a null return
    b.be_ = nullptr;
    fail("out of memory allocating ", bytes >> 20, " MiB (", bytes, " bytes) for ", what,
         " on the ", name(), " backend: use a smaller model, batch or image size");
  }
  return b;
}

Buffer Backend::wrap_host(const void* p, size_t n, DType t, std::shared_ptr<void> keep, const char* what) {
  Buffer b;
  if (!p) return b;
  register_host(p, n * dtype_size(t), what);
  b.be_ = this;
  b.n_ = n;
  b.dtype_ = t;
  b.ptr_ = const_cast<void*>(p);
  b.host_ = true;
  b.keep_ = std::move(keep);
  return b;
}

}  // namespace oboro
