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
void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G,
                       float eps, bool silu);
void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W);
void transpose_forward(float* y, const float* x, int B, int R, int C);

}  // namespace oboro::cpu
