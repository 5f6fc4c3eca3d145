// General BF16 GEMM for mixed-precision training (docs/performance.md, "BF16 training"):
//   C(M,N) = beta·C + bf16(op(A))(M,K) · bf16(op(B))(K,N)
// op(A) = A (M×K, row stride lda) or Aᵀ when ta (A stored K×M); op(B) = B (K×N) or Bᵀ when tb (B stored N×K).
// Both operands are rounded to BF16 (nearest even) as they are packed; products are summed in F32 (vdpbf16ps on
// AVX-512 BF16 CPUs, a portable F32 GEMM on the rounded values elsewhere, the same arithmetic to float rounding).
// Every C element is computed by one thread in a fixed K order (K in blocks of kKC, summed in order), so results
// are identical for any thread count. The master weights, biases and every statistic stay F32: only the three
// GEMMs of a Linear layer (forward, dx, dw) use this.
#pragma once

namespace oboro::cpu {

void gemm_bf16(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float beta,
               float* C, int ldc);

// The naive reference: the same rounding, F64 sums (tests).
void gemm_bf16_reference(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                         float beta, float* C, int ldc);

}  // namespace oboro::cpu
