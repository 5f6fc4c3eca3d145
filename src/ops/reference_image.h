// Naive references of the VAE image ops (backend.h "Image ops"): straight from the definitions, double
// accumulation, no tiling, no im2col. Tests compare the fast kernels against these. Outputs are overwritten.
#pragma once
#include "ops/backend.h"

namespace oboro::ref {

// y = conv2d(x, w) + b with the geometry of Conv2dShape (asymmetric zero padding, stride, optional nearest ×2
// upsampling of the input first).
void conv2d(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s);
void groupnorm(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G, float eps,
               bool silu);
void upsample_nearest2x(float* y, const float* x, int B, int C, int H, int W);
void transpose(float* y, const float* x, int B, int R, int C);

}  // namespace oboro::ref
