// Default implementations of the fused inference ops (ops/backend.h): the compositions they stand for, so a
// backend without fused kernels runs them unchanged. Scratch buffers come from the backend itself.
#include "ops/backend.h"
#include <vector>

namespace oboro {

void Backend::rmsnorm_modulate_forward(float* y, float* rstd, const float* x, const float* gamma, const float* s,
                                       int ld_s, int B, int S, int D, float eps) {
  const size_t M = (size_t)B * S;
  float* r = rstd ? rstd : alloc(M);
  rmsnorm_forward(y, r, x, gamma, (int)M, D, eps);
  modulate_forward(y, y, s, ld_s, B, S, D);  // elementwise, in place
  if (!rstd) free(r);
}

void Backend::rmsnorm_gate_residual_forward(float* h, const float* y, const float* gamma, const float* g, int ld_g,
                                            int B, int S, int D, float eps) {
  const size_t M = (size_t)B * S;
  float* n = alloc(M * D);
  float* r = alloc(M);
  rmsnorm_forward(n, r, y, gamma, (int)M, D, eps);
  gate_residual_forward(h, n, g, ld_g, B, S, D);
  free(r);
  free(n);
}

void Backend::layernorm_rope_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma,
                                     const float* beta, const float* cos, const float* sin, int B, int S, int H, int dh,
                                     float eps) {
  const size_t M = (size_t)B * S;
  float* m = mean ? mean : alloc(M);
  float* r = rstd ? rstd : alloc(M);
  layernorm_forward(y, m, r, x, gamma, beta, (int)M, H * dh, eps);
  rope_forward(y, cos, sin, B, S, H, dh);
  if (!mean) free(m);
  if (!rstd) free(r);
}

}  // namespace oboro
