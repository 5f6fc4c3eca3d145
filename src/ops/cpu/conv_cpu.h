// CPU kernels of the VAE image ops (spec §8), behind the Backend methods of the same names (backend.h):
// conv2d as im2col over tiles of output rows + GEMM (the im2col buffer never exceeds `col_budget` floats,
// or one output row when a row alone is larger), GroupNorm with double statistics (optionally fused swish),
// nearest ×2 upsampling and a blocked batched transpose. Forward only.
#pragma once
#include "ops/backend.h"
#include <cstddef>

namespace oboro::cpu {

constexpr size_t kConvColBudget = size_t(1) << 22;  // floats (16 MiB) of im2col per conv call

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s, bool accumulate,
                    size_t col_budget = kConvColBudget);
// conv2d with a weight in any storage format, viewed as the matrix (Co, K = Ci·kh·kw). F32 → conv2d_forward. BF16
// 3×3 stride-1 pad-1 convs (up2 or not) → Winograd F(2×2, 3×3) (winograd_cpu.h; U and V rounded to BF16 instead of
// the weight and input, scratch within the same budget) on AVX-512 BF16 CPUs unless conv_force_direct. Others:
// per tile of output rows an im2row matrix rows(n, K) (each output position's receptive field, the same zero
// padding / stride / up2 reads as im2col) goes through cpu::linear_w into ytile(n, Co), transposed into the NCHW
// rows of y (y = conv + b, or y += conv + b when accumulating). rows and ytile together stay within `col_budget`
// floats (or one output row when a row alone is larger); linear_w adds its BF16 copy of rows (bf16 weights).
void conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                      bool accumulate, size_t col_budget = kConvColBudget);
// Output rows per tile of conv2d_forward_w for this geometry and budget (models/vae.cpp mirrors this to plan the
// scratch: rows + ytile in F32, plus linear_w's BF16 copy of rows for bf16 weights).
int conv2d_w_tile_rows(const Conv2dShape& s, size_t col_budget = kConvColBudget);
// Force the direct (im2row) path for every low-precision conv (tests, A/B timing); returns the previous setting.
bool conv_force_direct(bool on);
// Whether conv2d_forward_w runs this convolution through Winograd now (shape, format, CPU and the switches).
bool conv_w_uses_winograd(const Conv2dShape& s, const WeightView& w);
void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G,
                       float eps, bool silu);
void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W);
void transpose_forward(float* y, const float* x, int B, int R, int C);

}  // namespace oboro::cpu
