// Tensor views: reshape, slice, select, contiguous copies, dtype conversion, borrowed storage.
#include "core/error.h"
#include "core/tensor.h"
#include <gtest/gtest.h>
#include <numeric>

using namespace oboro;

static Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(s);
  std::iota(t.f32(), t.f32() + t.numel(), 0.f);
  return t;
}

TEST(Tensor, ShapeStridesAndZeros) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_TRUE(t.is_contiguous());
  for (int i = 0; i < 24; ++i) EXPECT_EQ(t.f32()[i], 0.f);
  EXPECT_EQ(shape_str({2, 3}), "(2, 3)");
  EXPECT_EQ(shape_str({5}), "(5,)");
  EXPECT_EQ(Tensor::zeros({4}, DType::BF16).nbytes(), 8u);
}

TEST(Tensor, ReshapeSharesStorage) {
  Tensor t = iota({2, 6});
  Tensor r = t.reshape({3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 4}));
  EXPECT_EQ(r.raw(), t.raw());
  EXPECT_THROW(t.reshape({5, 3}), Error);
  EXPECT_THROW(t.reshape({-1, -1}), Error);
}

TEST(Tensor, SliceSelectAndContiguous) {
  Tensor t = iota({3, 4});
  Tensor col = t.slice(1, 1, 3);  // columns 1..2: non-contiguous view
  EXPECT_EQ(col.shape(), (Shape{3, 2}));
  EXPECT_FALSE(col.is_contiguous());
  EXPECT_THROW(col.f32(), Error);
  Tensor c = col.contiguous();
  const float expect[] = {1, 2, 5, 6, 9, 10};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.f32()[i], expect[i]);
  Tensor row = t.select(2);
  EXPECT_EQ(row.shape(), (Shape{4}));
  EXPECT_EQ(row.f32()[0], 8.f);
  EXPECT_THROW(t.slice(0, 2, 5), Error);
  EXPECT_THROW(t.slice(3, 0, 1), Error);
  // writes through a view are visible in the base
  row.f32()[1] = -1.f;
  EXPECT_EQ(t.f32()[9], -1.f);
}

TEST(Tensor, ConversionAndClone) {
  Tensor t = Tensor::empty({3}, DType::BF16);
  uint16_t* p = t.data<uint16_t>();
  p[0] = f32_to_bf16(1.5f);
  p[1] = f32_to_bf16(-2.f);
  p[2] = f32_to_bf16(0.f);
  Tensor f = t.to_f32();
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.f32()[0], 1.5f);
  EXPECT_EQ(f.f32()[1], -2.f);
  Tensor a = iota({4});
  Tensor b = a.clone();
  b.f32()[0] = 7.f;
  EXPECT_EQ(a.f32()[0], 0.f);
}

TEST(Tensor, BorrowKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4});
  Tensor t = Tensor::borrow(owner->data(), {2, 2}, DType::F32, owner);
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(t.f32()[3], 4.f);
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(Tensor, NegativeDimensionIsAnError) { EXPECT_THROW(Tensor::zeros({2, -1}), Error); }
