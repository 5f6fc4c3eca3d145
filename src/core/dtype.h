// Storage dtypes. Compute is F32; the others are converted on load.
#pragma once
#include <cstdint>
#include <cstddef>
#include <string>
#include <optional>

namespace oboro {

enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, F64, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType t);                            // safetensors spelling: "F32", "BF16", ...
std::optional<DType> dtype_from_name(const std::string& s);  // nullopt if unknown
size_t dtype_size(DType t);
bool dtype_is_float(DType t);

// Scalar conversions (round-to-nearest-even on the way down).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f8e4m3_to_f32(uint8_t v);   // OCP E4M3FN: bias 7, no inf, 0x7f/0xff = NaN, max 448
uint8_t f32_to_f8e4m3(float f);   // saturates to ±448

// n elements of src (dtype t) -> f32. Integer dtypes convert by value.
void convert_to_f32(const void* src, DType t, size_t n, float* dst);
// n f32 -> dst of dtype t (float dtypes only).
void convert_from_f32(const float* src, DType t, size_t n, void* dst);

}  // namespace oboro
