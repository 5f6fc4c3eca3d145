// The backend seam. Model, sampler and trainer code hold their tensors in Buffers the backend owns (ops/buffer.h),
// call these methods with the backend's pointers, and never branch on the device; a CUDA backend implements the
// same interface. Host memory crosses only through upload/download.
//
// Conventions (all ops):
//   - row-major, contiguous unless a leading dimension is given; shapes in the comments.
//   - Backward functions ACCUMULATE (+=) into every gradient output (activation and
//     parameter gradients alike); callers zero gradient buffers before a backward pass.
//     A null gradient pointer means "not needed".
//   - Statistics (norms, softmax) are computed in fp32 or better.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>
#include "ops/buffer.h"
#include "ops/weights.h"

namespace oboro {

// Arithmetic of attention_forward's two products (scores Q·Kᵀ and P·V).
//   F32  — F32 throughout (the default: training, the PyTorch-twin tests, every non-low-precision caller).
//   BF16 — inference only: Q·scale (scaled in F32, then rounded), K, V and the softmax probabilities P (after the
//          exp, in [0, 1]) are rounded to BF16 (nearest even) and multiplied with F32 accumulation; the mask, the
//          relative bias and the softmax statistics (running max, sum, lse) stay F32. The sum and lse are those of
//          the rounded P, so each output row is an exactly normalised average of the rounded V rows. The lse it
//          returns is not meant for attention_backward. Results are identical for any thread count; a CPU without
//          avx512_bf16 runs a scalar path with the same arithmetic (agreeing to float rounding).
// The DiT asks for BF16 when it runs inference with low-precision weights (docs/formats.md); a backend without a
// BF16 kernel may compute BF16 requests in F32.
enum class AttnPrecision : uint8_t { F32, BF16 };

// Arithmetic of the F32-weight Linear GEMMs (linear_forward and linear_backward's dx and dw), the backend's
// setting for every call until changed (like torch's float32 matmul precision):
//   F32  — the default; the PyTorch-twin tolerances (1e-5 / 1e-4) hold.
//   BF16 — mixed-precision training (`mixed_precision = "bf16"`): both operands of each of the three GEMMs are
//          rounded to BF16 (nearest even) and multiplied with F32 accumulation; outputs, biases, the bias gradient,
//          master weights, norms, softmax and attention stay F32. Deterministic for any thread count.
// A backend without BF16 GEMMs may ignore it (computing in F32). Use MatmulPrecisionScope to set it.
enum class MatmulPrecision : uint8_t { F32, BF16 };

// NCHW 2D convolution geometry (the VAE, spec §8). Input x(B, Ci, H, W); with up2 the convolution reads the
// nearest-×2 upsampling of x, (B, Ci, 2H, 2W), on the fly (Upsample = nearest ×2 + conv3 without storing the
// 4× larger tensor). Weight w(Co, Ci, kh, kw) (OIHW), zero padding top/bottom/left/right (asymmetric allowed:
// Downsample pads (0,1,0,1) = right 1, bottom 1), stride sh × sw. Output y(B, Co, out_h(), out_w()).
struct Conv2dShape {
  int B = 1, Ci = 0, H = 0, W = 0, Co = 0, kh = 1, kw = 1;
  int sh = 1, sw = 1;
  int pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;
  bool up2 = false;
  int in_h() const { return up2 ? 2 * H : H; }
  int in_w() const { return up2 ? 2 * W : W; }
  int out_h() const { return (in_h() + pad_t + pad_b - kh) / sh + 1; }
  int out_w() const { return (in_w() + pad_l + pad_r - kw) / sw + 1; }
};

// The random draws of one I-CFM pair (Backend::icfm_pair): Philox streams of the step (flow/flow.h, StepRng).
struct IcfmDraw {
  uint64_t seed = 0, time_stream = 0, noise_stream = 0, eps_stream = 0;
  float sigma = 0.f;
  bool logit_normal = false;  // t = sigmoid(z), z ~ N(0, 1); else t ~ U[0, 1]
};

// One AdamW update (Backend::adamw_update); bias corrections precomputed on the host from the step number.
struct AdamWUpdate {
  float lr = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0;
  float step_size = 0;     // lr / (1 − β1^t)
  float inv_sqrt_bc2 = 1;  // 1 / √(1 − β2^t)
  float grad_scale = 1;    // clipping: max_grad_norm / ‖g‖ when above it, else 1
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- Memory (ops/buffer.h) ----
  // n elements of dtype t, zero-initialised, owned by the returned Buffer. `what` names the buffer in the checking
  // backend's messages (e.g. "dit.params"); it must outlive the buffer (a string literal).
  Buffer alloc(size_t n, DType t = DType::F32, const char* what = "buffer");
  // Host memory the caller already holds (weights memory-mapped from a file, or converted at load), wrapped without
  // copying; `keep` keeps it alive as long as the buffer (null: the caller guarantees the lifetime).
  Buffer wrap_host(const void* p, size_t n, DType t, std::shared_ptr<void> keep, const char* what = "host weights");

  // The crossings between host memory and backend buffers, and copies inside the backend (bytes; typed forms below).
  virtual void upload_bytes(void* dst, const void* host, size_t bytes) = 0;
  virtual void download_bytes(void* host, const void* src, size_t bytes) = 0;
  virtual void copy_bytes(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero_bytes(void* p, size_t bytes) = 0;
  template <class T> void upload(T* dst, const T* host, size_t n) { upload_bytes(dst, host, n * sizeof(T)); }
  template <class T> void download(T* host, const T* src, size_t n) { download_bytes(host, src, n * sizeof(T)); }
  template <class T> void copy(T* dst, const T* src, size_t n) { copy_bytes(dst, src, n * sizeof(T)); }
  template <class T> void zero(T* p, size_t n) { zero_bytes(p, n * sizeof(T)); }
  virtual void add_inplace(float* y, const float* x, size_t n) = 0;  // y += x
  virtual void axpy(float* y, const float* x, float a, size_t n) = 0;  // y += a·x (LoRA's alpha/dim scale)

  // Backend side of Buffer (called by alloc / wrap_host and by ~Buffer; decorators forward them).
  virtual void* alloc_bytes(size_t bytes, const char* what) = 0;  // zero-initialised
  virtual void free_bytes(void* p) = 0;
  virtual void register_host(const void* p, size_t bytes, const char* what) { (void)p, (void)bytes, (void)what; }
  virtual void unregister_host(const void* p) { (void)p; }

  // See MatmulPrecision. The default implementation has only F32.
  virtual void set_matmul_precision(MatmulPrecision p) { (void)p; }
  virtual MatmulPrecision matmul_precision() const { return MatmulPrecision::F32; }

  // Linear: y(M,N) = x(M,K) · w(N,K)ᵀ + b(N); b may be null.
  virtual void linear_forward(float* y, const float* x, const float* w, const float* b, int M, int K, int N) = 0;
  // Inference Linear with a weight in any storage format (ops/weights.h, docs/formats.md): y(M,N) = x(M,K)·Wᵀ + b.
  // An F32 view goes through linear_forward unchanged (bitwise the same result); the other formats run kernels
  // that read the stored weight directly. Forward only (low-precision weights are never trained).
  virtual void linear_forward_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N);
  // dx(M,K) += dy·w; dw(N,K) += dyᵀ·x; db(N) += Σ_rows dy.
  virtual void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                               int M, int K, int N) = 0;

  // RMSNorm over rows of width D: y = γ ⊙ x / sqrt(mean(x²) + eps); rstd(M) saved.
  virtual void rmsnorm_forward(float* y, float* rstd, const float* x, const float* gamma, int M, int D, float eps) = 0;
  virtual void rmsnorm_backward(float* dx, float* dgamma, const float* dy, const float* x, const float* gamma,
                                const float* rstd, int M, int D) = 0;

  // LayerNorm over rows: y = (x − μ)·rstd ⊙ γ + β; gamma/beta may be null (no affine).
  virtual void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma,
                                 const float* beta, int M, int D, float eps) = 0;
  virtual void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                  const float* gamma, const float* mean, const float* rstd, int M, int D) = 0;

  // Elementwise activations over n values.
  virtual void silu_forward(float* y, const float* x, size_t n) = 0;
  virtual void silu_backward(float* dx, const float* dy, const float* x, size_t n) = 0;
  virtual void gelu_tanh_forward(float* y, const float* x, size_t n) = 0;
  virtual void gelu_tanh_backward(float* dx, const float* dy, const float* x, size_t n) = 0;
  // SwiGLU: y = silu(a) ⊙ b.
  virtual void swiglu_forward(float* y, const float* a, const float* b, size_t n) = 0;
  virtual void swiglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) = 0;
  virtual void tanh_forward(float* y, const float* x, size_t n) = 0;

  // adaLN modulation, per-sample broadcast over S rows: y(B,S,D) = x ⊙ (1 + s(B,·)), s row stride ld_s.
  virtual void modulate_forward(float* y, const float* x, const float* s, int ld_s, int B, int S, int D) = 0;
  virtual void modulate_backward(float* dx, float* ds, const float* dy, const float* x, const float* s, int ld_s,
                                 int B, int S, int D) = 0;
  // Gated residual: h(B,S,D) += tanh(g(B,·)) ⊙ y. Backward: dy += dh ⊙ tanh g; dg += Σ_S dh ⊙ y ⊙ (1 − tanh² g)
  // (dh itself passes through the residual unchanged).
  virtual void gate_residual_forward(float* h, const float* y, const float* g, int ld_g, int B, int S, int D) = 0;
  virtual void gate_residual_backward(float* dy, float* dg, const float* dh, const float* y, const float* g, int ld_g,
                                      int B, int S, int D) = 0;

  // Fused inference forms (forward only: no intermediate a backward would need is kept). Each equals the
  // composition of the separate ops named below; the defaults compose them, the CPU backend runs one pass per row
  // with the same float expressions, so its results are bitwise those of the composition.
  //   rmsnorm_modulate_forward: y(B,S,D) = rmsnorm(x; γ, eps) ⊙ (1 + s(B,·)) (rmsnorm_forward + modulate_forward);
  //                             rstd (B·S) is written when not null.
  //   rmsnorm_gate_residual_forward: h(B,S,D) += tanh(g(B,·)) ⊙ rmsnorm(y; γ, eps) (rmsnorm_forward +
  //                             gate_residual_forward; the sandwich norm's second half).
  //   layernorm_rope_forward: y(B,S,H·dh) = rope(layernorm(x; γ, β, eps)) (layernorm_forward + rope_forward;
  //                             QK norm then RoPE, one pass); mean, rstd (B·S) are written when not null.
  virtual void rmsnorm_modulate_forward(float* y, float* rstd, const float* x, const float* gamma, const float* s,
                                        int ld_s, int B, int S, int D, float eps);
  virtual void rmsnorm_gate_residual_forward(float* h, const float* y, const float* gamma, const float* g, int ld_g,
                                             int B, int S, int D, float eps);
  virtual void layernorm_rope_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma,
                                      const float* beta, const float* cos, const float* sin, int B, int S, int H,
                                      int dh, float eps);

  // 2D RoPE on x(B,S,D) viewed as (B,S,H,dh), in place. cos/sin tables (S, dh/2): pair p of every head rotates
  // by angle[s][p]. Backward applies the inverse rotation to the gradient (in place on dx).
  virtual void rope_forward(float* x, const float* cos, const float* sin, int B, int S, int H, int dh) = 0;
  virtual void rope_backward(float* dx, const float* cos, const float* sin, int B, int S, int H, int dh) = 0;

  // Attention: q,k,v,o (B,S,H·dh) head h in columns [h·dh, (h+1)·dh). key_valid (B,S) 1/0 or null (all valid).
  // o = softmax(q kᵀ·scale + rel + mask) v, computed tile by tile with an online softmax (memory O(S·dh), not S²);
  // lse (B,H,S) = logsumexp of the biased, masked scores, saved for backward.
  // rel_bias (H, 2S−1) or null: an additive relative-position bias shared by the batch,
  // score_ij = scale·q_i·k_j + rel_bias[h][j − i + S − 1] (T5). Backward accumulates d_rel_bias (H, 2S−1)
  // (summed over the batch, deterministic for any thread count); d_rel_bias may be null. `prec` selects the
  // arithmetic of the forward (AttnPrecision above; F32 unless asked). (The defaults keep older call sites
  // compiling; overrides must not declare their own defaults.)
  virtual void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                                 const float* key_valid, int B, int S, int H, int dh, float scale,
                                 const float* rel_bias = nullptr, AttnPrecision prec = AttnPrecision::F32) = 0;
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                  const float* k, const float* v, const float* o, const float* lse,
                                  const float* key_valid, int B, int S, int H, int dh, float scale,
                                  const float* rel_bias = nullptr, float* d_rel_bias = nullptr) = 0;

  // Embedding lookup: out(N,D) row n = table(V,D) row ids[n]. ids are in an I32 backend buffer
  // (alloc(n, DType::I32), then upload) and must be in range — callers check on the host.
  // Backward: dtable[ids[n]] += dout[n], rows summed in index order (deterministic).
  virtual void embedding_forward(float* out, const float* table, const int32_t* ids, int N, int D) = 0;
  virtual void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int D) = 0;
  // Bucketed relative bias: bias(H,n)[h][k] = table(nb,H)[bucket[k]][h] (T5's shared bucket table to the dense
  // per-offset table attention consumes). Backward: dtable[bucket[k]][h] += dbias[h][k], k in order.
  virtual void bucket_bias_forward(float* bias, const float* table, const int32_t* bucket, int n, int H) = 0;
  virtual void bucket_bias_backward(float* dtable, const float* dbias, const int32_t* bucket, int n, int H) = 0;
  // Gated GELU (T5 v1.1 FFN): y = gelu_tanh(a) ⊙ b; backward da += dy·b·gelu'(a), db += dy·gelu(a).
  virtual void geglu_forward(float* y, const float* a, const float* b, size_t n) = 0;
  virtual void geglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) = 0;

  // Patchify x(B,C,h,w) → tokens(B, (h/p)(w/p), C·p²), feature f = c·p² + i·p + j, token n = y·(w/p) + x.
  virtual void patchify(float* tokens, const float* x, int B, int C, int h, int w, int p) = 0;
  // Inverse (pixel_shuffle). Also the backward of patchify (accumulating), and vice versa.
  virtual void unpatchify(float* x, const float* tokens, int B, int C, int h, int w, int p) = 0;
  virtual void patchify_backward(float* dx, const float* dtokens, int B, int C, int h, int w, int p) = 0;
  virtual void unpatchify_backward(float* dtokens, const float* dx, int B, int C, int h, int w, int p) = 0;

  // Sinusoidal timestep embedding: out(B, dim) = [cos(scale·t·φ_k), sin(scale·t·φ_k)], φ_k = exp(−ln(max_period)·k/(dim/2)).
  virtual void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period) = 0;

  // ---- Training and sampling arithmetic (spec §6): the step's maths stays on the backend. ----
  // I-CFM pair for B samples of n values each, x1 (B,n) the data latents: t (B) ~ U[0,1] (or logit-normal),
  // x0, ε ~ N(0, I), xt = t·x1 + (1 − t)·x0 + σ·ε, u = x1 − x0. The numbers come from the counter-based generator
  // (core/rng.h) keyed by the draw's seed and streams, so every backend draws exactly the same ones.
  virtual void icfm_pair(float* t, float* xt, float* u, const float* x1, int B, int64_t n, const IcfmDraw& d) = 0;
  // MSE: loss[0] (F64) = mean((pred − target)²) over n, summed in a fixed order; backward
  // dpred += 2·(pred − target)/n · dloss.
  virtual void mse_forward(double* loss, const float* pred, const float* target, size_t n) = 0;
  virtual void mse_backward(float* dpred, const float* pred, const float* target, size_t n, float dloss) = 0;
  // out[0] (F64) (+)= Σ x² over n values, in fixed chunks and a fixed order (independent of the thread count).
  virtual void sum_squares(double* out, const float* x, size_t n, bool accumulate) = 0;
  // AdamW over n values with the gradient scaled by u.grad_scale first (global-norm clipping folded in, as llm.c):
  // g = grad·s; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; p −= lr·wd·p where decay[i]; p −= step_size·m /
  // (√v·inv_sqrt_bc2 + eps). decay (n, U8) 1 = weight-decayed.
  virtual void adamw_update(float* p, const float* grad, float* m, float* v, const uint8_t* decay, size_t n,
                            const AdamWUpdate& u) = 0;
  // ema = decay·ema + (1 − decay)·p.
  virtual void ema_update(float* ema, const float* p, size_t n, float decay) = 0;
  // One Euler step of the guided ODE over n values: x += dt·(v_u + s·(v_c − v_u)) (v_uncond null: x += dt·v_c).
  virtual void euler_cfg_step(float* x, const float* v_cond, const float* v_uncond, float cfg_scale, float dt,
                              size_t n) = 0;
  // x = t·x1 + (1 − t)·x: the flow's interpolant (img2img's start from noise x and clean latents x1).
  virtual void flow_interpolate(float* x, const float* x1, float t, size_t n) = 0;
  // Inpainting's re-imposition over n values: x = m·x + (1 − m)·(t·x1 + (1 − t)·noise), m = mask in [0, 1]
  // (1 = repaint, 0 = keep the original x1 noised to flow time t; at t = 1 a kept value becomes x1 exactly).
  virtual void inpaint_blend(float* x, const float* noise, const float* x1, const float* mask, float t, size_t n) = 0;
  // Zero the rows of x (rows, D) whose mask (rows) is 0 (padded text rows).
  virtual void mask_rows(float* x, const float* mask, int rows, int D) = 0;
  // The DiT's key mask over [text ‖ image]: key_valid(B, L+N)[b] = [txt_mask(B,L)[b] != 0 ? 1 : 0, 1 × N].
  virtual void text_image_key_valid(float* key_valid, const float* txt_mask, int B, int L, int N) = 0;
  // x[i] = value for n values.
  virtual void fill(float* x, float value, size_t n) = 0;

  // ---- Image ops for the VAE (spec §8): forward only (the VAE is frozen); NCHW, contiguous. ----
  // y = conv2d(x, w) + b (b may be null), see Conv2dShape; accumulate: y += instead of y =. Memory beyond y is
  // bounded (im2col over row tiles), independent of the image size.
  virtual void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s,
                              bool accumulate) = 0;
  // The same convolution with the weight in any storage format (ops/weights.h): w is the weight viewed as the
  // matrix (Co, K = Ci·kh·kw) (OIHW rows), w.N == Co, w.K == K. An F32 view goes through conv2d_forward unchanged
  // (bitwise the same result); the default implementation refuses the other formats with one error. The CPU backend
  // runs them through the low-precision Linear kernels (bf16: inputs rounded to BF16, F32 accumulation) — bf16
  // 3×3 stride-1 pad-1 convs through Winograd F(2×2, 3×3) instead (the transformed weight and input rounded to
  // BF16) — same bias / accumulate semantics and bounded scratch memory, results independent of the thread count.
  virtual void conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                                bool accumulate);
  // GroupNorm over x(B, C, HW): G groups of C/G consecutive channels, statistics (fp32 or better) over the
  // group's (C/G)·HW values, y = (x − μ)·rstd·γ[c] + β[c], rstd = 1/sqrt(var + eps) (biased variance);
  // silu: y = swish(y) fused. y may equal x.
  virtual void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C,
                                 int HW, int G, float eps, bool silu) = 0;
  // Nearest-neighbour ×2: y(B, C, 2H, 2W)[b][c][y][x] = x[b][c][y/2][x/2].
  virtual void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W) = 0;
  // Batched transpose: y(B, C, R)[b][c][r] = x(B, R, C)[b][r][c] (NCHW ↔ token-major for attention).
  virtual void transpose_forward(float* y, const float* x, int B, int R, int C) = 0;
};

// Sets a backend's matmul precision for a scope and restores the previous one.
class MatmulPrecisionScope {
 public:
  MatmulPrecisionScope(Backend& be, MatmulPrecision p) : be_(be), prev_(be.matmul_precision()) {
    be.set_matmul_precision(p);
  }
  ~MatmulPrecisionScope() { be_.set_matmul_precision(prev_); }
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  Backend& be_;
  MatmulPrecision prev_;
};

// A whole F32 buffer downloaded to the host (checkpoints, logs, images: the explicit crossing).
inline std::vector<float> download_all(const Buffer& b) {
  std::vector<float> h(b.size());
  if (!b.empty()) b.backend()->download(h.data(), b.f32(), h.size());
  return h;
}
// A host vector uploaded into a new F32 buffer of `be`.
inline Buffer upload_new(Backend& be, const std::vector<float>& h, const char* what) {
  Buffer b = be.alloc(h.size(), DType::F32, what);
  if (!h.empty()) be.upload(b.f32(), h.data(), h.size());
  return b;
}

// The CPU backend (OpenBLAS GEMM, thread pool for everything else). Chosen once, by the command line
// (src/cli/backend_choice.h); library code takes a Backend& and never calls this.
Backend& cpu_backend();

}  // namespace oboro
