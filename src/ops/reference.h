// Naive reference implementations, written straight from the formulas with double
// accumulation and no tiling. Tests compare every fast kernel against these.
// Shapes and conventions as in backend.h, except outputs here are always overwritten.
#pragma once
#include <cstddef>
#include <vector>
#include "ops/weights.h"

namespace oboro::ref {

void linear(float* y, const float* x, const float* w, const float* b, int M, int K, int N);
// Linear with a low-precision weight, the arithmetic of ops/cpu/qgemm_cpu.h in double: bf16/f8 round x to BF16,
// f16 uses x as is, q8_0 quantises x rows with quantize_row_q8_0 (exact integer block dots). F32 = linear().
void linear_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N);
void rmsnorm(float* y, const float* x, const float* gamma, int M, int D, float eps);
void layernorm(float* y, const float* x, const float* gamma, const float* beta, int M, int D, float eps);
void silu(float* y, const float* x, size_t n);
void gelu_tanh(float* y, const float* x, size_t n);
void swiglu(float* y, const float* a, const float* b, size_t n);
void modulate(float* y, const float* x, const float* s, int ld_s, int B, int S, int D);
void gate_residual(float* h, const float* y, const float* g, int ld_g, int B, int S, int D);  // h += tanh(g)·y
// RoPE from positions directly (no tables): x(B,S,H·dh) in place.
void rope2d(float* x, const int* rows, const int* cols, int B, int S, int H, int dh, float theta);
// Full S×S softmax attention (materialised), forward and backward (outputs overwritten).
// rel_bias (H, 2S−1) or null: score_ij = scale·q_i·k_j + rel_bias[h][j − i + S − 1]; d_rel_bias (H, 2S−1)
// (overwritten, summed over the batch) may be null.
void attention(float* o, const float* q, const float* k, const float* v, const float* key_valid, int B, int S, int H,
               int dh, float scale, const float* rel_bias = nullptr);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* key_valid, int B, int S, int H, int dh, float scale,
                        const float* rel_bias = nullptr, float* d_rel_bias = nullptr);
// out(N,D) row n = table row ids[n]; dtable (V,D) overwritten with Σ_{n: ids[n]=v} dout[n].
void embedding(float* out, const float* table, const int* ids, int N, int D);
void embedding_backward(float* dtable, const float* dout, const int* ids, int N, int D, int V);
// y = gelu_tanh(a) ⊙ b (T5 v1.1 gated-GELU).
void geglu(float* y, const float* a, const float* b, size_t n);
void patchify(float* tokens, const float* x, int B, int C, int h, int w, int p);
void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period);
double mse(const float* pred, const float* target, size_t n);

}  // namespace oboro::ref
