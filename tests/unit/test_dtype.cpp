// Scalar dtype conversions: known values, rounding, special values, exhaustive round trips.
#include "core/dtype.h"
#include "core/error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

using namespace oboro;

namespace {
float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();
}  // namespace

TEST(DType, NamesAndSizes) {
  const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F64, DType::I64,
                       DType::I32, DType::I16, DType::I8,   DType::U8,      DType::BOOL};
  const size_t sizes[] = {4, 2, 2, 1, 8, 8, 4, 2, 1, 1, 1};
  for (size_t i = 0; i < std::size(all); ++i) {
    auto back = dtype_from_name(dtype_name(all[i]));
    ASSERT_TRUE(back.has_value()) << dtype_name(all[i]);
    EXPECT_EQ(*back, all[i]);
    EXPECT_EQ(dtype_size(all[i]), sizes[i]) << dtype_name(all[i]);
  }
  EXPECT_STREQ(dtype_name(DType::F8_E4M3), "F8_E4M3");
  EXPECT_FALSE(dtype_from_name("f32").has_value());
  EXPECT_FALSE(dtype_from_name("F8_E5M2").has_value());
  EXPECT_FALSE(dtype_from_name("").has_value());
  EXPECT_TRUE(dtype_is_float(DType::BF16));
  EXPECT_FALSE(dtype_is_float(DType::I32));
}

// ---------------------------------------------------------------- f16

TEST(DType, F16KnownValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xbc00), -1.0f);
  EXPECT_EQ(f16_to_f32(0x4000), 2.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);                 // max finite
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));   // min normal
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));   // min subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));  // max subnormal
  EXPECT_EQ(f16_to_f32(0x0000), 0.0f);
  EXPECT_EQ(f32_bits(f16_to_f32(0x8000)), 0x80000000u);   // -0
  EXPECT_EQ(f16_to_f32(0x7c00), kInf);
  EXPECT_EQ(f16_to_f32(0xfc00), -kInf);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));

  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(kInf), 0x7c00);
  EXPECT_EQ(f32_to_f16(-kInf), 0xfc00);
  uint16_t n = f32_to_f16(kNaN);
  EXPECT_EQ(n & 0x7c00, 0x7c00);
  EXPECT_NE(n & 0x03ff, 0);
}

TEST(DType, F16Rounding) {
  // ties to even in the normal range: 1 + 2^-11 lies halfway between 0x3c00 and 0x3c01
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  // overflow: 65519 rounds down to max, 65520 (the tie with 65536) rounds to inf
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  // subnormals: 2^-25 is the tie between 0 and the smallest subnormal -> 0
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 * 2^-24: tie -> even (2)
  EXPECT_EQ(f32_to_f16(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 * 2^-24: tie -> even (2)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  // largest subnormal rounding up into the min normal
  EXPECT_EQ(f32_to_f16(std::ldexp(1023.75f, -24)), 0x0400);
}

TEST(DType, F16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32((uint16_t)h);
    bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0;
    ASSERT_EQ(std::isnan(f), nan) << std::hex << h;
    uint16_t back = f32_to_f16(f);
    if (nan) {
      ASSERT_EQ(back & 0x7c00, 0x7c00) << std::hex << h;
      ASSERT_NE(back & 0x03ff, 0) << std::hex << h;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(DType, F16MidpointsRoundToEven) {
  // Every midpoint between consecutive positive finite f16 values rounds to the even code.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    double a = f16_to_f32((uint16_t)h), b = f16_to_f32((uint16_t)(h + 1));
    float mid = (float)((a + b) / 2);  // exact in f32
    ASSERT_EQ((double)mid, (a + b) / 2);
    uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
    ASSERT_EQ(f32_to_f16(mid), want) << std::hex << h;
    ASSERT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(f32_to_f16(std::nextafter(mid, kInf)), h + 1) << std::hex << h;
  }
}

// ---------------------------------------------------------------- bf16

TEST(DType, BF16KnownValuesAndRounding) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(bf16_to_f32(0x7f80), kInf);
  EXPECT_EQ(bf16_to_f32(0xff80), -kInf);
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
  EXPECT_EQ(bf16_to_f32(0x7f7f), bits_f32(0x7f7f0000u));  // max finite
  EXPECT_EQ(bf16_to_f32(0x0001), bits_f32(0x00010000u));  // subnormal

  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(kInf), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-kInf), 0xff80);
  // ties to even
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f808000u)), 0x3f80);  // tie, 0x3f80 even
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f818000u)), 0x3f82);  // tie, 0x3f81 odd -> up
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f808001u)), 0x3f81);  // above tie
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f807fffu)), 0x3f80);  // below tie
  EXPECT_EQ(f32_to_bf16(bits_f32(0xbf818000u)), 0xbf82);  // negative tie
  EXPECT_EQ(f32_to_bf16(bits_f32(0x7f7fffffu)), 0x7f80);  // f32 max rounds to inf
  // NaN stays NaN (including a NaN whose payload lives only in the low 16 bits)
  for (uint32_t u : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    uint16_t b = f32_to_bf16(bits_f32(u));
    EXPECT_TRUE(std::isnan(bf16_to_f32(b))) << std::hex << u;
    EXPECT_EQ(b & 0x8000, (u >> 16) & 0x8000) << std::hex << u;
  }
}

TEST(DType, BF16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16_to_f32((uint16_t)h);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f)))) << std::hex << h;
    } else {
      ASSERT_EQ(f32_to_bf16(f), h) << std::hex << h;
    }
  }
}

// ---------------------------------------------------------------- f8 e4m3 (FN)

TEST(DType, F8E4M3KnownValues) {
  EXPECT_EQ(f8e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(f8e4m3_to_f32(0xb8), -1.0f);
  EXPECT_EQ(f8e4m3_to_f32(0x40), 2.0f);
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);   // max finite
  EXPECT_EQ(f8e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(f8e4m3_to_f32(0x78), 256.0f);   // exponent 15 with mantissa < 7 is finite (no inf in FN)
  EXPECT_EQ(f8e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // min normal
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // min subnormal
  EXPECT_EQ(f8e4m3_to_f32(0x07), std::ldexp(7.0f, -9));  // max subnormal
  EXPECT_EQ(f8e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(f8e4m3_to_f32(0x80)));
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0xff)));

  EXPECT_EQ(f32_to_f8e4m3(1.0f), 0x38);
  EXPECT_EQ(f32_to_f8e4m3(-1.0f), 0xb8);
  EXPECT_EQ(f32_to_f8e4m3(448.0f), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(-448.0f), 0xfe);
  EXPECT_EQ(f32_to_f8e4m3(0.0f), 0x00);
  EXPECT_EQ(f32_to_f8e4m3(-0.0f), 0x80);
  // saturation (no inf in E4M3FN)
  EXPECT_EQ(f32_to_f8e4m3(449.0f), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(1e6f), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(-1e6f), 0xfe);
  EXPECT_EQ(f32_to_f8e4m3(kInf), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(-kInf), 0xfe);
  EXPECT_EQ(f32_to_f8e4m3(kNaN) & 0x7f, 0x7f);
  // rounding, ties to even: 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39)
  EXPECT_EQ(f32_to_f8e4m3(1.0625f), 0x38);
  EXPECT_EQ(f32_to_f8e4m3(1.1875f), 0x3a);  // between 0x39 and 0x3a -> even 0x3a
  EXPECT_EQ(f32_to_f8e4m3(1.07f), 0x39);
  // below half the smallest subnormal -> 0; exactly half -> 0 (even)
  EXPECT_EQ(f32_to_f8e4m3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(f32_to_f8e4m3(std::ldexp(1.5f, -10)), 0x01);
  EXPECT_EQ(f32_to_f8e4m3(std::ldexp(1.0f, -12)), 0x00);
}

TEST(DType, F8E4M3ExhaustiveRoundTrip) {
  for (uint32_t c = 0; c < 256; ++c) {
    float f = f8e4m3_to_f32((uint8_t)c);
    bool nan = (c & 0x7f) == 0x7f;
    ASSERT_EQ(std::isnan(f), nan) << std::hex << c;
    if (nan) {
      ASSERT_TRUE(std::isnan(f8e4m3_to_f32(f32_to_f8e4m3(f)))) << std::hex << c;
    } else {
      ASSERT_EQ(f32_to_f8e4m3(f), c) << std::hex << c;
    }
  }
}

TEST(DType, F8E4M3MidpointsRoundToEven) {
  for (uint32_t c = 0; c < 0x7e; ++c) {
    float a = f8e4m3_to_f32((uint8_t)c), b = f8e4m3_to_f32((uint8_t)(c + 1));
    float mid = (a + b) / 2;
    uint8_t want = (c & 1) ? (uint8_t)(c + 1) : (uint8_t)c;
    ASSERT_EQ(f32_to_f8e4m3(mid), want) << std::hex << c;
    ASSERT_EQ(f32_to_f8e4m3(-mid), want | 0x80) << std::hex << c;
    ASSERT_EQ(f32_to_f8e4m3(std::nextafter(mid, 0.0f)), c) << std::hex << c;
    ASSERT_EQ(f32_to_f8e4m3(std::nextafter(mid, kInf)), c + 1) << std::hex << c;
  }
}

// ---------------------------------------------------------------- bulk conversion

TEST(DType, BulkConversions) {
  std::vector<float> src = {0.0f, 1.0f, -2.5f, 0.15625f, 96.0f, -448.0f};
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F64}) {
    std::vector<uint8_t> buf(src.size() * dtype_size(t));
    convert_from_f32(src.data(), t, src.size(), buf.data());
    std::vector<float> back(src.size());
    convert_to_f32(buf.data(), t, src.size(), back.data());
    for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(back[i], src[i]) << dtype_name(t) << " [" << i << "]";
  }
  int64_t i64[] = {-3, 0, 1 << 20};
  float out[3];
  convert_to_f32(i64, DType::I64, 3, out);
  EXPECT_EQ(out[0], -3.0f);
  EXPECT_EQ(out[2], 1048576.0f);
  int8_t i8[] = {-128, 127};
  convert_to_f32(i8, DType::I8, 2, out);
  EXPECT_EQ(out[0], -128.0f);
  EXPECT_EQ(out[1], 127.0f);
  uint8_t u8[] = {255, 1};
  convert_to_f32(u8, DType::U8, 2, out);
  EXPECT_EQ(out[0], 255.0f);
  float one = 1.0f;
  int32_t dummy;
  EXPECT_THROW(convert_from_f32(&one, DType::I32, 1, &dummy), oboro::Error);
}
