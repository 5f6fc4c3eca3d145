// Tiled attention on the CPU (flash-attention style): never materialises the S×S matrix.
#pragma once

namespace oboro::cpu {
void attention_forward_tiled(float* o, float* lse, const float* q, const float* k, const float* v,
                             const float* key_valid, int B, int S, int H, int dh, float scale);
void attention_backward_tiled(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* key_valid, int B, int S,
                              int H, int dh, float scale);
}  // namespace oboro::cpu
