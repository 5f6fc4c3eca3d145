// Winograd F(2×2, 3×3) for BF16 weights (see winograd_cpu.h). Transforms (Lavin & Gray's matrices):
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],  Aᵀ = [1 1 1 0; 0 1 −1 −1].
// Output tile (ty, tx) covers outputs (2ty + {0,1}, 2tx + {0,1}) and reads input rows 2ty − 1 … 2ty + 2 and columns
// 2tx − 1 … 2tx + 2 of the (possibly ×2 upsampled) input, zero outside. Odd output sizes: the last tile's second
// row / column is computed from zero padding and not stored.
// One call, per image and band of tile rows:
//   U[pos](Co, Kp) BF16        once per call, pos = the active positions 4i + j of the 4×4 domain (Kp = Ci rounded up
//                              to even, zero padded) — gemm_bf16's row-packed A operand;
//   V[pos](panels of 32 tiles, [K2][32][2]) BF16 — the B operand in gemm_bf16's panel layout, written directly by
//                              the input transform (16 tiles per vector, a pair of input channels per work unit);
//   M[pos](Co, Tb) F32         = U[pos]·V[pos], tasks (position, block of output channels, group of panels), one
//                              single-threaded gemm_bf16_packed call each;
//   y                          from M by the output transform, + bias, (+ y when accumulating).
// Tiles of a band are numbered row by row with the tile columns padded to a multiple of 16 (ntxp), so that each
// 16-tile vector lies in one half of one panel. Every M element is one F32 sum over Ci in a fixed order and the
// transforms are element-wise: results do not depend on the thread count or the band size.
// The scalar transforms below (templates) are used by the vector kernels (T = __m512, GCC vector arithmetic) and by
// the reference (T = float), so both compute U and V with the same F32 operations.
#include "ops/cpu/winograd_cpu.h"
#include "ops/cpu/gemm_bf16_cpu.h"
#include "ops/cpu/qgemm_cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/threads.h"
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 intrinsic header false positive
#include <immintrin.h>
#define OBORO_WINOGRAD_X86 1
#endif

namespace oboro::cpu {
namespace {

constexpr int kGroup = 16;  // tiles per F32 vector
constexpr int kPanel = 32;  // tiles per gemm_bf16 B panel
constexpr int kMC = 240;    // output channels per GEMM task (a multiple of the micro-kernel's 12 rows)
constexpr int kPG = 4;      // panels per GEMM task

// U = G g Gᵀ for a 3×3 kernel g (row-major), u[4i + j].
template <class T>
inline void weight_tile(const T g[9], T u[16]) {
  T q[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    q[0][j] = g[j];
    q[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
    q[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
    q[3][j] = g[6 + j];
  }
  for (int i = 0; i < 4; ++i) {  // (G g) Gᵀ
    u[4 * i + 0] = q[i][0];
    u[4 * i + 1] = 0.5f * (q[i][0] + q[i][1] + q[i][2]);
    u[4 * i + 2] = 0.5f * (q[i][0] - q[i][1] + q[i][2]);
    u[4 * i + 3] = q[i][2];
  }
}

// V = Bᵀ d B for a 4×4 input tile d[4i + j], v[4i + j].
template <class T>
inline void input_tile(const T d[16], T v[16]) {
  T r[4][4];  // Bᵀ d
  for (int j = 0; j < 4; ++j) {
    r[0][j] = d[j] - d[8 + j];
    r[1][j] = d[4 + j] + d[8 + j];
    r[2][j] = d[8 + j] - d[4 + j];
    r[3][j] = d[4 + j] - d[12 + j];
  }
  for (int i = 0; i < 4; ++i) {  // (Bᵀ d) B
    v[4 * i + 0] = r[i][0] - r[i][2];
    v[4 * i + 1] = r[i][1] + r[i][2];
    v[4 * i + 2] = r[i][2] - r[i][1];
    v[4 * i + 3] = r[i][1] - r[i][3];
  }
}

// Y = Aᵀ m A for the 4×4 product m[4i + j]: y = {Y00, Y01, Y10, Y11}.
template <class T>
inline void output_tile(const T m[16], T y[4]) {
  T t[2][4];  // Aᵀ m
  for (int j = 0; j < 4; ++j) {
    t[0][j] = m[j] + m[4 + j] + m[8 + j];
    t[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
  }
  for (int i = 0; i < 2; ++i) {  // (Aᵀ m) A
    y[2 * i + 0] = t[i][0] + t[i][1] + t[i][2];
    y[2 * i + 1] = t[i][1] - t[i][2] - t[i][3];
  }
}

inline float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// Geometry of one call.
struct Geo {
  int Ho = 0, Wo = 0, nty = 0, ntx = 0, ntxp = 0;  // output size; tile rows, tile columns (padded to kGroup)
  int Kp = 0, K2 = 0;                              // Ci padded to even; pairs
  int np = 0;                                      // active positions: 16, or 9 with up2 (V's row/column 2 is 0)
  int pos[16] = {};
};
Geo geometry(const Conv2dShape& s) {
  Geo g;
  g.Ho = s.out_h();
  g.Wo = s.out_w();
  g.nty = (g.Ho + 1) / 2;
  g.ntx = (g.Wo + 1) / 2;
  g.ntxp = (g.ntx + kGroup - 1) / kGroup * kGroup;
  g.Kp = (s.Ci + 1) / 2 * 2;
  g.K2 = g.Kp / 2;
  for (int p = 0; p < 16; ++p)
    if (!s.up2 || (p / 4 != 2 && p % 4 != 2)) g.pos[g.np++] = p;
  return g;
}

int64_t panels_of(int64_t tiles) { return (tiles + kPanel - 1) / kPanel; }
// V (uint16 values) and M (floats) of a band of nb tile rows.
int64_t v_elems(const Geo& g, int nb) { return (int64_t)g.np * panels_of((int64_t)nb * g.ntxp) * g.K2 * 64; }
int64_t m_elems(const Geo& g, int Co, int nb) { return (int64_t)g.np * Co * nb * g.ntxp; }

// Tile rows per band: V and M of a band are written and read back once, so they should stay in cache (~kCacheFloats)
// as long as the GEMM still gets enough columns (kMinTiles) to reuse each block of U; never above the budget.
constexpr int64_t kCacheFloats = int64_t(1) << 20;  // 4 MiB
constexpr int64_t kMinTiles = 256;
int band_rows(const Geo& g, const Conv2dShape& s, size_t budget) {
  const int64_t per_row = v_elems(g, 1) / 2 + m_elems(g, s.Co, 1);  // in floats (a BF16 is half a float)
  const int64_t cached = std::max(kCacheFloats / per_row, (kMinTiles + g.ntxp - 1) / g.ntxp);
  const int64_t rows = std::min<int64_t>((int64_t)budget / per_row, cached);
  return (int)std::clamp<int64_t>(rows, 1, std::max(1, g.nty));
}

#if OBORO_WINOGRAD_X86
#define OBORO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

// Index of position p = 4i + j among the active ones (geometry()'s order), −1 when inactive (up2: i or j = 2).
// Constant in the fully unrolled position loops below, so the 16 tile vectors stay in registers.
constexpr int active_index(bool up2, int p) {
  if (!up2) return p;
  const int i = p / 4, j = p % 4;
  return i == 2 || j == 2 ? -1 : 3 * (i == 3 ? 2 : i) + (j == 3 ? 2 : j);
}

// U[pidx](Co, Kp) for output channels [c0, c1): per channel the Ci·9 taps are widened to F32 (zero past Ci), then
// 16 input channels per vector are gathered tap by tap, go through weight_tile and are rounded to BF16.
template <bool UP2>
OBORO_AVX512 void transform_weights(uint16_t* U, const uint16_t* w, int Ci, int Co, const Geo& g, int64_t c0,
                                    int64_t c1) {
  const int Cv = (g.Kp + kGroup - 1) / kGroup * kGroup, n = Ci * 9;
  std::vector<float> taps((size_t)Cv * 9 + 16, 0.f);
  const __m512i lane9 = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(9));
  for (int64_t co = c0; co < c1; ++co) {
    const uint16_t* wc = w + (size_t)co * n;
    int i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_si512(&taps[i], _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(wc + i))), 16));
    for (; i < n; ++i) taps[i] = bf16_to_f32(wc[i]);
    for (int ci = 0; ci < g.Kp; ci += kGroup) {
      __m512 gv[9], u[16];
      for (int k = 0; k < 9; ++k)
        gv[k] = _mm512_i32gather_ps(_mm512_add_epi32(lane9, _mm512_set1_epi32(ci * 9 + k)), taps.data(), 4);
      weight_tile(gv, u);
      const __mmask16 m = (__mmask16)(g.Kp - ci >= 16 ? 0xFFFF : (1u << (g.Kp - ci)) - 1);
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) {
        const int pi = active_index(UP2, p);
        if (pi >= 0)
          _mm256_mask_storeu_epi16(U + ((size_t)pi * Co + co) * g.Kp + ci, m, (__m256i)_mm512_cvtneps_pbh(u[p]));
      }
    }
  }
}

// Lanes l of a 16-float load at column c0 + l of a row of W values that lie inside the row.
inline __mmask16 row_mask(int c0, int W) {
  const int lo = std::max(0, -c0), hi = std::min(16, W - c0);
  return hi <= lo ? (__mmask16)0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

// The 4×4 input tiles d of the 16 tiles tx0 … tx0 + 15 of one channel from its input rows r[0..3] (x rows, null:
// outside the image). Tile tx reads columns 2tx − 1 … 2tx + 2 of the conv input: x columns 2tx − 1 + j, or with up2
// x columns tx − 1 + ⌈j/2⌉; masked loads give the zero padding (masked-off lanes are not read).
template <bool UP2>
OBORO_AVX512 inline void load_tiles(const float* const r[4], int W, int tx0, __m512i ie, __m512i io, __m512 d[16]) {
  if (UP2) {
    const __mmask16 m0 = row_mask(tx0 - 1, W), m1 = row_mask(tx0, W), m3 = row_mask(tx0 + 1, W);
    for (int i = 0; i < 4; ++i) {
      if (!r[i]) {
        d[4 * i] = d[4 * i + 1] = d[4 * i + 2] = d[4 * i + 3] = _mm512_setzero_ps();
        continue;
      }
      d[4 * i + 0] = _mm512_maskz_loadu_ps(m0, r[i] + tx0 - 1);
      d[4 * i + 1] = d[4 * i + 2] = _mm512_maskz_loadu_ps(m1, r[i] + tx0);
      d[4 * i + 3] = _mm512_maskz_loadu_ps(m3, r[i] + tx0 + 1);
    }
    return;
  }
  const int c = 2 * tx0 - 1;  // column of j = 0 for tile tx0
  const __mmask16 ma = row_mask(c, W), mb = row_mask(c + 16, W), me = row_mask(c + 2, W), mf = row_mask(c + 18, W);
  for (int i = 0; i < 4; ++i) {
    if (!r[i]) {
      d[4 * i] = d[4 * i + 1] = d[4 * i + 2] = d[4 * i + 3] = _mm512_setzero_ps();
      continue;
    }
    const __m512 a = _mm512_maskz_loadu_ps(ma, r[i] + c), b = _mm512_maskz_loadu_ps(mb, r[i] + c + 16);
    const __m512 e = _mm512_maskz_loadu_ps(me, r[i] + c + 2), f = _mm512_maskz_loadu_ps(mf, r[i] + c + 18);
    d[4 * i + 0] = _mm512_permutex2var_ps(a, ie, b);  // columns c + 2l
    d[4 * i + 1] = _mm512_permutex2var_ps(a, io, b);  // c + 2l + 1
    d[4 * i + 2] = _mm512_permutex2var_ps(e, ie, f);  // c + 2l + 2
    d[4 * i + 3] = _mm512_permutex2var_ps(e, io, f);  // c + 2l + 3
  }
}

// V for tile rows [ty0, ty0 + nb) of image xb: units (input-channel pair k2, band tile row r), 16 tiles at a time;
// the two channels' values are interleaved into the BF16 pairs of the panel layout.
template <bool UP2>
OBORO_AVX512 void transform_input_units(uint16_t* V, const float* xb, const Conv2dShape& s, const Geo& g, int ty0,
                                        int nb, int64_t u0, int64_t u1) {
  const int ih = s.in_h(), W = s.W, ntxp = g.ntxp, Ci = s.Ci;
  const int64_t K2 = g.K2, pstride = panels_of((int64_t)nb * ntxp) * K2 * 64;  // V values per position
  alignas(64) static const int32_t even_idx[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  alignas(64) static const int32_t odd_idx[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  alignas(64) static const uint16_t pair_idx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i ie = _mm512_load_si512(even_idx), io = _mm512_load_si512(odd_idx), ip = _mm512_load_si512(pair_idx);
  // x rows of unit u (null: outside the image or past Ci).
  auto unit_rows = [&](int64_t u, const float* rows[2][4]) {
    const int k2 = (int)(u / nb), ty = ty0 + (int)(u % nb);
    for (int c = 0; c < 2; ++c) {
      const int ci = 2 * k2 + c;
      for (int i = 0; i < 4; ++i) {
        const int iy = 2 * ty - 1 + i;
        rows[c][i] = ci >= Ci || iy < 0 || iy >= ih ? nullptr
                                                    : xb + ((size_t)ci * s.H + (UP2 ? iy / 2 : iy)) * W;
      }
    }
  };
  // The rows are short streams (W floats): software prefetch kAhead floats ahead within a row, and the next
  // unit's first kAhead floats while this one runs, so DRAM latency overlaps the work.
  constexpr int kAhead = 256;
  const float* rows[2][4];
  unit_rows(u0, rows);
  for (int64_t u = u0; u < u1; ++u) {
    const int k2 = (int)(u / nb), r = (int)(u % nb);
    const float* next[2][4] = {};
    if (u + 1 < u1) {
      unit_rows(u + 1, next);
      for (int c = 0; c < 2; ++c)
        for (int i = 0; i < 4; ++i)
          if (next[c][i] && (i != 2 || !UP2))
            for (int o = 0; o < std::min(W, kAhead); o += 16) _mm_prefetch((const char*)(next[c][i] + o), _MM_HINT_T0);
    }
    for (int tx0 = 0; tx0 < ntxp; tx0 += kGroup) {
      const int ahead = (UP2 ? tx0 : 2 * tx0) + kAhead;
      if (ahead < W)
        for (int c = 0; c < 2; ++c)
          for (int i = 0; i < 4; ++i)
            if (rows[c][i] && (i != 2 || !UP2)) {
              _mm_prefetch((const char*)(rows[c][i] + ahead), _MM_HINT_T0);
              if (!UP2) _mm_prefetch((const char*)(rows[c][i] + ahead + 16), _MM_HINT_T0);
            }
      __m512 d[16], v0[16], v1[16];
      load_tiles<UP2>(rows[0], W, tx0, ie, io, d);
      input_tile(d, v0);
      load_tiles<UP2>(rows[1], W, tx0, ie, io, d);
      input_tile(d, v1);
      const int64_t t = (int64_t)r * ntxp + tx0, panel = t / kPanel, lane = t % kPanel;
      uint16_t* dst = V + (panel * K2 + k2) * 64 + 2 * lane;
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) {
        const int pi = active_index(UP2, p);
        if (pi >= 0)
          _mm512_storeu_si512(dst + pi * pstride,
                              _mm512_permutexvar_epi16(ip, (__m512i)_mm512_cvtne2ps_pbh(v1[p], v0[p])));
      }
    }
    std::memcpy(rows, next, sizeof(rows));
  }
}
void transform_input(uint16_t* V, const float* xb, const Conv2dShape& s, const Geo& g, int ty0, int nb) {
  parallel_for((int64_t)g.K2 * nb, [&](int64_t u0, int64_t u1) {
    if (s.up2) transform_input_units<true>(V, xb, s, g, ty0, nb, u0, u1);
    else transform_input_units<false>(V, xb, s, g, ty0, nb, u0, u1);
  }, 1);
}

// y rows of tile rows [ty0, ty0 + nb) of image yb from M: units (output channel, band tile row).
template <bool UP2>
OBORO_AVX512 void transform_output_units(float* yb, const float* M, const float* bias, const Conv2dShape& s,
                                         const Geo& g, int ty0, int nb, bool accumulate, int64_t u0, int64_t u1) {
  const int64_t Tb = (int64_t)nb * g.ntxp, plane = (int64_t)g.Ho * g.Wo, pstride = (int64_t)s.Co * Tb;
  alignas(64) static const int32_t lo_idx[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  alignas(64) static const int32_t hi_idx[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i il = _mm512_load_si512(lo_idx), ih = _mm512_load_si512(hi_idx);
  for (int64_t u = u0; u < u1; ++u) {
    const int co = (int)(u / nb), r = (int)(u % nb), ty = ty0 + r;
    const __m512 bv = _mm512_set1_ps(bias ? bias[co] : 0.f);
    const int nrows = std::min(2, g.Ho - 2 * ty);
    const float* mrow = M + (int64_t)co * Tb + (int64_t)r * g.ntxp;
    for (int tx0 = 0; tx0 < g.ntx; tx0 += kGroup) {
      __m512 m[16], yv[4];
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) {
        const int pi = active_index(UP2, p);
        m[p] = pi >= 0 ? _mm512_loadu_ps(mrow + pi * pstride + tx0) : _mm512_setzero_ps();
      }
      output_tile(m, yv);
      const int x0 = 2 * tx0, n = std::min(32, g.Wo - x0);
      const __mmask16 k0 = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
      const __mmask16 k1 = (__mmask16)(n >= 32 ? 0xFFFF : n > 16 ? (1u << (n - 16)) - 1 : 0);
      for (int i = 0; i < nrows; ++i) {
        __m512 a = yv[2 * i], b = yv[2 * i + 1];
        if (bias) a = _mm512_add_ps(a, bv), b = _mm512_add_ps(b, bv);
        __m512 lo = _mm512_permutex2var_ps(a, il, b), hi = _mm512_permutex2var_ps(a, ih, b);
        float* dst = yb + co * plane + (int64_t)(2 * ty + i) * g.Wo + x0;
        if (accumulate) {
          lo = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, dst), lo);
          hi = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, dst + 16), hi);
        }
        _mm512_mask_storeu_ps(dst, k0, lo);
        _mm512_mask_storeu_ps(dst + 16, k1, hi);
      }
    }
  }
}

void transform_output(float* yb, const float* M, const float* bias, const Conv2dShape& s, const Geo& g, int ty0,
                      int nb, bool accumulate) {
  parallel_for((int64_t)s.Co * nb, [&](int64_t u0, int64_t u1) {
    if (s.up2) transform_output_units<true>(yb, M, bias, s, g, ty0, nb, accumulate, u0, u1);
    else transform_output_units<false>(yb, M, bias, s, g, ty0, nb, accumulate, u0, u1);
  }, std::max<int64_t>(1, 64 / std::max(1, g.ntx / kGroup)));
}
#endif  // OBORO_WINOGRAD_X86

}  // namespace

bool winograd_eligible(const Conv2dShape& s, const WeightView& w) {
  return w.fmt == WFormat::BF16 && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.pad_t == 1 &&
         s.pad_b == 1 && s.pad_l == 1 && s.pad_r == 1 && w.N == s.Co && w.K == s.Ci * 9;
}

bool winograd_available() {
#if OBORO_WINOGRAD_X86
  return gemm_bf16_packed_available() && !qgemm_portable_forced();
#else
  return false;
#endif
}

int winograd_band_tile_rows(const Conv2dShape& s, size_t budget) { return band_rows(geometry(s), s, budget); }

size_t winograd_scratch_bytes(const Conv2dShape& s, size_t budget) {
  const Geo g = geometry(s);
  const int nb = band_rows(g, s, budget);
  return (size_t)g.np * s.Co * g.Kp * sizeof(uint16_t) + (size_t)v_elems(g, nb) * sizeof(uint16_t) +
         (size_t)m_elems(g, s.Co, nb) * sizeof(float);
}

void conv2d_winograd_bf16(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                          bool accumulate, size_t budget) {
  if (!winograd_eligible(s, w)) fail("internal error: conv2d_winograd_bf16 called for an ineligible convolution");
#if OBORO_WINOGRAD_X86
  if (!winograd_available()) fail("internal error: conv2d_winograd_bf16 needs an AVX-512 BF16 CPU");
  const Geo g = geometry(s);
  const int nb_max = band_rows(g, s, budget);
  std::unique_ptr<uint16_t[]> U(new uint16_t[(size_t)g.np * s.Co * g.Kp]);
  std::unique_ptr<uint16_t[]> V(new uint16_t[(size_t)v_elems(g, nb_max)]());  // zeroed: a half-used last panel
  std::unique_ptr<float[]> M(new float[(size_t)m_elems(g, s.Co, nb_max)]);
  const uint16_t* wd = static_cast<const uint16_t*>(w.data);
  parallel_for(s.Co, [&](int64_t c0, int64_t c1) {
    if (s.up2) transform_weights<true>(U.get(), wd, s.Ci, s.Co, g, c0, c1);
    else transform_weights<false>(U.get(), wd, s.Ci, s.Co, g, c0, c1);
  }, 8);
  const int64_t plane_in = (int64_t)s.H * s.W, plane_out = (int64_t)g.Ho * g.Wo;
  const int64_t mchunks = (s.Co + kMC - 1) / kMC;
  for (int bi = 0; bi < s.B; ++bi) {
    const float* xb = x + bi * s.Ci * plane_in;
    float* yb = y + bi * s.Co * plane_out;
    for (int ty0 = 0; ty0 < g.nty; ty0 += nb_max) {
      const int nb = std::min(nb_max, g.nty - ty0);
      const int64_t Tb = (int64_t)nb * g.ntxp, P = panels_of(Tb), groups = (P + kPG - 1) / kPG;
      transform_input(V.get(), xb, s, g, ty0, nb);
      parallel_for(g.np * mchunks * groups, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int pi = (int)(t / (mchunks * groups));
          const int m0 = (int)(t / groups % mchunks) * kMC, p0 = (int)(t % groups) * kPG;
          const int rows = std::min(kMC, s.Co - m0);
          const int ncols = (int)std::min<int64_t>((int64_t)kPG * kPanel, Tb - (int64_t)p0 * kPanel);
          gemm_bf16_packed(rows, ncols, g.K2, U.get() + ((size_t)pi * s.Co + m0) * g.Kp, (size_t)g.Kp,
                           V.get() + ((size_t)pi * P + p0) * g.K2 * 64,
                           M.get() + ((size_t)pi * s.Co + m0) * Tb + (int64_t)p0 * kPanel, (size_t)Tb, false);
        }
      }, 1);
      transform_output(yb, M.get(), b, s, g, ty0, nb, accumulate);
    }
  }
#else
  (void)y, (void)x, (void)b, (void)accumulate, (void)budget;
  fail("internal error: conv2d_winograd_bf16 needs an AVX-512 BF16 CPU");
#endif
}

void conv2d_winograd_reference(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                               bool accumulate) {
  if (!winograd_eligible(s, w)) fail("internal error: conv2d_winograd_reference called for an ineligible convolution");
  const Geo g = geometry(s);
  const int ih = s.in_h(), iw = s.in_w();
  const uint16_t* wd = static_cast<const uint16_t*>(w.data);
  std::vector<float> U((size_t)s.Co * s.Ci * 16);  // [co][ci][pos], rounded to BF16
  for (int co = 0; co < s.Co; ++co)
    for (int ci = 0; ci < s.Ci; ++ci) {
      float gk[9], u[16];
      for (int k = 0; k < 9; ++k) gk[k] = bf16_to_f32(wd[((size_t)co * s.Ci + ci) * 9 + k]);
      weight_tile(gk, u);
      for (int p = 0; p < 16; ++p) U[((size_t)co * s.Ci + ci) * 16 + p] = bf16_round(u[p]);
    }
  const int64_t tiles = (int64_t)g.nty * g.ntx;
  std::vector<float> V((size_t)s.Ci * tiles * 16);  // [ci][tile][pos], rounded to BF16
  auto at = [&](const float* xb, int ci, int iy, int ix) -> float {  // the conv input, zero outside
    if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) return 0.f;
    return xb[((size_t)ci * s.H + (s.up2 ? iy / 2 : iy)) * s.W + (s.up2 ? ix / 2 : ix)];
  };
  for (int bi = 0; bi < s.B; ++bi) {
    const float* xb = x + (int64_t)bi * s.Ci * s.H * s.W;
    float* yb = y + (int64_t)bi * s.Co * g.Ho * g.Wo;
    for (int ci = 0; ci < s.Ci; ++ci)
      for (int ty = 0; ty < g.nty; ++ty)
        for (int tx = 0; tx < g.ntx; ++tx) {
          float d[16], v[16];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) d[4 * i + j] = at(xb, ci, 2 * ty - 1 + i, 2 * tx - 1 + j);
          input_tile(d, v);
          for (int p = 0; p < 16; ++p) V[(((size_t)ci * tiles) + (int64_t)ty * g.ntx + tx) * 16 + p] = bf16_round(v[p]);
        }
    for (int co = 0; co < s.Co; ++co)
      for (int ty = 0; ty < g.nty; ++ty)
        for (int tx = 0; tx < g.ntx; ++tx) {
          double m[16] = {}, yv[4];
          for (int ci = 0; ci < s.Ci; ++ci) {
            const float* u = &U[((size_t)co * s.Ci + ci) * 16];
            const float* v = &V[(((size_t)ci * tiles) + (int64_t)ty * g.ntx + tx) * 16];
            for (int p = 0; p < 16; ++p) m[p] += (double)u[p] * v[p];
          }
          output_tile(m, yv);
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {
              const int oy = 2 * ty + i, ox = 2 * tx + j;
              if (oy >= g.Ho || ox >= g.Wo) continue;
              float& o = yb[((size_t)co * g.Ho + oy) * g.Wo + ox];
              const double val = yv[2 * i + j] + (b ? (double)b[co] : 0.0);
              o = (float)(accumulate ? (double)o + val : val);
            }
        }
  }
}

}  // namespace oboro::cpu
