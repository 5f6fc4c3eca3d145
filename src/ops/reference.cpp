// Naive reference ops (see reference.h): written from the formulas in spec §2-§3 with double
// accumulation, no tiling, no threads and no calls into the fast kernels.
#include "ops/reference.h"
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace oboro::ref {

void linear(float* y, const float* x, const float* w, const float* b, int M, int K, int N) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = b ? (double)b[n] : 0.0;
      for (int k = 0; k < K; ++k) acc += (double)x[(size_t)m * K + k] * w[(size_t)n * K + k];
      y[(size_t)m * N + n] = (float)acc;
    }
}

void linear_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N) {
  if (w.fmt == WFormat::F32) return linear(y, x, w.f32(), b, M, K, N);
  if (w.fmt == WFormat::Q8_0) {
    const int nb = K / kQ8Block;
    std::vector<int8_t> xq((size_t)K);
    std::vector<float> xd((size_t)nb);
    const int8_t* wq = static_cast<const int8_t*>(w.data);
    for (int m = 0; m < M; ++m) {
      quantize_row_q8_0(x + (size_t)m * K, K, xq.data(), xd.data());
      for (int n = 0; n < N; ++n) {
        double acc = 0;
        for (int bl = 0; bl < nb; ++bl) {
          long long dot = 0;
          for (int i = 0; i < kQ8Block; ++i)
            dot += (long long)xq[(size_t)bl * kQ8Block + i] * wq[(size_t)n * K + (size_t)bl * kQ8Block + i];
          acc += (double)xd[bl] * (double)w.scale[(size_t)n * nb + bl] * (double)dot;
        }
        y[(size_t)m * N + n] = (float)(acc + (b ? (double)b[n] : 0.0));
      }
    }
    return;
  }
  // Weights exactly as stored (f8 without its scale), activations as the kernels see them.
  std::vector<float> wf((size_t)N * K);
  WeightView unscaled = w;
  float s = 1.f;
  if (w.fmt == WFormat::F8) {
    static const float one = 1.f;
    s = w.scale[0];
    unscaled.scale = &one;
  }
  dequantize_weight(unscaled, wf.data());
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) {
        float xv = x[(size_t)m * K + k];
        if (w.fmt != WFormat::F16) xv = bf16_to_f32(f32_to_bf16(xv));
        acc += (double)xv * wf[(size_t)n * K + k];
      }
      y[(size_t)m * N + n] = (float)((double)s * acc + (b ? (double)b[n] : 0.0));
    }
}

void rmsnorm(float* y, const float* x, const float* gamma, int M, int D, float eps) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + (size_t)m * D;
    double ss = 0;
    for (int i = 0; i < D; ++i) ss += (double)xr[i] * xr[i];
    double inv = 1.0 / std::sqrt(ss / D + (double)eps);
    for (int i = 0; i < D; ++i) y[(size_t)m * D + i] = (float)((double)gamma[i] * xr[i] * inv);
  }
}

void layernorm(float* y, const float* x, const float* gamma, const float* beta, int M, int D, float eps) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + (size_t)m * D;
    double mu = 0;
    for (int i = 0; i < D; ++i) mu += xr[i];
    mu /= D;
    double var = 0;
    for (int i = 0; i < D; ++i) var += ((double)xr[i] - mu) * ((double)xr[i] - mu);
    var /= D;
    double inv = 1.0 / std::sqrt(var + (double)eps);
    for (int i = 0; i < D; ++i) {
      double v = ((double)xr[i] - mu) * inv;
      if (gamma) v *= gamma[i];
      if (beta) v += beta[i];
      y[(size_t)m * D + i] = (float)v;
    }
  }
}

static double silu_d(double x) { return x / (1.0 + std::exp(-x)); }

void silu(float* y, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = (float)silu_d(x[i]);
}

void gelu_tanh(float* y, const float* x, size_t n) {
  const double c = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < n; ++i) {
    double v = x[i];
    y[i] = (float)(0.5 * v * (1.0 + std::tanh(c * (v + 0.044715 * v * v * v))));
  }
}

void swiglu(float* y, const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = (float)(silu_d(a[i]) * (double)b[i]);
}

void modulate(float* y, const float* x, const float* s, int ld_s, int B, int S, int D) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < S; ++t)
      for (int i = 0; i < D; ++i) {
        size_t o = ((size_t)b * S + t) * D + i;
        y[o] = (float)((double)x[o] * (1.0 + (double)s[(size_t)b * ld_s + i]));
      }
}

void gate_residual(float* h, const float* y, const float* g, int ld_g, int B, int S, int D) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < S; ++t)
      for (int i = 0; i < D; ++i) {
        size_t o = ((size_t)b * S + t) * D + i;
        h[o] = (float)((double)h[o] + std::tanh((double)g[(size_t)b * ld_g + i]) * (double)y[o]);
      }
}

void rope2d(float* x, const int* rows, const int* cols, int B, int S, int H, int dh, float theta) {
  const int quarter = dh / 4, half = dh / 2, D = H * dh;
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < S; ++s)
      for (int h = 0; h < H; ++h)
        for (int p = 0; p < half; ++p) {
          int k = p < quarter ? p : p - quarter;
          double omega = std::pow((double)theta, -4.0 * k / dh);
          double ang = (p < quarter ? (double)rows[s] : (double)cols[s]) * omega;
          double c = std::cos(ang), sn = std::sin(ang);
          float* e = x + ((size_t)b * S + s) * D + (size_t)h * dh + 2 * p;
          double a = e[0], bb = e[1];
          e[0] = (float)(a * c - bb * sn);
          e[1] = (float)(a * sn + bb * c);
        }
}

namespace {
// Softmax probabilities P(S,S) of one (b, h) pair with −inf on masked keys; a row whose keys are
// all masked gets P = 0 (so its output is 0).
void attention_probs(std::vector<double>& P, const float* q, const float* k, const float* key_valid, int b, int h,
                     int S, int H, int dh, float scale, const float* rel_bias) {
  const int D = H * dh;
  const double ninf = -std::numeric_limits<double>::infinity();
  P.assign((size_t)S * S, 0.0);
  for (int i = 0; i < S; ++i) {
    const float* qi = q + ((size_t)b * S + i) * D + (size_t)h * dh;
    double* row = P.data() + (size_t)i * S;
    double mx = ninf;
    for (int j = 0; j < S; ++j) {
      if (key_valid && key_valid[(size_t)b * S + j] == 0.f) { row[j] = ninf; continue; }
      const float* kj = k + ((size_t)b * S + j) * D + (size_t)h * dh;
      double dot = 0;
      for (int d = 0; d < dh; ++d) dot += (double)qi[d] * kj[d];
      row[j] = dot * scale;
      if (rel_bias) row[j] += (double)rel_bias[(size_t)h * (2 * S - 1) + (j - i + S - 1)];
      if (row[j] > mx) mx = row[j];
    }
    if (mx == ninf) { for (int j = 0; j < S; ++j) row[j] = 0.0; continue; }
    double sum = 0;
    for (int j = 0; j < S; ++j) { row[j] = std::exp(row[j] - mx); sum += row[j]; }
    for (int j = 0; j < S; ++j) row[j] /= sum;
  }
}
}  // namespace

void attention(float* o, const float* q, const float* k, const float* v, const float* key_valid, int B, int S, int H,
               int dh, float scale, const float* rel_bias) {
  const int D = H * dh;
  std::vector<double> P;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      attention_probs(P, q, k, key_valid, b, h, S, H, dh, scale, rel_bias);
      for (int i = 0; i < S; ++i)
        for (int d = 0; d < dh; ++d) {
          double acc = 0;
          for (int j = 0; j < S; ++j) acc += P[(size_t)i * S + j] * v[((size_t)b * S + j) * D + (size_t)h * dh + d];
          o[((size_t)b * S + i) * D + (size_t)h * dh + d] = (float)acc;
        }
    }
}

// o_i = Σ_j P_ij v_j, P_ij = softmax_j(z_ij), z_ij = scale·q_i·k_j + rel[h][j − i] (masked: −∞).
// dv_j = Σ_i P_ij do_i; dP_ij = do_i·v_j; dz_ij = P_ij (dP_ij − Σ_l P_il dP_il);
// dq_i = scale Σ_j dz_ij k_j; dk_j = scale Σ_i dz_ij q_i; drel[h][n] = Σ_b Σ_{j − i = n} dz_ij.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* key_valid, int B, int S, int H, int dh, float scale,
                        const float* rel_bias, float* d_rel_bias) {
  const int D = H * dh;
  const size_t R = (size_t)2 * S - 1;
  std::vector<double> grel(d_rel_bias ? (size_t)H * R : 0, 0.0);
  std::vector<double> P, dZ((size_t)S * S);
  std::vector<double> gq((size_t)S * dh), gk((size_t)S * dh), gv((size_t)S * dh);
  auto at = [&](const float* t, int b, int s, int h) { return t + ((size_t)b * S + s) * D + (size_t)h * dh; };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      attention_probs(P, q, k, key_valid, b, h, S, H, dh, scale, rel_bias);
      for (int i = 0; i < S; ++i) {
        const float* gi = at(dout, b, i, h);
        double rowdot = 0;
        for (int j = 0; j < S; ++j) {
          const float* vj = at(v, b, j, h);
          double dp = 0;
          for (int d = 0; d < dh; ++d) dp += (double)gi[d] * vj[d];
          dZ[(size_t)i * S + j] = dp;
          rowdot += P[(size_t)i * S + j] * dp;
        }
        for (int j = 0; j < S; ++j) dZ[(size_t)i * S + j] = P[(size_t)i * S + j] * (dZ[(size_t)i * S + j] - rowdot);
        if (d_rel_bias)
          for (int j = 0; j < S; ++j) grel[(size_t)h * R + (j - i + S - 1)] += dZ[(size_t)i * S + j];
      }
      std::fill(gq.begin(), gq.end(), 0.0);
      std::fill(gk.begin(), gk.end(), 0.0);
      std::fill(gv.begin(), gv.end(), 0.0);
      for (int i = 0; i < S; ++i) {
        const float *qi = at(q, b, i, h), *gi = at(dout, b, i, h);
        for (int j = 0; j < S; ++j) {
          const float* kj = at(k, b, j, h);
          double p = P[(size_t)i * S + j], dz = dZ[(size_t)i * S + j];
          for (int d = 0; d < dh; ++d) {
            gv[(size_t)j * dh + d] += p * gi[d];
            gq[(size_t)i * dh + d] += scale * dz * kj[d];
            gk[(size_t)j * dh + d] += scale * dz * qi[d];
          }
        }
      }
      for (int s = 0; s < S; ++s)
        for (int d = 0; d < dh; ++d) {
          size_t off = ((size_t)b * S + s) * D + (size_t)h * dh + d;
          if (dq) dq[off] = (float)gq[(size_t)s * dh + d];
          if (dk) dk[off] = (float)gk[(size_t)s * dh + d];
          if (dv) dv[off] = (float)gv[(size_t)s * dh + d];
        }
    }
  if (d_rel_bias)
    for (size_t i = 0; i < grel.size(); ++i) d_rel_bias[i] = (float)grel[i];
}

void embedding(float* out, const float* table, const int* ids, int N, int D) {
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < D; ++d) out[(size_t)n * D + d] = table[(size_t)ids[n] * D + d];
}

void embedding_backward(float* dtable, const float* dout, const int* ids, int N, int D, int V) {
  std::vector<double> acc((size_t)V * D, 0.0);
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < D; ++d) acc[(size_t)ids[n] * D + d] += dout[(size_t)n * D + d];
  for (size_t i = 0; i < acc.size(); ++i) dtable[i] = (float)acc[i];
}

void geglu(float* y, const float* a, const float* b, size_t n) {
  const double c = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < n; ++i) {
    double v = a[i];
    y[i] = (float)(0.5 * v * (1.0 + std::tanh(c * (v + 0.044715 * v * v * v))) * (double)b[i]);
  }
}

// tokens[b][n = y·(w/p) + x][f = c·p² + i·p + j] = x[b][c][y·p + i][x·p + j]
void patchify(float* tokens, const float* x, int B, int C, int h, int w, int p) {
  const int hp = h / p, wp = w / p, F = C * p * p;
  for (int b = 0; b < B; ++b)
    for (int yy = 0; yy < hp; ++yy)
      for (int xx = 0; xx < wp; ++xx)
        for (int c = 0; c < C; ++c)
          for (int i = 0; i < p; ++i)
            for (int j = 0; j < p; ++j) {
              size_t n = (size_t)yy * wp + xx, f = (size_t)c * p * p + (size_t)i * p + j;
              tokens[((size_t)b * hp * wp + n) * F + f] =
                  x[(((size_t)b * C + c) * h + (size_t)yy * p + i) * w + (size_t)xx * p + j];
            }
}

// out[b] = [cos(scale·t·φ_k) for k < dim/2, sin(scale·t·φ_k) for k < dim/2], φ_k = exp(−ln(max_period)·k/(dim/2)).
void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period) {
  const int half = dim / 2;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < half; ++k) {
      double phi = std::exp(-std::log((double)max_period) * (double)k / (double)half);
      double a = (double)scale * (double)t[b] * phi;
      out[(size_t)b * dim + k] = (float)std::cos(a);
      out[(size_t)b * dim + half + k] = (float)std::sin(a);
    }
}

double mse(const float* pred, const float* target, size_t n) {
  if (n == 0) return 0.0;
  double s = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = (double)pred[i] - (double)target[i];
    s += d * d;
  }
  return s / (double)n;
}

}  // namespace oboro::ref
