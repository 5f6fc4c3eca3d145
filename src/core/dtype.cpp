#include "core/dtype.h"
#include "core/error.h"
#include <cmath>
#include <cstring>
#include <limits>

namespace oboro {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

std::optional<DType> dtype_from_name(const std::string& s) {
  static const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F64, DType::I64,
                              DType::I32, DType::I16, DType::I8,   DType::U8,      DType::BOOL};
  for (DType t : all)
    if (s == dtype_name(t)) return t;
  return std::nullopt;
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::F8_E4M3: case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3 || t == DType::F64;
}

static inline uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return u2f(sign);
    // subnormal: value = man * 2^-24
    float v = std::ldexp((float)man, -24);
    return sign ? -v : v;
  }
  if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
  return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t u = f2u(f);
  uint16_t sign = (u >> 16) & 0x8000;
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (a >= 0x477ff000u) return sign | 0x7c00;                                  // overflow -> inf
  if (a < 0x38800000u) {                                                       // subnormal or zero
    // round(|f| * 2^24) with ties to even, using float arithmetic (exact for these ranges)
    float v = std::nearbyint(u2f(a) * 16777216.0f);
    return sign | (uint16_t)v;
  }
  uint32_t mant = a & 0x7fffff, exp = (a >> 23) - 112;
  uint32_t r = (exp << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return sign | (uint16_t)r;
}

float bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet nan
  uint32_t bias = 0x7fff + ((u >> 16) & 1);
  return (uint16_t)((u + bias) >> 16);
}

float f8e4m3_to_f32(uint8_t v) {
  uint32_t sign = v & 0x80;
  uint32_t exp = (v >> 3) & 0xf, man = v & 7;
  float r;
  if (exp == 15 && man == 7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) r = std::ldexp((float)man, -9);            // subnormal: man/8 * 2^-6
  else r = std::ldexp(1.0f + man / 8.0f, (int)exp - 7);
  return sign ? -r : r;
}

uint8_t f32_to_f8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 464.0f) return sign | 0x7e;  // 448 is the largest finite value; saturate (464 = halfway to 480)
  if (a < 0.015625f) {                   // below the smallest normal 2^-6: subnormal steps of 2^-9
    int q = (int)std::nearbyint(a * 512.0f);  // ties to even; q == 8 is the smallest normal, code 0x08
    return sign | (uint8_t)q;
  }
  int e;
  float m = std::frexp(a, &e);           // a = m·2^e, m in [0.5, 1)
  int exp_field = e - 1 + 7;             // a = (1 + frac)·2^(e-1)
  int mant = (int)std::nearbyint((m * 2.0f - 1.0f) * 8.0f);
  if (mant == 8) { mant = 0; ++exp_field; }
  if (exp_field > 15 || (exp_field == 15 && mant == 7)) return sign | 0x7e;
  return sign | (uint8_t)((exp_field << 3) | mant);
}

void convert_to_f32(const void* src, DType t, size_t n, float* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16: { auto s = (const uint16_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]); return; }
    case DType::BF16: { auto s = (const uint16_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]); return; }
    case DType::F8_E4M3: { auto s = (const uint8_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_f32(s[i]); return; }
    case DType::F64: { auto s = (const double*)src; for (size_t i = 0; i < n; ++i) dst[i] = (float)s[i]; return; }
    case DType::I64: { auto s = (const int64_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = (float)s[i]; return; }
    case DType::I32: { auto s = (const int32_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = (float)s[i]; return; }
    case DType::I16: { auto s = (const int16_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = (float)s[i]; return; }
    case DType::I8: { auto s = (const int8_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = (float)s[i]; return; }
    case DType::U8: case DType::BOOL: { auto s = (const uint8_t*)src; for (size_t i = 0; i < n; ++i) dst[i] = (float)s[i]; return; }
  }
}

void convert_from_f32(const float* src, DType t, size_t n, void* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16: { auto d = (uint16_t*)dst; for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]); return; }
    case DType::BF16: { auto d = (uint16_t*)dst; for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]); return; }
    case DType::F8_E4M3: { auto d = (uint8_t*)dst; for (size_t i = 0; i < n; ++i) d[i] = f32_to_f8e4m3(src[i]); return; }
    case DType::F64: { auto d = (double*)dst; for (size_t i = 0; i < n; ++i) d[i] = src[i]; return; }
    default: fail("cannot convert f32 to ", dtype_name(t), ": not a float dtype");
  }
}

}  // namespace oboro
