// Tiled attention on the CPU (flash-attention style): never materialises the S×S matrix.
// Optional additive relative-position bias rel_bias (H, 2S−1): score_ij += rel_bias[h][j − i + S − 1].
#pragma once

namespace oboro::cpu {
void attention_forward_tiled(float* o, float* lse, const float* q, const float* k, const float* v,
                             const float* key_valid, int B, int S, int H, int dh, float scale,
                             const float* rel_bias);
// The portable tiled forward (scalar loops the compiler vectorises); attention_forward_tiled uses it when the
// CPU lacks AVX-512 or attention_force_generic(true) is set, and the tests compare the two.
void attention_forward_generic(float* o, float* lse, const float* q, const float* k, const float* v,
                               const float* key_valid, int B, int S, int H, int dh, float scale,
                               const float* rel_bias);
// Whether attention_forward_tiled runs its register-blocked AVX-512 kernel on this CPU.
bool attention_avx512_available();
// Force the generic forward (tests, benchmarks); returns the previous setting.
bool attention_force_generic(bool on);
// d_rel_bias (H, 2S−1) accumulates Σ_b Σ_{j−i=n} dscore_ij: each (b, h) unit sums into its own scratch row,
// then the rows are added over b in index order, so the result does not depend on the thread count.
void attention_backward_tiled(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* key_valid, int B, int S,
                              int H, int dh, float scale, const float* rel_bias, float* d_rel_bias);
}  // namespace oboro::cpu
