// See checked_backend.h. Layout: a region table (base → size, name, host or poisoned), the op guard that checks
// and unpoisons an op's arguments for the duration of the op, the fault handler, then one forwarding override per
// Backend op listing its pointer arguments by name.
#include "ops/checked_backend.h"
#include "core/error.h"
#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <vector>

namespace oboro {
namespace {

struct Region {
  uintptr_t base = 0;
  size_t bytes = 0;   // requested size
  size_t mapped = 0;  // page-rounded (0 for wrapped host memory)
  const char* what = "";
  bool host = false;  // wrapped host memory: checked, never poisoned
  int open = 0;       // > 0 while an op uses it
};

struct Arg {
  const char* name;
  const void* p;
};

class CheckedBackend;
std::atomic<CheckedBackend*> g_instances[8];
struct sigaction g_previous_segv;
std::once_flag g_handler_once;

size_t page_size() {
  static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
  return p;
}

class CheckedBackend final : public Backend {
 public:
  explicit CheckedBackend(Backend& in) : in_(in) {
    std::call_once(g_handler_once, install_handler);
    for (auto& slot : g_instances) {
      CheckedBackend* none = nullptr;
      if (slot.compare_exchange_strong(none, this)) break;
    }
  }
  ~CheckedBackend() override {
    for (auto& slot : g_instances) {
      CheckedBackend* me = this;
      slot.compare_exchange_strong(me, nullptr);
    }
  }

  const char* name() const override { return "checked"; }

  // Fault handler lookup (no locking: a best-effort diagnosis just before exiting).
  const Region* region_at(uintptr_t a) const {
    auto it = regions_.upper_bound(a);
    if (it == regions_.begin()) return nullptr;
    --it;
    const Region& r = it->second;
    return a < r.base + std::max(r.bytes, r.mapped) ? &r : nullptr;
  }

  // ---- memory ----
  void* alloc_bytes(size_t bytes, const char* what) override {
    const size_t ps = page_size(), mapped = std::max(ps, (bytes + ps - 1) / ps * ps);
    void* p = mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("checked backend: out of memory allocating ", bytes >> 20, " MiB for ", what);
    std::lock_guard<std::mutex> lk(mu_);
    regions_[(uintptr_t)p] = Region{(uintptr_t)p, bytes, mapped, what, false, 0};
    return p;
  }
  void free_bytes(void* p) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = regions_.find((uintptr_t)p);
    if (it == regions_.end() || it->second.host)
      fail("checked backend: free of ", p, ", which is not a buffer this backend allocated");
    munmap(p, it->second.mapped);
    regions_.erase(it);
  }
  void register_host(const void* p, size_t bytes, const char* what) override {
    std::lock_guard<std::mutex> lk(mu_);
    regions_[(uintptr_t)p] = Region{(uintptr_t)p, bytes, 0, what, true, 0};
  }
  void unregister_host(const void* p) override {
    std::lock_guard<std::mutex> lk(mu_);
    regions_.erase((uintptr_t)p);
  }
  void upload_bytes(void* d, const void* h, size_t n) override {
    Guard guard_(*this, "upload", {});
    guard_.range("dst", d, n);
    in_.upload_bytes(d, h, n);
  }
  void download_bytes(void* h, const void* s, size_t n) override {
    Guard guard_(*this, "download", {});
    guard_.range("src", s, n);
    in_.download_bytes(h, s, n);
  }
  void copy_bytes(void* d, const void* s, size_t n) override {
    Guard guard_(*this, "copy", {});
    guard_.range("dst", d, n);
    guard_.range("src", s, n);
    in_.copy_bytes(d, s, n);
  }
  void zero_bytes(void* p, size_t n) override {
    Guard guard_(*this, "zero", {});
    guard_.range("p", p, n);
    in_.zero_bytes(p, n);
  }
  void add_inplace(float* y, const float* x, size_t n) override {
    Guard guard_(*this, "add_inplace", {{"y", y}, {"x", x}});
    in_.add_inplace(y, x, n);
  }
  void axpy(float* y, const float* x, float a, size_t n) override {
    Guard guard_(*this, "axpy", {{"y", y}, {"x", x}});
    in_.axpy(y, x, a, n);
  }
  void set_matmul_precision(MatmulPrecision p) override { in_.set_matmul_precision(p); }
  MatmulPrecision matmul_precision() const override { return in_.matmul_precision(); }

  // ---- ops: check the pointer arguments, then forward ----
  void linear_forward(float* y, const float* x, const float* w, const float* b, int M, int K, int N) override {
    Guard guard_(*this, "linear_forward", {{"y", y}, {"x", x}, {"w", w}, {"b", b}});
    in_.linear_forward(y, x, w, b, M, K, N);
  }
  void linear_forward_w(float* y, const float* x, const WeightView& w, const float* b, int M, int K, int N) override {
    Guard guard_(*this, "linear_forward_w", {{"y", y}, {"x", x}, {"w.data", w.data}, {"w.scale", w.scale}, {"b", b}});
    in_.linear_forward_w(y, x, w, b, M, K, N);
  }
  void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int M, int K, int N) override {
    Guard guard_(*this, "linear_backward", {{"dx", dx}, {"dw", dw}, {"db", db}, {"dy", dy}, {"x", x}, {"w", w}});
    in_.linear_backward(dx, dw, db, dy, x, w, M, K, N);
  }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* gamma, int M, int D, float eps) override {
    Guard guard_(*this, "rmsnorm_forward", {{"y", y}, {"rstd", rstd}, {"x", x}, {"gamma", gamma}});
    in_.rmsnorm_forward(y, rstd, x, gamma, M, D, eps);
  }
  void rmsnorm_backward(float* dx, float* dgamma, const float* dy, const float* x, const float* gamma, const float* rstd, int M, int D) override {
    Guard guard_(*this, "rmsnorm_backward", {{"dx", dx}, {"dgamma", dgamma}, {"dy", dy}, {"x", x}, {"gamma", gamma}, {"rstd", rstd}});
    in_.rmsnorm_backward(dx, dgamma, dy, x, gamma, rstd, M, D);
  }
  void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma, const float* beta, int M, int D, float eps) override {
    Guard guard_(*this, "layernorm_forward", {{"y", y}, {"mean", mean}, {"rstd", rstd}, {"x", x}, {"gamma", gamma}, {"beta", beta}});
    in_.layernorm_forward(y, mean, rstd, x, gamma, beta, M, D, eps);
  }
  void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma, const float* mean, const float* rstd, int M, int D) override {
    Guard guard_(*this, "layernorm_backward", {{"dx", dx}, {"dgamma", dgamma}, {"dbeta", dbeta}, {"dy", dy}, {"x", x}, {"gamma", gamma}, {"mean", mean}, {"rstd", rstd}});
    in_.layernorm_backward(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, M, D);
  }
  void silu_forward(float* y, const float* x, size_t n) override {
    Guard guard_(*this, "silu_forward", {{"y", y}, {"x", x}});
    in_.silu_forward(y, x, n);
  }
  void silu_backward(float* dx, const float* dy, const float* x, size_t n) override {
    Guard guard_(*this, "silu_backward", {{"dx", dx}, {"dy", dy}, {"x", x}});
    in_.silu_backward(dx, dy, x, n);
  }
  void gelu_tanh_forward(float* y, const float* x, size_t n) override {
    Guard guard_(*this, "gelu_tanh_forward", {{"y", y}, {"x", x}});
    in_.gelu_tanh_forward(y, x, n);
  }
  void gelu_tanh_backward(float* dx, const float* dy, const float* x, size_t n) override {
    Guard guard_(*this, "gelu_tanh_backward", {{"dx", dx}, {"dy", dy}, {"x", x}});
    in_.gelu_tanh_backward(dx, dy, x, n);
  }
  void swiglu_forward(float* y, const float* a, const float* b, size_t n) override {
    Guard guard_(*this, "swiglu_forward", {{"y", y}, {"a", a}, {"b", b}});
    in_.swiglu_forward(y, a, b, n);
  }
  void swiglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) override {
    Guard guard_(*this, "swiglu_backward", {{"da", da}, {"db", db}, {"dy", dy}, {"a", a}, {"b", b}});
    in_.swiglu_backward(da, db, dy, a, b, n);
  }
  void tanh_forward(float* y, const float* x, size_t n) override {
    Guard guard_(*this, "tanh_forward", {{"y", y}, {"x", x}});
    in_.tanh_forward(y, x, n);
  }
  void modulate_forward(float* y, const float* x, const float* s, int ld_s, int B, int S, int D) override {
    Guard guard_(*this, "modulate_forward", {{"y", y}, {"x", x}, {"s", s}});
    in_.modulate_forward(y, x, s, ld_s, B, S, D);
  }
  void modulate_backward(float* dx, float* ds, const float* dy, const float* x, const float* s, int ld_s, int B, int S, int D) override {
    Guard guard_(*this, "modulate_backward", {{"dx", dx}, {"ds", ds}, {"dy", dy}, {"x", x}, {"s", s}});
    in_.modulate_backward(dx, ds, dy, x, s, ld_s, B, S, D);
  }
  void gate_residual_forward(float* h, const float* y, const float* g, int ld_g, int B, int S, int D) override {
    Guard guard_(*this, "gate_residual_forward", {{"h", h}, {"y", y}, {"g", g}});
    in_.gate_residual_forward(h, y, g, ld_g, B, S, D);
  }
  void gate_residual_backward(float* dy, float* dg, const float* dh, const float* y, const float* g, int ld_g, int B, int S, int D) override {
    Guard guard_(*this, "gate_residual_backward", {{"dy", dy}, {"dg", dg}, {"dh", dh}, {"y", y}, {"g", g}});
    in_.gate_residual_backward(dy, dg, dh, y, g, ld_g, B, S, D);
  }
  void rmsnorm_modulate_forward(float* y, float* rstd, const float* x, const float* gamma, const float* s, int ld_s, int B, int S, int D, float eps) override {
    Guard guard_(*this, "rmsnorm_modulate_forward", {{"y", y}, {"rstd", rstd}, {"x", x}, {"gamma", gamma}, {"s", s}});
    in_.rmsnorm_modulate_forward(y, rstd, x, gamma, s, ld_s, B, S, D, eps);
  }
  void rmsnorm_gate_residual_forward(float* h, const float* y, const float* gamma, const float* g, int ld_g, int B, int S, int D, float eps) override {
    Guard guard_(*this, "rmsnorm_gate_residual_forward", {{"h", h}, {"y", y}, {"gamma", gamma}, {"g", g}});
    in_.rmsnorm_gate_residual_forward(h, y, gamma, g, ld_g, B, S, D, eps);
  }
  void layernorm_rope_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma, const float* beta, const float* cos, const float* sin, int B, int S, int H, int dh, float eps) override {
    Guard guard_(*this, "layernorm_rope_forward", {{"y", y}, {"mean", mean}, {"rstd", rstd}, {"x", x}, {"gamma", gamma}, {"beta", beta}, {"cos", cos}, {"sin", sin}});
    in_.layernorm_rope_forward(y, mean, rstd, x, gamma, beta, cos, sin, B, S, H, dh, eps);
  }
  void rope_forward(float* x, const float* cos, const float* sin, int B, int S, int H, int dh) override {
    Guard guard_(*this, "rope_forward", {{"x", x}, {"cos", cos}, {"sin", sin}});
    in_.rope_forward(x, cos, sin, B, S, H, dh);
  }
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int S, int H, int dh) override {
    Guard guard_(*this, "rope_backward", {{"dx", dx}, {"cos", cos}, {"sin", sin}});
    in_.rope_backward(dx, cos, sin, B, S, H, dh);
  }
  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const float* key_valid, int B, int S, int H, int dh, float scale, const float* rel_bias, AttnPrecision prec) override {
    Guard guard_(*this, "attention_forward", {{"o", o}, {"lse", lse}, {"q", q}, {"k", k}, {"v", v}, {"key_valid", key_valid}, {"rel_bias", rel_bias}});
    in_.attention_forward(o, lse, q, k, v, key_valid, B, S, H, dh, scale, rel_bias, prec);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v, const float* o, const float* lse, const float* key_valid, int B, int S, int H, int dh, float scale, const float* rel_bias, float* d_rel_bias) override {
    Guard guard_(*this, "attention_backward", {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dout", dout}, {"q", q}, {"k", k}, {"v", v}, {"o", o}, {"lse", lse}, {"key_valid", key_valid}, {"rel_bias", rel_bias}, {"d_rel_bias", d_rel_bias}});
    in_.attention_backward(dq, dk, dv, dout, q, k, v, o, lse, key_valid, B, S, H, dh, scale, rel_bias, d_rel_bias);
  }
  void embedding_forward(float* out, const float* table, const int32_t* ids, int N, int D) override {
    Guard guard_(*this, "embedding_forward", {{"out", out}, {"table", table}, {"ids", ids}});
    in_.embedding_forward(out, table, ids, N, D);
  }
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int D) override {
    Guard guard_(*this, "embedding_backward", {{"dtable", dtable}, {"dout", dout}, {"ids", ids}});
    in_.embedding_backward(dtable, dout, ids, N, D);
  }
  void bucket_bias_forward(float* bias, const float* table, const int32_t* bucket, int n, int H) override {
    Guard guard_(*this, "bucket_bias_forward", {{"bias", bias}, {"table", table}, {"bucket", bucket}});
    in_.bucket_bias_forward(bias, table, bucket, n, H);
  }
  void bucket_bias_backward(float* dtable, const float* dbias, const int32_t* bucket, int n, int H) override {
    Guard guard_(*this, "bucket_bias_backward", {{"dtable", dtable}, {"dbias", dbias}, {"bucket", bucket}});
    in_.bucket_bias_backward(dtable, dbias, bucket, n, H);
  }
  void geglu_forward(float* y, const float* a, const float* b, size_t n) override {
    Guard guard_(*this, "geglu_forward", {{"y", y}, {"a", a}, {"b", b}});
    in_.geglu_forward(y, a, b, n);
  }
  void geglu_backward(float* da, float* db, const float* dy, const float* a, const float* b, size_t n) override {
    Guard guard_(*this, "geglu_backward", {{"da", da}, {"db", db}, {"dy", dy}, {"a", a}, {"b", b}});
    in_.geglu_backward(da, db, dy, a, b, n);
  }
  void patchify(float* tokens, const float* x, int B, int C, int h, int w, int p) override {
    Guard guard_(*this, "patchify", {{"tokens", tokens}, {"x", x}});
    in_.patchify(tokens, x, B, C, h, w, p);
  }
  void unpatchify(float* x, const float* tokens, int B, int C, int h, int w, int p) override {
    Guard guard_(*this, "unpatchify", {{"x", x}, {"tokens", tokens}});
    in_.unpatchify(x, tokens, B, C, h, w, p);
  }
  void patchify_backward(float* dx, const float* dtokens, int B, int C, int h, int w, int p) override {
    Guard guard_(*this, "patchify_backward", {{"dx", dx}, {"dtokens", dtokens}});
    in_.patchify_backward(dx, dtokens, B, C, h, w, p);
  }
  void unpatchify_backward(float* dtokens, const float* dx, int B, int C, int h, int w, int p) override {
    Guard guard_(*this, "unpatchify_backward", {{"dtokens", dtokens}, {"dx", dx}});
    in_.unpatchify_backward(dtokens, dx, B, C, h, w, p);
  }
  void timestep_embedding(float* out, const float* t, int B, int dim, float scale, float max_period) override {
    Guard guard_(*this, "timestep_embedding", {{"out", out}, {"t", t}});
    in_.timestep_embedding(out, t, B, dim, scale, max_period);
  }
  void icfm_pair(float* t, float* xt, float* u, const float* x1, int B, int64_t n, const IcfmDraw& d) override {
    Guard guard_(*this, "icfm_pair", {{"t", t}, {"xt", xt}, {"u", u}, {"x1", x1}});
    in_.icfm_pair(t, xt, u, x1, B, n, d);
  }
  void mse_forward(double* loss, const float* pred, const float* target, size_t n) override {
    Guard guard_(*this, "mse_forward", {{"loss", loss}, {"pred", pred}, {"target", target}});
    in_.mse_forward(loss, pred, target, n);
  }
  void mse_backward(float* dpred, const float* pred, const float* target, size_t n, float dloss) override {
    Guard guard_(*this, "mse_backward", {{"dpred", dpred}, {"pred", pred}, {"target", target}});
    in_.mse_backward(dpred, pred, target, n, dloss);
  }
  void sum_squares(double* out, const float* x, size_t n, bool accumulate) override {
    Guard guard_(*this, "sum_squares", {{"out", out}, {"x", x}});
    in_.sum_squares(out, x, n, accumulate);
  }
  void adamw_update(float* p, const float* grad, float* m, float* v, const uint8_t* decay, size_t n, const AdamWUpdate& u) override {
    Guard guard_(*this, "adamw_update", {{"p", p}, {"grad", grad}, {"m", m}, {"v", v}, {"decay", decay}});
    in_.adamw_update(p, grad, m, v, decay, n, u);
  }
  void ema_update(float* ema, const float* p, size_t n, float decay) override {
    Guard guard_(*this, "ema_update", {{"ema", ema}, {"p", p}});
    in_.ema_update(ema, p, n, decay);
  }
  void euler_cfg_step(float* x, const float* v_cond, const float* v_uncond, float cfg_scale, float dt, size_t n) override {
    Guard guard_(*this, "euler_cfg_step", {{"x", x}, {"v_cond", v_cond}, {"v_uncond", v_uncond}});
    in_.euler_cfg_step(x, v_cond, v_uncond, cfg_scale, dt, n);
  }
  void flow_interpolate(float* x, const float* x1, float t, size_t n) override {
    Guard guard_(*this, "flow_interpolate", {{"x", x}, {"x1", x1}});
    in_.flow_interpolate(x, x1, t, n);
  }
  void inpaint_blend(float* x, const float* noise, const float* x1, const float* mask, float t, size_t n) override {
    Guard guard_(*this, "inpaint_blend", {{"x", x}, {"noise", noise}, {"x1", x1}, {"mask", mask}});
    in_.inpaint_blend(x, noise, x1, mask, t, n);
  }
  void mask_rows(float* x, const float* mask, int rows, int D) override {
    Guard guard_(*this, "mask_rows", {{"x", x}, {"mask", mask}});
    in_.mask_rows(x, mask, rows, D);
  }
  void text_image_key_valid(float* key_valid, const float* txt_mask, int B, int L, int N) override {
    Guard guard_(*this, "text_image_key_valid", {{"key_valid", key_valid}, {"txt_mask", txt_mask}});
    in_.text_image_key_valid(key_valid, txt_mask, B, L, N);
  }
  void fill(float* x, float value, size_t n) override {
    Guard guard_(*this, "fill", {{"x", x}});
    in_.fill(x, value, n);
  }
  void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s, bool accumulate) override {
    Guard guard_(*this, "conv2d_forward", {{"y", y}, {"x", x}, {"w", w}, {"b", b}});
    in_.conv2d_forward(y, x, w, b, s, accumulate);
  }
  void conv2d_forward_w(float* y, const float* x, const WeightView& w, const float* b, const Conv2dShape& s, bool accumulate) override {
    Guard guard_(*this, "conv2d_forward_w", {{"y", y}, {"x", x}, {"w.data", w.data}, {"w.scale", w.scale}, {"b", b}});
    in_.conv2d_forward_w(y, x, w, b, s, accumulate);
  }
  void groupnorm_forward(float* y, const float* x, const float* gamma, const float* beta, int B, int C, int HW, int G, float eps, bool silu) override {
    Guard guard_(*this, "groupnorm_forward", {{"y", y}, {"x", x}, {"gamma", gamma}, {"beta", beta}});
    in_.groupnorm_forward(y, x, gamma, beta, B, C, HW, G, eps, silu);
  }
  void upsample_nearest2x_forward(float* y, const float* x, int B, int C, int H, int W) override {
    Guard guard_(*this, "upsample_nearest2x_forward", {{"y", y}, {"x", x}});
    in_.upsample_nearest2x_forward(y, x, B, C, H, W);
  }
  void transpose_forward(float* y, const float* x, int B, int R, int C) override {
    Guard guard_(*this, "transpose_forward", {{"y", y}, {"x", x}});
    in_.transpose_forward(y, x, B, R, C);
  }

 private:
  // Checks an op's pointer arguments and makes their regions accessible until the op returns.
  class Guard {
   public:
    Guard(CheckedBackend& be, const char* op, std::initializer_list<Arg> args) : be_(be), op_(op), lk_(be.mu_) {
      for (const Arg& a : args) add(a.name, a.p, 0);
    }
    void range(const char* name, const void* p, size_t bytes) { add(name, p, bytes); }
    ~Guard() {
      for (Region* r : opened_)
        if (--r->open == 0 && !r->host) mprotect((void*)r->base, r->mapped, PROT_NONE);
    }

   private:
    void add(const char* name, const void* p, size_t bytes) {
      if (!p) return;
      auto it = be_.regions_.upper_bound((uintptr_t)p);
      Region* r = nullptr;
      if (it != be_.regions_.begin()) {
        --it;
        if ((uintptr_t)p < it->second.base + it->second.bytes || (it->second.bytes == 0 && (uintptr_t)p == it->second.base))
          r = &it->second;
      }
      if (!r)
        fail("checked backend: ", op_, ": argument '", name, "' (", p,
             ") is not in any buffer this backend allocated — model, sampler and trainer code must pass "
             "Backend::alloc buffers (or wrap_host weights) to backend ops, and move host data with upload/download");
      if ((uintptr_t)p + bytes > r->base + r->bytes)
        fail("checked backend: ", op_, ": argument '", name, "' spans ", bytes, " bytes from offset ",
             (uintptr_t)p - r->base, " of buffer '", r->what, "' (", r->bytes, " bytes): out of bounds");
      if (std::find(opened_.begin(), opened_.end(), r) != opened_.end()) return;
      if (r->open++ == 0 && !r->host) mprotect((void*)r->base, r->mapped, PROT_READ | PROT_WRITE);
      opened_.push_back(r);
    }
    CheckedBackend& be_;
    const char* op_;
    std::lock_guard<std::mutex> lk_;
    std::vector<Region*> opened_;
  };

  static void on_fault(int sig, siginfo_t* info, void* ctx);
  static void install_handler() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
  }

  Backend& in_;
  std::mutex mu_;
  std::map<uintptr_t, Region> regions_;
};

void CheckedBackend::on_fault(int sig, siginfo_t* info, void* ctx) {
  const uintptr_t a = (uintptr_t)info->si_addr;
  for (auto& slot : g_instances) {
    CheckedBackend* be = slot.load();
    const Region* r = be ? be->region_at(a) : nullptr;
    if (!r || r->host) continue;
    char msg[512];
    const int n = std::snprintf(msg, sizeof msg,
                                "oboro: error: checked backend: host code touched backend buffer '%s' (%zu bytes) at "
                                "offset %zu outside any op, without a download — read it with Backend::download "
                                "(or pass it to an op)\n",
                                r->what, r->bytes, (size_t)(a - r->base));
    if (n > 0) (void)!write(2, msg, (size_t)std::min(n, (int)sizeof msg - 1));
    _exit(3);
  }
  // Not ours: hand the fault to whoever handled it before (a sanitizer, or the default crash).
  sigaction(SIGSEGV, &g_previous_segv, nullptr);
  (void)sig, (void)ctx;
}

}  // namespace

std::unique_ptr<Backend> make_checked_backend(Backend& inner) { return std::make_unique<CheckedBackend>(inner); }

}  // namespace oboro
