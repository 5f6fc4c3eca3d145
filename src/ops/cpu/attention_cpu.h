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
// Force the portable kernels (attention_forward_generic for F32, attention_forward_bf16_portable for BF16, the
// portable loops of attention_backward_tiled) — tests, benchmarks; returns the previous setting.
// The forwards split a unit's query tiles over threads when there are fewer (batch, head) units than threads (the
// VAE's single-head mid-block attention); every query row is computed the same way however it is split.
bool attention_force_generic(bool on);

// The BF16 forward (AttnPrecision::BF16 in ops/backend.h, inference only): Q·scale (scaled in F32, then rounded),
// K, V and the softmax probabilities rounded to BF16 (nearest even), both products with F32 accumulation; mask,
// relative bias, running max, sum and lse in F32 (sum and lse of the rounded probabilities). Any head dim (padded
// with zeros to pairs). Runs a vdpbf16ps kernel when attention_bf16_available(), else the portable scalar path
// (same arithmetic, agreeing to float rounding). Results do not depend on the thread count.
void attention_forward_bf16(float* o, float* lse, const float* q, const float* k, const float* v,
                            const float* key_valid, int B, int S, int H, int dh, float scale,
                            const float* rel_bias);
void attention_forward_bf16_portable(float* o, float* lse, const float* q, const float* k, const float* v,
                                     const float* key_valid, int B, int S, int H, int dh, float scale,
                                     const float* rel_bias);
// Whether attention_forward_bf16 runs its AVX-512 BF16 kernel (avx512f/dq/bw/vl + avx512_bf16) on this CPU.
bool attention_bf16_available();
// The backward runs a register-blocked AVX-512 kernel when attention_avx512_available() (the portable loops
// otherwise); both use the same F32 arithmetic up to summation order.
// d_rel_bias (H, 2S−1) accumulates Σ_b Σ_{j−i=n} dscore_ij: each (b, h) unit sums into its own scratch row,
// then the rows are added over b in index order, so the result does not depend on the thread count.
void attention_backward_tiled(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* key_valid, int B, int S,
                              int H, int dh, float scale, const float* rel_bias, float* d_rel_bias);
}  // namespace oboro::cpu
