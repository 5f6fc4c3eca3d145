// Winograd F(2×2, 3×3) convolution for BF16 weights (the VAE's 3×3 stride-1 pad-1 convs, also with the fused
// nearest-×2 upsampling). Each 2×2 output tile Y of one output channel is
//   Y = Aᵀ [ Σ_ci U[ci] ⊙ V[ci] ] A,   U = G g Gᵀ (4×4, from the 3×3 kernel g), V = Bᵀ d B (4×4 input tile d),
// so the 9 multiply-adds per output pixel and input channel of the direct convolution become 16 per 2×2 tile
// (2.25× fewer): for each of the 16 positions (i, j) of the 4×4 transform domain one GEMM
//   M[i,j](Co, tiles) = U[i,j](Co, Ci) · V[i,j](Ci, tiles).
// With up2 the input tile's rows 1 and 2 (and columns 1 and 2) read the same pixel of x, so V's row 2 and column 2
// are zero: only 9 of the 16 GEMMs are needed (4× fewer products than direct).
// Arithmetic: U is computed in F32 from the stored BF16 weight, V in F32 from the F32 input; both are rounded to
// BF16 (nearest even) and multiplied with F32 accumulation (the gemm_bf16 micro-kernel), the output transform,
// bias and accumulation are F32. The error is therefore that of rounding U and V (not g and d) to BF16, a small
// multiple of the direct bf16 path's (tests/unit/test_winograd.cpp measures it).
// Memory: U (positions × Co × Ci BF16) per call, plus V and M for a band of tile rows within `budget` floats (at
// least one tile row; fewer rows when ~4 MiB still gives the GEMM ≥ 256 tiles, so V and M stay in cache). Results are
// bitwise identical for any thread count and any band size.
#pragma once
#include "ops/backend.h"
#include <cstddef>

namespace oboro::cpu {

// The geometry and format Winograd handles: 3×3, stride 1, padding 1 on every side (up2 or not), BF16 weight.
bool winograd_eligible(const Conv2dShape& s, const WeightView& w);
// Whether the fast kernel can run on this CPU (AVX-512 BF16) and the portable kernels are not forced.
bool winograd_available();
// Tile rows (2 output rows each) per band, and the scratch the call allocates (bytes), for this budget in floats.
int winograd_band_tile_rows(const Conv2dShape& s, size_t budget);
size_t winograd_scratch_bytes(const Conv2dShape& s, size_t budget);

// y = conv(x, w) + b (y += … when accumulating), the semantics of conv2d_forward_w. Requires winograd_eligible and
// winograd_available.
void conv2d_winograd_bf16(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                          bool accumulate, size_t budget);

// Naive reference of the same arithmetic (tests): U and V computed in F32 with the fast kernel's operations and
// rounded to BF16, products summed in F64, output transform in F64, then bias / accumulate.
void conv2d_winograd_reference(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                               bool accumulate);

}  // namespace oboro::cpu
