// Internal to the CPU attention kernels, shared by attention_cpu.cpp (dispatch, portable F32 forward and backward),
// attention_avx512.cpp (register-blocked AVX-512 F32 forward and backward) and attention_bf16.cpp (the BF16 forward):
// the −inf constant, the forwards' query chunking, the x86 include / target macro, the force-generic flag and the
// AVX-512 F32 entry points the dispatch calls. Not part of the ops API (that is attention_cpu.h).
#pragma once
#include "core/threads.h"
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#if defined(__x86_64__)
// GCC 12's AVX-512 headers pass _mm512_undefined_ps() and trip -Wmaybe-uninitialized (a header false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define OBORO_ATTN_X86 1
#endif

namespace oboro::cpu {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The forwards split each (batch, head) unit's query tiles into nch contiguous chunks when there are fewer units
// than threads (the VAE's mid-block attention is one unit): work item w = unit · nch + chunk. Every query row is
// computed the same way whatever the chunking, so results do not depend on nch (nor on the thread count).
struct QueryRange {
  int begin, end;
};
inline int query_chunks(int units, int S, int tile) {
  const int tiles = (S + tile - 1) / tile, th = num_threads();
  if (units >= th || tiles < 2) return 1;
  return std::min(tiles, (th + units - 1) / units);
}
inline QueryRange query_range(int S, int tile, int chunk, int nch) {
  const int tiles = (S + tile - 1) / tile;
  const int t0 = (int)((int64_t)tiles * chunk / nch), t1 = (int)((int64_t)tiles * (chunk + 1) / nch);
  return {t0 * tile, std::min(S, t1 * tile)};
}

#if OBORO_ATTN_X86
// Set by attention_force_generic (attention_cpu.cpp); the AVX-512 F32 and BF16 dispatches read it.
extern std::atomic<bool> g_attn_force_generic;

#define OBORO_ATTN_AVX512 __attribute__((target("avx512f,avx512dq,fma")))
// attention_avx512.cpp: the register-blocked F32 forward (o (B,S,H·dh), lse (B,H,S); query tiles chunked over
// threads as above) and the backward over (batch, head) units [u0, u1) on the calling thread; drel, when set, gets
// one (2S−1) row of double partial sums per unit (reduced over the batch by attention_backward_tiled).
void attention_forward_avx512(float* o, float* lse, const float* q, const float* k, const float* v,
                              const float* key_valid, int B, int S, int H, int dh, float scale,
                              const float* rel_bias);
OBORO_ATTN_AVX512 void attention_backward_avx512_units(int64_t u0, int64_t u1, float* dq, float* dk, float* dv,
                                                       const float* dout, const float* q, const float* k,
                                                       const float* v, const float* o, const float* lse,
                                                       const float* key_valid, int S, int H, int dh, float scale,
                                                       const float* rel_bias, double* drel);
#endif  // OBORO_ATTN_X86

}  // namespace oboro::cpu
