// ProfilingBackend: a decorator over any Backend that forwards every call unchanged and accumulates, per op,
// the number of calls, the wall time and (for the GEMM-like ops: linear, attention, conv2d) the FLOPs done.
// Outputs are bitwise those of the wrapped backend: the decorator touches no data.
//
//   ProfilingBackend prof(be);        // be: the backend the command line chose
//   DiT model(cfg, prof);              // models take a Backend&
//   model.forward(...);
//   for (const auto& s : prof.stats()) ...   // op name, calls, seconds, flops
//
// Timing is host wall time around each call (a CUDA backend would need a synchronise; the CPU backend is
// synchronous). Extending it when Backend gains a virtual: add one override that wraps the forward in
// `timed("op_name", flops, [&] { ... })` (flops 0 when not counted). A new pure virtual is caught by the
// compiler (this class is final and instantiated); a new virtual WITH a default body is not — without an
// override here the default runs on the decorator instead of the wrapped backend's implementation.
// Calls may come from several threads (stats are mutex-guarded); per-op time is then summed across them.
#pragma once
#include "ops/backend.h"
#include <chrono>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace oboro {

class ProfilingBackend final : public Backend {
 public:
  struct OpStat {
    std::string op;
    int64_t calls = 0;
    double seconds = 0, flops = 0;
  };

  explicit ProfilingBackend(Backend& inner) : in_(inner) {}
  Backend& inner() { return in_; }

  // Per-op totals since the last reset(), in first-call order.
  const std::vector<OpStat>& stats() const { return stats_; }
  void reset();
  double total_seconds() const;
  double total_flops() const;
  int64_t total_calls() const;
  // Allocation accounting (alloc/free through this backend): bytes live now and the peak since reset_alloc().
  size_t live_bytes() const { return live_bytes_; }
  size_t peak_bytes() const { return peak_bytes_; }
  void reset_alloc_peak() { peak_bytes_ = live_bytes_; }
  // `enabled(false)` forwards without timing (e.g. during warm-up).
  void set_enabled(bool on) { enabled_ = on; }

  // A table: op, calls, ms, % of `step_seconds` (the total of the ops when 0), GFLOP/s; sorted by time.
  std::string table(double step_seconds = 0) const { return format_table(stats_, step_seconds); }
  static std::string format_table(const std::vector<OpStat>& stats, double step_seconds = 0);

  const char* name() const override { return in_.name(); }
  void set_matmul_precision(MatmulPrecision p) override { in_.set_matmul_precision(p); }
  MatmulPrecision matmul_precision() const override { return in_.matmul_precision(); }

  void* alloc_bytes(size_t bytes, const char* what) override;
  void free_bytes(void* p) override;
  void register_host(const void* p, size_t bytes, const char* what) override { in_.register_host(p, bytes, what); }
  void unregister_host(const void* p) override { in_.unregister_host(p); }
  void zero_bytes(void* p, size_t n) override;
  void copy_bytes(void* dst, const void* src, size_t n) override;
  void upload_bytes(void* dst, const void* host, size_t n) override;
  void download_bytes(void* host, const void* src, size_t n) override;
  void add_inplace(float* y, const float* x, size_t n) override;
  void axpy(float* y, const float* x, float a, size_t n) override;

  void linear_forward(float* y, const float* x, const float* w, const float* b, int M, int K, int N) override;
  void linear_forward_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N) override;
  void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int M, int K,
                       int N) override;

  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* gamma, int M, int D, float eps) override;
  void rmsnorm_backward(float* dx, float* dgamma, const float* dy, const float* x, const float* gamma,
                        const float* rstd, int M, int D) override;
  void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                         int M, int D, float eps) override;
  void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                          const float* mean, const float* rstd, int M, int D) override;

  void silu_forward(float* y, const float* x, size_t n) override;
  void silu_backward(float* dx, const float* dy, const float* x, size_t n) override;
  void gelu_tanh_forward(float* y, const float* x, size_t n) override;
  void gelu_tanh_backward(float* dx, const float* dy, const float* x, size_t n) override;
  void swiglu_forward(float* y, const float* a, const float* b, size_t n) override;
  void swiglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) override;
  void tanh_forward(float* y, const float* x, size_t n) override;

  void modulate_forward(float* y, const float* x, const float* s, int ld_s, int B, int S, int D) override;
  void modulate_backward(float* dx, float* ds, const float* dy, const float* x, const float* s, int ld_s, int B, int S,
                         int D) override;
  void gate_residual_forward(float* h, const float* y, const float* g, int ld_g, int B, int S, int D) override;
  void gate_residual_backward(float* dy, float* dg, const float* dh, const float* y, const float* g, int ld_g, int B,
                              int S, int D) override;

  void rope_forward(float* x, const float* cos, const float* sin, int B, int S, int H, int dh) override;
  void rmsnorm_modulate_forward(float* y, float* rstd, const float* x, const float* gamma, const float* s, int ld_s,
                                int B, int S, int D, float eps) override;
  void rmsnorm_gate_residual_forward(float* h, const float* y, const float* gamma, const float* g, int ld_g, int B,
                                     int S, int D, float eps) override;
  void layernorm_rope_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma,
                              const float* beta, const float* cos, const float* sin, int B, int S, int H, int dh,
                              float eps) override;
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int S, int H, int dh) override;

  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const float* key_valid,
                         int B, int S, int H, int dh, float scale, const float* rel_bias,
                         AttnPrecision prec) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* o, const float* lse, const float* key_valid, int B, int S,
                          int H, int dh, float scale, const float* rel_bias, float* d_rel_bias) override;

  void embedding_forward(float* out, const float* table, const int32_t* ids, int N, int D) override;
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int D) override;
  void bucket_bias_forward(float* bias, const float* table, const int32_t* bucket, int n, int H) override;
  void bucket_bias_backward(float* dtable, const float* dbias, const int32_t* bucket, int n, int H) override;
  void geglu_forward(float* y, const float* a, const float* b, size_t n) override;
  void geglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) override;

  void patchify(float* tokens, const float* x, int B, int C, int h, int w, int p) override;
  void unpatchify(float* x, const float* tokens, int B, int C, int h, int w, int p) override;
  void patchify_backward(float* dx, const float* dtokens, int B, int C, int h, int w, int p) override;
  void unpatchify_backward(float* dtokens, const float* dx, int B, int C, int h, int w, int p) override;

  void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period) override;

  void icfm_pair(float* t, float* xt, float* u, const float* x1, int B, int64_t n, const IcfmDraw& d) override;
  void mse_forward(double* loss, const float* pred, const float* target, size_t n) override;
  void mse_backward(float* dpred, const float* pred, const float* target, size_t n, float dloss) override;
  void sum_squares(double* out, const float* x, size_t n, bool accumulate) override;
  void adamw_update(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n,
                    const AdamWUpdate& u) override;
  void ema_update(float* ema, const float* p, size_t n, float decay) override;
  void euler_cfg_step(float* x, const float* vc, const float* vu, float s, float dt, size_t n) override;
  void flow_interpolate(float* x, const float* x1, float t, size_t n) override;
  void inpaint_blend(float* x, const float* noise, const float* x1, const float* mask, float t, size_t n) override;
  void mask_rows(float* x, const float* mask, int rows, int D) override;
  void text_image_key_valid(float* kv, const float* txt_mask, int B, int L, int N) override;
  void fill(float* x, float value, size_t n) override;

  void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s,
                      bool accumulate) override;
  void conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s,
                        bool accumulate) override;
  void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G,
                         float eps, bool silu) override;
  void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W) override;
  void transpose_forward(float* y, const float* x, int B, int R, int C) override;

  // FLOP formulas (multiply-add = 2), public so benches and tests count the same way.
  static double linear_flops(int M, int K, int N) { return 2.0 * M * K * N; }
  // QKᵀ and PV over all heads (masked keys counted: the kernels do not skip them).
  static double attention_flops(int B, int S, int H, int dh) { return 4.0 * B * H * (double)S * S * dh; }
  static double conv2d_flops(const Conv2dShape& s) {
    return 2.0 * s.B * s.Co * (double)s.out_h() * s.out_w() * s.Ci * s.kh * s.kw;
  }

 private:
  template <class F>
  auto timed(const char* op, double flops, F&& f) {
    if (!enabled_) return f();
    const auto t0 = std::chrono::steady_clock::now();
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      record(op, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), flops);
    } else {
      auto r = f();
      record(op, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), flops);
      return r;
    }
  }
  void record(const char* op, double seconds, double flops);

  Backend& in_;
  bool enabled_ = true;
  std::vector<OpStat> stats_;
  std::vector<const char*> keys_;  // op name pointers, parallel to stats_ (string literals: pointer compare first)
  std::unordered_map<const void*, size_t> sizes_;
  mutable std::mutex mu_;  // record() and the allocation map may be reached from several threads
  size_t live_bytes_ = 0, peak_bytes_ = 0;
};

}  // namespace oboro
