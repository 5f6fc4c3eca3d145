// Default implementations of the fused inference ops (ops/backend.h): the compositions they stand for, so a
// backend without fused kernels runs them unchanged. Scratch buffers come from the backend itself.
#include "ops/backend.h"
#include <vector>

namespace oboro {

void Backend::rmsnorm_modulate_forward(float* y, float* rstd, const float* x, const float* gamma, const float* s,
                                       int ld_s, int B, int S, int D, float eps) {
  const size_t M = (size_t)B * S;
  Buffer scratch = rstd ? Buffer() : alloc(M, DType::F32, "rmsnorm_modulate scratch");
  float* r = rstd ? rstd : scratch.f32();
  rmsnorm_forward(y, r, x, gamma, (int)M, D, eps);
  modulate_forward(y, y, s, ld_s, B, S, D);  // elementwise, in place
}

void Backend::rmsnorm_gate_residual_forward(float* h, const float* y, const float* gamma, const float* g, int ld_g,
                                            int B, int S, int D, float eps) {
  const size_t M = (size_t)B * S;
  Buffer n = alloc(M * D, DType::F32, "rmsnorm_gate_residual scratch"), r = alloc(M, DType::F32, "rmsnorm scratch");
  rmsnorm_forward(n.f32(), r.f32(), y, gamma, (int)M, D, eps);
  gate_residual_forward(h, n.f32(), g, ld_g, B, S, D);
}

void Backend::layernorm_rope_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma,
                                     const float* beta, const float* cos, const float* sin, int B, int S, int H, int dh,
                                     float eps) {
  const size_t M = (size_t)B * S;
  Buffer ms = mean ? Buffer() : alloc(M, DType::F32, "layernorm scratch");
  Buffer rs = rstd ? Buffer() : alloc(M, DType::F32, "layernorm scratch");
  float* m = mean ? mean : ms.f32();
  float* r = rstd ? rstd : rs.f32();
  layernorm_forward(y, m, r, x, gamma, beta, (int)M, H * dh, eps);
  rope_forward(y, cos, sin, B, S, H, dh);
}

}  // namespace oboro
