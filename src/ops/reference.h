// Naive reference implementations, written straight from the formulas with double
// accumulation and no tiling. Tests compare every fast kernel against these.
// Shapes and conventions as in backend.h, except outputs here are always overwritten.
#pragma once
#include <cstddef>
#include <vector>

namespace oboro::ref {

void linear(float* y, const float* x, const float* w, const float* b, int M, int K, int N);
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
void attention(float* o, const float* q, const float* k, const float* v, const float* key_valid, int B, int S, int H,
               int dh, float scale);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* key_valid, int B, int S, int H, int dh, float scale);
void patchify(float* tokens, const float* x, int B, int C, int h, int w, int p);
void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period);
double mse(const float* pred, const float* target, size_t n);

}  // namespace oboro::ref
