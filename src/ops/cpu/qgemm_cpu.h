// Linear layers with low-precision weights executed directly (docs/formats.md): y(M,N) = x(M,K)·Wᵀ + b for a
// WeightView in bf16, f16, f8 or q8_0. Two implementations with the same arithmetic:
//   - AVX-512 (chosen at run time when the CPU has avx512f/bw/vl + avx512_bf16 + avx512_vnni): BF16 pairs through
//     vdpbf16ps (bf16, f8), F32 FMA (f16), int8 blocks through vpdpbusd (q8_0);
//   - a portable scalar path (any x86-64 or other CPU).
// Work is split over the thread pool by (N panel of 32 columns, chunk of rows); every output element is computed
// by one thread in a fixed K order, so results are identical for any thread count.
// Semantics: bf16 — x rounded to BF16 (nearest-even), F32 accumulation; f8 — the same with the E4M3 weights
// (exact in BF16), times the per-tensor scale; f16 — F32 x times the F16 weights widened to F32; q8_0 — every row
// of x quantised to int8 blocks of 32 (quantize_row_q8_0), exact int32 block dot products, F32 sum over blocks of
// dx·dw·dot.
#pragma once
#include "ops/weights.h"

namespace oboro::cpu {

void linear_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N);

// True when the AVX-512 kernels can run on this CPU.
bool qgemm_avx512_available();
// Force the portable path (tests, comparisons); returns the previous setting.
bool qgemm_force_portable(bool on);
// Whether the portable path is forced (the BF16 training GEMM follows the same switch).
bool qgemm_portable_forced();

}  // namespace oboro::cpu
