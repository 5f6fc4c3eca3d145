#include "ops/weights.h"
#include "ops/backend.h"
#include "core/error.h"
#include "ops/backend.h"
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

namespace oboro {

const char* wformat_name(WFormat f) {
  switch (f) {
    case WFormat::F32: return "f32";
    case WFormat::BF16: return "bf16";
    case WFormat::F16: return "f16";
    case WFormat::F8: return "f8";
    case WFormat::Q8_0: return "q8_0";
  }
  return "?";
}

const char* wformat_list() { return "f32, bf16, f16, f8, q8_0"; }

std::optional<WFormat> wformat_from_name(const std::string& s0) {
  std::string s = s0;
  for (char& c : s) c = (char)std::tolower((unsigned char)c);
  if (s == "f32" || s == "fp32" || s == "float32") return WFormat::F32;
  if (s == "bf16" || s == "bfloat16") return WFormat::BF16;
  if (s == "f16" || s == "fp16" || s == "float16") return WFormat::F16;
  if (s == "f8" || s == "fp8" || s == "f8_e4m3" || s == "f8e4m3" || s == "float8_e4m3fn") return WFormat::F8;
  if (s == "q8_0" || s == "q8") return WFormat::Q8_0;
  return std::nullopt;
}

WFormat parse_wformat(const std::string& s, const std::string& what) {
  auto f = wformat_from_name(s);
  if (!f) fail(what, ": unknown weight type '", s, "'; valid types are ", wformat_list());
  return *f;
}

double wformat_bytes_per_weight(WFormat f) {
  switch (f) {
    case WFormat::F32: return 4;
    case WFormat::BF16: case WFormat::F16: return 2;
    case WFormat::F8: return 1;
    case WFormat::Q8_0: return 1 + 4.0 / kQ8Block;
  }
  return 4;
}

DType wformat_dtype(WFormat f) {
  switch (f) {
    case WFormat::F32: return DType::F32;
    case WFormat::BF16: return DType::BF16;
    case WFormat::F16: return DType::F16;
    case WFormat::F8: return DType::F8_E4M3;
    case WFormat::Q8_0: return DType::I8;
  }
  return DType::F32;
}

WeightView WeightView::rows(int r0, int n) const {
  if (r0 < 0 || n < 0 || r0 + n > N) fail("internal error: weight rows [", r0, ", ", r0 + n, ") of ", N);
  WeightView v = *this;
  v.N = n;
  const size_t off = (size_t)r0 * K;
  v.data = static_cast<const uint8_t*>(data) + off * dtype_size(wformat_dtype(fmt));
  if (fmt == WFormat::Q8_0) v.scale = scale + (size_t)r0 * (K / kQ8Block);
  return v;
}

void QuantizedWeight::bind(Backend& be) {
  if (!data_buf.empty() && data_buf.backend() == &be) return;
  // The buffers share ownership of the tensors' bytes (heap or the mapped file).
  auto keep_data = std::make_shared<Tensor>(data);
  data_buf = be.wrap_host(data.raw(), (size_t)data.numel(), data.dtype(), keep_data, "quantised weight");
  if (scale.defined() && scale.numel()) {
    auto keep_scale = std::make_shared<Tensor>(scale);
    scale_buf = be.wrap_host(scale.raw(), (size_t)scale.numel(), scale.dtype(), keep_scale, "quantised weight scale");
  }
}

WeightView QuantizedWeight::view() const {
  if (!data_buf.empty())
    return {fmt, data_buf.raw(), scale_buf.empty() ? nullptr : static_cast<const float*>(scale_buf.raw()), N, K};
  return {fmt, data.raw(), scale.defined() && scale.numel() ? scale.data<float>() : nullptr, N, K};
}

void quantize_row_q8_0(const float* x, int K, int8_t* q, float* d) {
  for (int b = 0; b < K / kQ8Block; ++b) {
    const float* xb = x + (size_t)b * kQ8Block;
    float amax = 0.f;
    for (int i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    d[b] = amax / 127.f;
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    for (int i = 0; i < kQ8Block; ++i) {
      float v = std::nearbyint(xb[i] * id);
      v = std::min(127.f, std::max(-127.f, v));  // x·id can round up past 127 by one ulp
      q[(size_t)b * kQ8Block + i] = (int8_t)v;
    }
  }
}

QuantizedWeight quantize_weight(const float* w, int N, int K, WFormat fmt, const std::string& what) {
  QuantizedWeight q;
  q.fmt = fmt;
  q.N = N;
  q.K = K;
  const size_t n = (size_t)N * K;
  switch (fmt) {
    case WFormat::F32:
      q.data = Tensor::empty({N, K}, DType::F32);
      std::memcpy(q.data.raw(), w, n * 4);
      break;
    case WFormat::BF16:
    case WFormat::F16:
      q.data = Tensor::empty({N, K}, wformat_dtype(fmt));
      convert_from_f32(w, wformat_dtype(fmt), n, q.data.raw());
      break;
    case WFormat::F8: {
      // Per-tensor scale: max|W| maps to 448 (the largest finite E4M3 value).
      float amax = 0.f;
      for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(w[i]));
      if (!std::isfinite(amax)) fail(what, ": has a non-finite value; cannot quantise it to f8");
      const float s = amax > 0.f ? amax / 448.f : 1.f;
      q.scale = Tensor::empty({1}, DType::F32);
      q.scale.data<float>()[0] = s;
      q.data = Tensor::empty({N, K}, DType::F8_E4M3);
      uint8_t* d = q.data.data<uint8_t>();
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f8e4m3(w[i] / s);
      break;
    }
    case WFormat::Q8_0: {
      if (K % kQ8Block)
        fail(what, ": q8_0 needs the input width K to be a multiple of ", kQ8Block, ", got K = ", K,
             " — store this weight as bf16, f16 or f8 instead");
      q.data = Tensor::empty({N, K}, DType::I8);
      q.scale = Tensor::empty({N, K / kQ8Block}, DType::F32);
      for (int r = 0; r < N; ++r)
        quantize_row_q8_0(w + (size_t)r * K, K, q.data.data<int8_t>() + (size_t)r * K,
                          q.scale.data<float>() + (size_t)r * (K / kQ8Block));
      break;
    }
  }
  return q;
}

void dequantize_weight(const WeightView& v, float* out) {
  const size_t n = (size_t)v.N * v.K;
  switch (v.fmt) {
    case WFormat::F32: std::memcpy(out, v.data, n * 4); return;
    case WFormat::BF16: case WFormat::F16: convert_to_f32(v.data, wformat_dtype(v.fmt), n, out); return;
    case WFormat::F8: {
      const uint8_t* d = static_cast<const uint8_t*>(v.data);
      for (size_t i = 0; i < n; ++i) out[i] = f8e4m3_to_f32(d[i]) * v.scale[0];
      return;
    }
    case WFormat::Q8_0: {
      const int8_t* d = static_cast<const int8_t*>(v.data);
      const int nb = v.K / kQ8Block;
      for (size_t i = 0; i < n; ++i) {
        size_t r = i / v.K, k = i % v.K;
        out[i] = (float)d[i] * v.scale[r * nb + k / kQ8Block];
      }
      return;
    }
  }
}

// Default for backends without low-precision kernels: F32 only.
void Backend::linear_forward_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N) {
  if (w.fmt != WFormat::F32)
    fail("the ", name(), " backend has no kernel for ", wformat_name(w.fmt), " weights: load the model with --type f32");
  linear_forward(y, x, w.f32(), b, M, K, N);
}

void Backend::conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                               bool accumulate) {
  if (w.fmt != WFormat::F32)
    fail("the ", name(), " backend has no convolution kernel for ", wformat_name(w.fmt),
         " weights: load the VAE with --vae-type f32");
  conv2d_forward(y, x, w.f32(), b, s, accumulate);
}

}  // namespace oboro
