// safetensors, one file: the header (length, JSON, dtypes, shapes, offsets, __metadata__) and the data
// (every tensor read as a view and as F32; through the file loader, every rank-1/2 tensor read as a
// model weight: F32/F16/BF16, F8 with or without its scale, q8_0 blocks with their scales).
//
// The input is the whole file. It is parsed twice: from memory (SafetensorsFile::from_bytes, where
// AddressSanitizer sees any read past the image) and from a temp file (TensorSource::open: mmap, and
// the weight readers of models/params.h). The reader promises that every refusal is one line starting
// with the file's path: a message that breaks that is a finding too.
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "models/params.h"

#include <cstring>

using namespace oboro;

namespace {
constexpr size_t kMaxConvert = size_t(1) << 22;  // bytes of tensor data converted per input

void read_all(const SafetensorsFile& f) {
  size_t budget = kMaxConvert;
  for (const TensorInfo& ti : f.tensors()) {
    const TensorInfo& again = f.info(ti.name);
    if (again.begin != ti.begin || again.end != ti.end) std::abort();
    Tensor v = f.tensor(ti.name);
    if (v.nbytes() != ti.end - ti.begin) std::abort();
    if (v.nbytes() > budget) continue;
    budget -= v.nbytes();
    Tensor c = f.tensor_f32(ti.name);
    if (c.numel() != v.numel()) std::abort();
  }
  for (const auto& [k, v] : f.metadata()) (void)k, (void)v;
  fuzz::accept_errors([&] { f.info("no such tensor"); });
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string label = "input.safetensors";
  fuzz::accept_errors([&] { read_all(*SafetensorsFile::from_bytes(bytes, label)); },
                      [&](std::string_view m) { fuzz::require_one_line(m, label); });

  const fuzz::fs::path dir = fuzz::ScratchDir::get("safetensors");
  const std::string path = (dir / "model.safetensors").string();
  fuzz::write_file(path, bytes);
  fuzz::accept_errors(
      [&] {
        TensorSource src = TensorSource::open(path);
        (void)file_weight_format(src);
        size_t budget = kMaxConvert;
        for (const std::string& name : src.names()) {
          const TensorInfo& ti = src.info(name);
          const size_t n = (size_t)shape_numel(ti.shape) * 4;
          if (ti.shape.empty() || ti.shape.size() > 2 || n > budget) continue;  // model weights are rank 1 or 2
          budget -= n;
          fuzz::accept_errors([&] {
            Tensor w = read_weight_f32(src, name, ti.shape, "the fuzz harness");
            if (w.numel() != shape_numel(ti.shape)) std::abort();
          });
        }
      },
      [&](std::string_view m) { fuzz::require_one_line(m, path); });
  std::error_code ec;
  fuzz::fs::remove(path, ec);
  return 0;
}
