#include "ops/cpu/step_ops_cpu.h"
#include "core/rng.h"
#include "core/threads.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace oboro::cpu {

namespace {
constexpr int64_t kChunks = 256;  // fixed reduction chunks, independent of the thread count
}

void icfm_pair(float* t_out, float* xt_out, float* u_out, const float* x1, int B, int64_t n, const IcfmDraw& d) {
  for (int b = 0; b < B; ++b) {
    float t;
    if (!d.logit_normal) {
      t = uniform_at(d.seed, d.time_stream, (uint64_t)b);
    } else {  // logit-normal(0, 1): t = sigmoid(z)
      float z = normal_at(d.seed, d.time_stream, (uint64_t)b);
      t = 1.f / (1.f + std::exp(-z));
    }
    t_out[b] = t;
  }
  const float sigma = d.sigma;
  std::vector<float> x0(n), eps(n);
  for (int b = 0; b < B; ++b) {
    // Each sample's noise is its own block of the stream: independent of the batch layout.
    fill_normal(x0.data(), n, d.seed, d.noise_stream, (uint64_t)b * (uint64_t)n);
    if (sigma != 0.f) fill_normal(eps.data(), n, d.seed, d.eps_stream, (uint64_t)b * (uint64_t)n);
    const float t = t_out[b];
    const float* x = x1 + (size_t)b * n;
    float* xt = xt_out + (size_t)b * n;
    float* u = u_out + (size_t)b * n;
    for (int64_t i = 0; i < n; ++i) {
      xt[i] = t * x[i] + (1.f - t) * x0[i] + (sigma != 0.f ? sigma * eps[i] : 0.f);
      u[i] = x[i] - x0[i];
    }
  }
}

void mse_forward(double* loss, const float* pred, const float* target, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) { double d = (double)pred[i] - target[i]; s += d * d; }
  *loss = n ? s / n : 0.0;
}

void mse_backward(float* dpred, const float* pred, const float* target, size_t n, float dloss) {
  float c = 2.f * dloss / (float)n;
  for (size_t i = 0; i < n; ++i) dpred[i] += c * (pred[i] - target[i]);
}

void sum_squares(double* out, const float* g, size_t n, bool accumulate) {
  std::vector<double> part(kChunks, 0.0);
  parallel_for(kChunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      size_t b = n * c / kChunks, e = n * (c + 1) / kChunks;
      double s = 0;
      for (size_t i = b; i < e; ++i) s += (double)g[i] * g[i];
      part[c] = s;
    }
  });
  double s = 0;
  for (double x : part) s += x;
  *out = accumulate ? *out + s : s;
}

void adamw_update(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWUpdate& u) {
  const float b1 = u.beta1, b2 = u.beta2, eps = u.eps, wd = u.weight_decay, lr = u.lr, gs = u.grad_scale;
  const float step_size = u.step_size, inv_sqrt_bc2 = u.inv_sqrt_bc2;
  parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float gi = gs == 1.f ? g[i] : g[i] * gs;
      m[i] = b1 * m[i] + (1.f - b1) * gi;
      v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
      if (decay[i]) p[i] -= lr * wd * p[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  }, 4096);
}

void ema_update(float* ema, const float* p, size_t n, float decay) {
  parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ema[i] = decay * ema[i] + (1.f - decay) * p[i];
  }, 16384);
}

void euler_cfg_step(float* x, const float* vc, const float* vu, float cfg_scale, float dt, size_t n) {
  for (size_t k = 0; k < n; ++k) {
    float vel = vu ? vu[k] + cfg_scale * (vc[k] - vu[k]) : vc[k];
    x[k] += dt * vel;
  }
}

void flow_interpolate(float* x, const float* x1, float t, size_t n) {
  for (size_t k = 0; k < n; ++k) x[k] = t * x1[k] + (1.f - t) * x[k];
}

void inpaint_blend(float* x, const float* noise, const float* x1, const float* mask, float t, size_t n) {
  for (size_t k = 0; k < n; ++k) {
    const float keep = t * x1[k] + (1.f - t) * noise[k];
    x[k] = mask[k] * x[k] + (1.f - mask[k]) * keep;
  }
}

void mask_rows(float* x, const float* mask, int rows, int D) {
  for (int r = 0; r < rows; ++r)
    if (mask[r] == 0.f) std::fill_n(x + (size_t)r * D, D, 0.f);
}

void text_image_key_valid(float* kv, const float* m, int B, int L, int N) {
  const int S = L + N;
  for (int b = 0; b < B; ++b) {
    for (int s = 0; s < L; ++s) kv[(size_t)b * S + s] = m[(size_t)b * L + s] != 0.f ? 1.f : 0.f;
    std::fill_n(kv + (size_t)b * S + L, N, 1.f);
  }
}

}  // namespace oboro::cpu
