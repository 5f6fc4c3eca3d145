// CPU kernels of the training and sampling arithmetic (Backend::icfm_pair … fill, ops/backend.h): the I-CFM pair,
// MSE, the fixed-order gradient norm, AdamW with the clipping scale folded in, EMA, the Euler/CFG update, the flow
// interpolant and masks. Each is the plain loop it replaces (same float expressions, so the same bits); results do
// not depend on the thread count.
#pragma once
#include "ops/backend.h"

namespace oboro::cpu {

void icfm_pair(float* t, float* xt, float* u, const float* x1, int B, int64_t n, const IcfmDraw& d);
void mse_forward(double* loss, const float* pred, const float* target, size_t n);
void mse_backward(float* dpred, const float* pred, const float* target, size_t n, float dloss);
void sum_squares(double* out, const float* x, size_t n, bool accumulate);
void adamw_update(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWUpdate& u);
void ema_update(float* ema, const float* p, size_t n, float decay);
void euler_cfg_step(float* x, const float* vc, const float* vu, float cfg_scale, float dt, size_t n);
void flow_interpolate(float* x, const float* x1, float t, size_t n);
void inpaint_blend(float* x, const float* noise, const float* x1, const float* mask, float t, size_t n);
void mask_rows(float* x, const float* mask, int rows, int D);
void text_image_key_valid(float* kv, const float* txt_mask, int B, int L, int N);

}  // namespace oboro::cpu
