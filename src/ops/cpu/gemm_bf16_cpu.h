// General BF16 GEMM for mixed-precision training (docs/performance.md, "BF16 training"):
//   C(M,N) = beta·C + bf16(op(A))(M,K) · bf16(op(B))(K,N)
// op(A) = A (M×K, row stride lda) or Aᵀ when ta (A stored K×M); op(B) = B (K×N) or Bᵀ when tb (B stored N×K).
// Both operands are rounded to BF16 (nearest even) as they are packed; products are summed in F32 (vdpbf16ps on
// AVX-512 BF16 CPUs, a portable F32 GEMM on the rounded values elsewhere, the same arithmetic to float rounding).
// Every C element is computed by one thread in a fixed K order (K in blocks of kKC, summed in order), so results
// are identical for any thread count. The master weights, biases and every statistic stay F32: only the three
// GEMMs of a Linear layer (forward, dx, dw) use this.
#pragma once
#include <cstddef>
#include <cstdint>

namespace oboro::cpu {

void gemm_bf16(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float beta,
               float* C, int ldc);

// The naive reference: the same rounding, F64 sums (tests).
void gemm_bf16_reference(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                         float beta, float* C, int ldc);

// Pre-packed operands, for callers that produce BF16 in the packed layouts themselves (the Winograd convolution).
// Single-threaded; the caller spreads disjoint C blocks over its threads. Needs gemm_bf16_packed_available().
//   A: M rows of K2 BF16 pairs (2·K2 values, K zero-padded to even), row stride lda values — gemm_bf16's packing
//      of op(A);
//   B: ⌈N/32⌉ panels of [K2][32][2] BF16 (pair (2k, 2k+1) of column j at [k][j][0..1]), panel stride 64·K2 values;
//   C(M, N) (row stride ldc) = A·B, or C += A·B when add.
// The micro-kernel and K blocking of gemm_bf16: each C element is one F32 sum over K in a fixed order, whatever M,
// N or the caller's blocking.
bool gemm_bf16_packed_available();
void gemm_bf16_packed(int M, int N, int K2, const uint16_t* A, size_t lda, const uint16_t* B, float* C, size_t ldc,
                      bool add);

}  // namespace oboro::cpu
