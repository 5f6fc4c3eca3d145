// Tiled attention on the CPU (flash-attention style): never materialises the S×S matrix.
// Optional additive relative-position bias rel_bias (H, 2S−1): score_ij += rel_bias[h][j − i + S − 1].
#pragma once

namespace oboro::cpu {
void attention_forward_tiled(float* o, float* lse, const float* q, const float* k, const float* v,
                             const float* key_valid, int B, int S, int H, int dh, float scale,
                             const float* rel_bias);
// d_rel_bias (H, 2S−1) accumulates Σ_b Σ_{j−i=n} dscore_ij: each (b, h) unit sums into its own scratch row,
// then the rows are added over b in index order, so the result does not depend on the thread count.
void attention_backward_tiled(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* key_valid, int B, int S,
                              int H, int dh, float scale, const float* rel_bias, float* d_rel_bias);
}  // namespace oboro::cpu
