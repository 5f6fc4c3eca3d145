// Low-precision weight storage for inference (docs/formats.md): the formats a Linear weight W(N,K) (y = x·Wᵀ) may
// be stored in, a non-owning view the backend executes directly, and quantise/dequantise helpers.
//
//   f32   F32  (N,K)                                   — the training format; goes through the SGEMM path
//   bf16  BF16 (N,K)                                   — y = Σ bf16(x)·w, F32 accumulation
//   f16   F16  (N,K)                                   — weights widened tile by tile, F32 activations
//   f8    F8_E4M3 (N,K) + a per-tensor F32 scale s       — W ≈ s·w8, y = s·Σ bf16(x)·w8
//   q8_0  I8 (N,K) + F32 scales (N, K/32)              — W[n][k] ≈ d[n][k/32]·q[n][k]; activations quantised to
//                                                        int8 blocks of 32 on the fly (ggml's q8_0 scheme)
// In a safetensors file the scale(s) are the companion tensor `<name>_scale` (F32, shape (1) for f8,
// (N, K/32) for q8_0), so every tensor stays a plain safetensors tensor and the int8/f8 data can be mmapped.
#pragma once
#include "core/tensor.h"
#include "ops/buffer.h"
#include <optional>
#include <string>

namespace oboro {

class Backend;

enum class WFormat : uint8_t { F32, BF16, F16, F8, Q8_0 };

constexpr int kQ8Block = 32;  // q8_0 block length along K

const char* wformat_name(WFormat f);                       // "f32", "bf16", "f16", "f8", "q8_0"
std::optional<WFormat> wformat_from_name(const std::string& s);  // also accepts "f8_e4m3", "fp8", upper case
// Parse or fail with one line naming `what` and listing the valid formats.
WFormat parse_wformat(const std::string& s, const std::string& what);
const char* wformat_list();                                 // "f32, bf16, f16, f8, q8_0"
double wformat_bytes_per_weight(WFormat f);                 // storage incl. scales (q8_0: 1 + 4/32)

// Non-owning view of a weight W(N,K) in one of the formats. `scale`: f8 → 1 value; q8_0 → (N, K/32) row-major;
// otherwise null. Data rows are contiguous (row stride K elements).
struct WeightView {
  WFormat fmt = WFormat::F32;
  const void* data = nullptr;
  const float* scale = nullptr;
  int N = 0, K = 0;
  // Rows [r0, r0 + n) (e.g. the q, k, v thirds of a fused qkv weight).
  WeightView rows(int r0, int n) const;
  const float* f32() const { return static_cast<const float*>(data); }
};

inline WeightView f32_view(const float* w, int N, int K) { return {WFormat::F32, w, nullptr, N, K}; }

// An owned (or file-mapped) weight: data tensor (stored dtype) and the scale tensor when the format has one.
// The model binds it to its backend (bind) before use: data and scale are then also backend buffers wrapping the
// host bytes (Backend::wrap_host), and view() hands out the buffers' pointers.
struct QuantizedWeight {
  WFormat fmt = WFormat::F32;
  Tensor data, scale;
  int N = 0, K = 0;
  Buffer data_buf, scale_buf;
  void bind(Backend& be);   // idempotent
  WeightView view() const;  // the bound buffers (the raw tensors before bind: rejected by the checking backend)
  size_t bytes() const { return data.nbytes() + (scale.defined() ? scale.nbytes() : 0); }
};

// Quantise an F32 weight (N,K). q8_0 needs K % 32 == 0 (fails naming `what` otherwise).
QuantizedWeight quantize_weight(const float* w, int N, int K, WFormat fmt, const std::string& what = "weight");
// W as F32 (N·K values, row-major).
void dequantize_weight(const WeightView& v, float* out);

// The storage dtype of a format's data tensor.
DType wformat_dtype(WFormat f);

// q8_0 block quantisation of one row of K values (K % 32 == 0): d[b] = max|x| / 127 over the block,
// q = round-to-nearest-even(x · (127 / max|x|)) (all zeros when the block is 0). Used for weights and for
// activations (the kernels and the reference call this same function).
void quantize_row_q8_0(const float* x, int K, int8_t* q, float* d);

}  // namespace oboro
