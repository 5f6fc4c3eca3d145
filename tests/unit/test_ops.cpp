// Op tests: every Backend op of cpu_backend() against the naive ref:: implementations
// (forward), against central finite differences of L = Σ y ⊙ r (backward, every input and
// parameter), accumulation semantics (backward twice = 2×), RoPE inverse, patchify ordering,
// attention memory (S = 4096) and thread-count determinism.
#include "core/error.h"
#include "core/threads.h"
#include "ops/backend.h"
#include "ops/reference.h"
#include "ops/rope.h"
#include "op_test_util.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <string>

using namespace oboro;
using namespace oboro::test;

namespace {

constexpr double kFwdTol = 1e-5;      // fast forward vs ref (fp32)
constexpr double kFdTol = 1e-2;       // analytic backward vs central finite differences
constexpr double kAccTol = 1e-6;      // backward twice vs 2 × backward once
constexpr double kAttnBwdTol = 1e-4;  // tiled attention backward vs ref::attention_backward
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

Backend& be() { return cpu_backend(); }

// Worst error seen per check, printed once at the end of the run.
std::map<std::string, double>& worst() {
  static std::map<std::string, double> m;
  return m;
}
void record(const std::string& key, double e) {
  auto it = worst().find(key);
  if (it == worst().end()) worst()[key] = e;
  else it->second = std::max(it->second, e);
}
class ErrorSummary : public ::testing::Environment {
 public:
  void TearDown() override {
    if (worst().empty()) return;
    std::printf("[ op errors ] worst measured error per check:\n");
    for (auto& [k, v] : worst()) std::printf("[ op errors ]   %-34s %.3e\n", k.c_str(), v);
  }
};
[[maybe_unused]] auto* const kSummaryEnv = ::testing::AddGlobalTestEnvironment(new ErrorSummary);

double record_err(const std::string& key, double e) {
  record(key, e);
  return e;
}
// Records the error and expects it ≤ tol; accepts a streamed message like EXPECT_*.
#define EXPECT_ERR_LE(key, err, tol)                                  \
  if (const double e_ = record_err((key), (err)); false) {            \
  } else                                                              \
    EXPECT_LE(e_, (tol)) << "check " << (key) << ": "

// ---------------------------------------------------------------------------------------------
// Memory helpers
TEST(OpsMemory, AllocZeroCopyAddInplace) {
  const size_t n = 40000;
  Buffer pb = be().alloc(n), qb = be().alloc(n);
  float* p = pb.f32();
  float* q = qb.f32();
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(p[i], 0.f) << "alloc must zero-initialise, index " << i;
  Vec a = randn(n, 1), b = randn(n, 2);
  be().upload(p, a.data(), n);
  be().copy(q, p, n);
  Vec back(n);
  be().download(back.data(), q, n);
  EXPECT_TRUE(bitwise_equal(back, a));
  be().upload(q, b.data(), n);
  be().add_inplace(p, q, n);
  be().download(back.data(), p, n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], a[i] + b[i]) << i;
  be().zero(p, n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(p[i], 0.f) << i;
  EXPECT_EQ(pb.size(), n);
  EXPECT_EQ(pb.bytes(), n * sizeof(float));
  EXPECT_THROW(pb.i32(), Error);  // typed: an F32 buffer is not an I32 one
}

// ---------------------------------------------------------------------------------------------
// Linear
TEST(OpsLinear, ForwardMatchesReference) {
  struct Sz { int M, K, N; };
  for (bool bias : {true, false})
    for (Sz s : {Sz{1, 1, 1}, Sz{7, 13, 5}, Sz{33, 70, 45}, Sz{64, 256, 96}}) {
      Vec x = randn((size_t)s.M * s.K, 10), w = randn((size_t)s.N * s.K, 11), b = randn(s.N, 12);
      Vec y((size_t)s.M * s.N, kNaN), yr(y.size());
      be().linear_forward(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, s.M, s.K, s.N);
      ref::linear(yr.data(), x.data(), w.data(), bias ? b.data() : nullptr, s.M, s.K, s.N);
      EXPECT_ERR_LE(bias ? "linear.fwd" : "linear.fwd(nobias)", rel_err(y, yr), kFwdTol)
          << " M=" << s.M << " K=" << s.K << " N=" << s.N;
    }
}

TEST(OpsLinear, BackwardMatchesFiniteDifferences) {
  const int M = 5, K = 7, N = 6;
  for (bool bias : {true, false}) {
    Vec x = randn(M * K, 20), w = randn(N * K, 21), b = randn(N, 22), r = randn(M * N, 23);
    Vec y(M * N);
    auto loss = [&] {
      be().linear_forward(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, M, K, N);
      return dot(y, r);
    };
    Vec dx(M * K, 0.f), dw(N * K, 0.f), db(N, 0.f);
    be().linear_backward(dx.data(), dw.data(), bias ? db.data() : nullptr, r.data(), x.data(), w.data(), M, K, N);
    EXPECT_ERR_LE("linear.bwd.dx", fd_check(x, dx, loss, 1e-2).rel, kFdTol);
    EXPECT_ERR_LE("linear.bwd.dw", fd_check(w, dw, loss, 1e-2).rel, kFdTol);
    if (bias) {
      EXPECT_ERR_LE("linear.bwd.db", fd_check(b, db, loss, 1e-2).rel, kFdTol);
    } else {
      for (float v : db) EXPECT_EQ(v, 0.f);
    }
  }
}

TEST(OpsLinear, BackwardAccumulates) {
  const int M = 9, K = 33, N = 17;
  Vec x = randn(M * K, 30), w = randn(N * K, 31), dy = randn(M * N, 32);
  Vec dx1(M * K, 0.f), dw1(N * K, 0.f), db1(N, 0.f);
  be().linear_backward(dx1.data(), dw1.data(), db1.data(), dy.data(), x.data(), w.data(), M, K, N);
  Vec dx2(M * K, 0.f), dw2(N * K, 0.f), db2(N, 0.f);
  for (int t = 0; t < 2; ++t)
    be().linear_backward(dx2.data(), dw2.data(), db2.data(), dy.data(), x.data(), w.data(), M, K, N);
  EXPECT_ERR_LE("linear.accumulate", rel_err(dx2, scaled(dx1, 2.f)), kAccTol);
  EXPECT_ERR_LE("linear.accumulate", rel_err(dw2, scaled(dw1, 2.f)), kAccTol);
  EXPECT_ERR_LE("linear.accumulate", rel_err(db2, scaled(db1, 2.f)), kAccTol);
  // Null gradient pointers are skipped; the others are unaffected.
  Vec dw3(N * K, 0.f);
  be().linear_backward(nullptr, dw3.data(), nullptr, dy.data(), x.data(), w.data(), M, K, N);
  EXPECT_ERR_LE("linear.accumulate", rel_err(dw3, dw1), kAccTol);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm
TEST(OpsRmsNorm, ForwardMatchesReference) {
  for (int D : {1, 8, 37, 128, 1536}) {
    const int M = 19;
    Vec x = randn((size_t)M * D, 40, 2.f, 0.3f), g = randn(D, 41, 0.5f, 1.f);
    Vec y((size_t)M * D, kNaN), yr(y.size()), rstd(M, kNaN);
    be().rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), M, D, 1e-5f);
    ref::rmsnorm(yr.data(), x.data(), g.data(), M, D, 1e-5f);
    EXPECT_ERR_LE("rmsnorm.fwd", rel_err(y, yr), kFwdTol) << "D=" << D;
    Vec rr(M);
    for (int m = 0; m < M; ++m) {
      double ss = 0;
      for (int i = 0; i < D; ++i) ss += (double)x[(size_t)m * D + i] * x[(size_t)m * D + i];
      rr[m] = (float)(1.0 / std::sqrt(ss / D + 1e-5));
    }
    EXPECT_ERR_LE("rmsnorm.fwd.rstd", rel_err(rstd, rr), kFwdTol);
  }
}

TEST(OpsRmsNorm, BackwardMatchesFiniteDifferences) {
  const int M = 6, D = 24;
  Vec x = randn(M * D, 50, 1.f, 0.2f), g = randn(D, 51, 0.5f, 1.f), r = randn(M * D, 52);
  Vec y(M * D), rstd(M);
  auto loss = [&] {
    be().rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), M, D, 1e-5f);
    return dot(y, r);
  };
  loss();
  Vec dx(M * D, 0.f), dg(D, 0.f);
  be().rmsnorm_backward(dx.data(), dg.data(), r.data(), x.data(), g.data(), rstd.data(), M, D);
  EXPECT_ERR_LE("rmsnorm.bwd.dx", fd_check(x, dx, loss, 1e-2).rel, kFdTol);
  EXPECT_ERR_LE("rmsnorm.bwd.dgamma", fd_check(g, dg, loss, 1e-2).rel, kFdTol);
}

TEST(OpsRmsNorm, BackwardAccumulates) {
  const int M = 40, D = 200;
  Vec x = randn(M * D, 53), g = randn(D, 54, 0.5f, 1.f), dy = randn(M * D, 55), y(M * D), rstd(M);
  be().rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), M, D, 1e-5f);
  Vec dx1(M * D, 0.f), dg1(D, 0.f), dx2(M * D, 0.f), dg2(D, 0.f);
  be().rmsnorm_backward(dx1.data(), dg1.data(), dy.data(), x.data(), g.data(), rstd.data(), M, D);
  for (int t = 0; t < 2; ++t)
    be().rmsnorm_backward(dx2.data(), dg2.data(), dy.data(), x.data(), g.data(), rstd.data(), M, D);
  EXPECT_ERR_LE("rmsnorm.accumulate", rel_err(dx2, scaled(dx1, 2.f)), kAccTol);
  EXPECT_ERR_LE("rmsnorm.accumulate", rel_err(dg2, scaled(dg1, 2.f)), kAccTol);
  Vec dg3(D, 0.f);
  be().rmsnorm_backward(nullptr, dg3.data(), dy.data(), x.data(), g.data(), rstd.data(), M, D);
  EXPECT_TRUE(bitwise_equal(dg3, dg1));
}

// ---------------------------------------------------------------------------------------------
// LayerNorm (affine, no-affine)
TEST(OpsLayerNorm, ForwardMatchesReference) {
  for (bool affine : {true, false})
    for (float eps : {1e-5f, 1e-6f})
      for (int D : {2, 8, 37, 128, 1536}) {
        const int M = 17;
        Vec x = randn((size_t)M * D, 60, 1.5f, 0.7f), g = randn(D, 61, 0.5f, 1.f), b = randn(D, 62, 0.3f);
        Vec y((size_t)M * D, kNaN), yr(y.size()), mean(M, kNaN), rstd(M, kNaN);
        const float* gp = affine ? g.data() : nullptr;
        const float* bp = affine ? b.data() : nullptr;
        be().layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gp, bp, M, D, eps);
        ref::layernorm(yr.data(), x.data(), gp, bp, M, D, eps);
        EXPECT_ERR_LE(affine ? "layernorm.fwd" : "layernorm.fwd(noaffine)", rel_err(y, yr), kFwdTol) << "D=" << D;
        Vec mr(M), rr(M);
        for (int m = 0; m < M; ++m) {
          double mu = 0, var = 0;
          for (int i = 0; i < D; ++i) mu += x[(size_t)m * D + i];
          mu /= D;
          for (int i = 0; i < D; ++i) var += (x[(size_t)m * D + i] - mu) * (x[(size_t)m * D + i] - mu);
          mr[m] = (float)mu;
          rr[m] = (float)(1.0 / std::sqrt(var / D + eps));
        }
        EXPECT_ERR_LE("layernorm.fwd.mean", rel_err(mean, mr), kFwdTol);
        EXPECT_ERR_LE("layernorm.fwd.rstd", rel_err(rstd, rr), kFwdTol);
      }
}

TEST(OpsLayerNorm, BackwardMatchesFiniteDifferences) {
  const int M = 6, D = 24;
  for (bool affine : {true, false}) {
    Vec x = randn(M * D, 70, 1.f, 0.5f), g = randn(D, 71, 0.5f, 1.f), b = randn(D, 72, 0.3f), r = randn(M * D, 73);
    Vec y(M * D), mean(M), rstd(M);
    const float* gp = affine ? g.data() : nullptr;
    auto loss = [&] {
      be().layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), affine ? g.data() : nullptr,
                             affine ? b.data() : nullptr, M, D, 1e-5f);
      return dot(y, r);
    };
    loss();
    Vec dx(M * D, 0.f), dg(D, 0.f), db(D, 0.f);
    be().layernorm_backward(dx.data(), affine ? dg.data() : nullptr, affine ? db.data() : nullptr, r.data(), x.data(),
                            gp, mean.data(), rstd.data(), M, D);
    EXPECT_ERR_LE(affine ? "layernorm.bwd.dx" : "layernorm.bwd.dx(noaffine)", fd_check(x, dx, loss, 1e-2).rel,
                  kFdTol);
    if (affine) {
      EXPECT_ERR_LE("layernorm.bwd.dgamma", fd_check(g, dg, loss, 1e-2).rel, kFdTol);
      EXPECT_ERR_LE("layernorm.bwd.dbeta", fd_check(b, db, loss, 1e-2).rel, kFdTol);
    }
  }
}

TEST(OpsLayerNorm, BackwardAccumulates) {
  const int M = 40, D = 200;
  for (bool affine : {true, false}) {
    Vec x = randn(M * D, 74), g = randn(D, 75, 0.5f, 1.f), b = randn(D, 76), dy = randn(M * D, 77);
    Vec y(M * D), mean(M), rstd(M);
    const float* gp = affine ? g.data() : nullptr;
    be().layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gp, affine ? b.data() : nullptr, M, D, 1e-6f);
    Vec dx1(M * D, 0.f), dg1(D, 0.f), db1(D, 0.f), dx2(M * D, 0.f), dg2(D, 0.f), db2(D, 0.f);
    be().layernorm_backward(dx1.data(), dg1.data(), db1.data(), dy.data(), x.data(), gp, mean.data(), rstd.data(), M,
                            D);
    for (int t = 0; t < 2; ++t)
      be().layernorm_backward(dx2.data(), dg2.data(), db2.data(), dy.data(), x.data(), gp, mean.data(), rstd.data(),
                              M, D);
    EXPECT_ERR_LE("layernorm.accumulate", rel_err(dx2, scaled(dx1, 2.f)), kAccTol);
    EXPECT_ERR_LE("layernorm.accumulate", rel_err(dg2, scaled(dg1, 2.f)), kAccTol);
    EXPECT_ERR_LE("layernorm.accumulate", rel_err(db2, scaled(db1, 2.f)), kAccTol);
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise: SiLU, GELU(tanh), SwiGLU, tanh
TEST(OpsElementwise, ForwardMatchesReference) {
  for (size_t n : {size_t(1), size_t(31), size_t(40001)}) {
    Vec x = randn(n, 80, 3.f), b = randn(n, 81, 2.f);
    Vec y(n, kNaN), yr(n);
    be().silu_forward(y.data(), x.data(), n);
    ref::silu(yr.data(), x.data(), n);
    EXPECT_ERR_LE("silu.fwd", rel_err(y, yr), kFwdTol);
    be().gelu_tanh_forward(y.data(), x.data(), n);
    ref::gelu_tanh(yr.data(), x.data(), n);
    EXPECT_ERR_LE("gelu_tanh.fwd", rel_err(y, yr), kFwdTol);
    be().swiglu_forward(y.data(), x.data(), b.data(), n);
    ref::swiglu(yr.data(), x.data(), b.data(), n);
    EXPECT_ERR_LE("swiglu.fwd", rel_err(y, yr), kFwdTol);
    be().tanh_forward(y.data(), x.data(), n);
    for (size_t i = 0; i < n; ++i) yr[i] = (float)std::tanh((double)x[i]);
    EXPECT_ERR_LE("tanh.fwd", rel_err(y, yr), kFwdTol);
  }
  // Spot values straight from the formulas (guards the reference itself).
  float xs[3] = {-1.f, 0.f, 2.f}, y[3];
  ref::gelu_tanh(y, xs, 3);
  EXPECT_NEAR(y[0], -0.15880800939172324, 1e-6);
  EXPECT_EQ(y[1], 0.f);
  EXPECT_NEAR(y[2], 1.9545976940871754, 1e-6);
  ref::silu(y, xs, 3);
  EXPECT_NEAR(y[0], -0.2689414213699951, 1e-6);
  EXPECT_NEAR(y[2], 1.7615941559557649, 1e-6);
}

TEST(OpsElementwise, BackwardMatchesFiniteDifferences) {
  const size_t n = 301;
  Vec x = randn(n, 90, 2.5f), b = randn(n, 91, 1.5f), r = randn(n, 92), y(n);
  {
    auto loss = [&] { be().silu_forward(y.data(), x.data(), n); return dot(y, r); };
    Vec dx(n, 0.f);
    be().silu_backward(dx.data(), r.data(), x.data(), n);
    EXPECT_ERR_LE("silu.bwd", fd_check(x, dx, loss, 1e-2).rel, kFdTol);
  }
  {
    auto loss = [&] { be().gelu_tanh_forward(y.data(), x.data(), n); return dot(y, r); };
    Vec dx(n, 0.f);
    be().gelu_tanh_backward(dx.data(), r.data(), x.data(), n);
    EXPECT_ERR_LE("gelu_tanh.bwd", fd_check(x, dx, loss, 1e-2).rel, kFdTol);
  }
  {
    auto loss = [&] { be().swiglu_forward(y.data(), x.data(), b.data(), n); return dot(y, r); };
    Vec da(n, 0.f), db(n, 0.f);
    be().swiglu_backward(da.data(), db.data(), r.data(), x.data(), b.data(), n);
    EXPECT_ERR_LE("swiglu.bwd.da", fd_check(x, da, loss, 1e-2).rel, kFdTol);
    EXPECT_ERR_LE("swiglu.bwd.db", fd_check(b, db, loss, 1e-2).rel, kFdTol);
    // One side only (null pointer = not needed).
    Vec da2(n, 0.f), db2(n, 0.f);
    be().swiglu_backward(da2.data(), nullptr, r.data(), x.data(), b.data(), n);
    be().swiglu_backward(nullptr, db2.data(), r.data(), x.data(), b.data(), n);
    EXPECT_TRUE(bitwise_equal(da2, da));
    EXPECT_TRUE(bitwise_equal(db2, db));
  }
}

TEST(OpsElementwise, BackwardAccumulates) {
  const size_t n = 40001;
  Vec x = randn(n, 93, 2.f), b = randn(n, 94), dy = randn(n, 95);
  Vec a1(n, 0.f), a2(n, 0.f);
  be().silu_backward(a1.data(), dy.data(), x.data(), n);
  for (int t = 0; t < 2; ++t) be().silu_backward(a2.data(), dy.data(), x.data(), n);
  EXPECT_ERR_LE("silu.accumulate", rel_err(a2, scaled(a1, 2.f)), kAccTol);
  a1.assign(n, 0.f); a2.assign(n, 0.f);
  be().gelu_tanh_backward(a1.data(), dy.data(), x.data(), n);
  for (int t = 0; t < 2; ++t) be().gelu_tanh_backward(a2.data(), dy.data(), x.data(), n);
  EXPECT_ERR_LE("gelu_tanh.accumulate", rel_err(a2, scaled(a1, 2.f)), kAccTol);
  a1.assign(n, 0.f); a2.assign(n, 0.f);
  Vec b1(n, 0.f), b2(n, 0.f);
  be().swiglu_backward(a1.data(), b1.data(), dy.data(), x.data(), b.data(), n);
  for (int t = 0; t < 2; ++t) be().swiglu_backward(a2.data(), b2.data(), dy.data(), x.data(), b.data(), n);
  EXPECT_ERR_LE("swiglu.accumulate", rel_err(a2, scaled(a1, 2.f)), kAccTol);
  EXPECT_ERR_LE("swiglu.accumulate", rel_err(b2, scaled(b1, 2.f)), kAccTol);
}

// ---------------------------------------------------------------------------------------------
// adaLN modulate and gated residual. The modulation vectors are a column slice of a wider
// (B, 4D) buffer (row stride ld > D), as the DiT block uses them.
TEST(OpsModulate, ForwardMatchesReference) {
  const int B = 3, S = 37, D = 48, ld = 4 * D;
  Vec x = randn((size_t)B * S * D, 100), sbuf = randn((size_t)B * ld, 101, 0.5f);
  const float* s = sbuf.data() + D;  // second chunk
  Vec y(x.size(), kNaN), yr(x.size());
  be().modulate_forward(y.data(), x.data(), s, ld, B, S, D);
  ref::modulate(yr.data(), x.data(), s, ld, B, S, D);
  EXPECT_ERR_LE("modulate.fwd", rel_err(y, yr), kFwdTol);
}

TEST(OpsModulate, BackwardMatchesFiniteDifferences) {
  const int B = 2, S = 5, D = 8, ld = 3 * D, off = D;
  Vec x = randn(B * S * D, 110), sbuf = randn(B * ld, 111, 0.5f), r = randn(B * S * D, 112), y(B * S * D);
  auto loss = [&] {
    be().modulate_forward(y.data(), x.data(), sbuf.data() + off, ld, B, S, D);
    return dot(y, r);
  };
  Vec dx(B * S * D, 0.f), dsbuf(B * ld, 0.f);
  be().modulate_backward(dx.data(), dsbuf.data() + off, r.data(), x.data(), sbuf.data() + off, ld, B, S, D);
  EXPECT_ERR_LE("modulate.bwd.dx", fd_check(x, dx, loss, 1e-2).rel, kFdTol);
  // FD over the whole strided buffer: entries outside the slice must have zero gradient both ways.
  EXPECT_ERR_LE("modulate.bwd.ds", fd_check(sbuf, dsbuf, loss, 1e-2).rel, kFdTol);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < ld; ++c)
      if (c < off || c >= off + D) {
        EXPECT_EQ(dsbuf[(size_t)b * ld + c], 0.f) << "ds written outside its slice";
      }
  // Accumulation.
  Vec dx2(B * S * D, 0.f), ds2(B * ld, 0.f);
  for (int t = 0; t < 2; ++t)
    be().modulate_backward(dx2.data(), ds2.data() + off, r.data(), x.data(), sbuf.data() + off, ld, B, S, D);
  EXPECT_ERR_LE("modulate.accumulate", rel_err(dx2, scaled(dx, 2.f)), kAccTol);
  EXPECT_ERR_LE("modulate.accumulate", rel_err(ds2, scaled(dsbuf, 2.f)), kAccTol);
}

TEST(OpsGateResidual, ForwardMatchesReference) {
  const int B = 3, S = 37, D = 48, ld = 4 * D;
  Vec h0 = randn((size_t)B * S * D, 120), y = randn((size_t)B * S * D, 121), gbuf = randn((size_t)B * ld, 122);
  const float* g = gbuf.data() + 3 * D;
  Vec h = h0, hr = h0;
  be().gate_residual_forward(h.data(), y.data(), g, ld, B, S, D);
  ref::gate_residual(hr.data(), y.data(), g, ld, B, S, D);
  EXPECT_ERR_LE("gate_residual.fwd", rel_err(h, hr), kFwdTol);
}

TEST(OpsGateResidual, BackwardMatchesFiniteDifferences) {
  const int B = 2, S = 5, D = 8, ld = 4 * D, off = 2 * D;
  Vec h0 = randn(B * S * D, 130), y = randn(B * S * D, 131), gbuf = randn(B * ld, 132), r = randn(B * S * D, 133);
  Vec h(B * S * D);
  auto loss = [&] {
    h = h0;
    be().gate_residual_forward(h.data(), y.data(), gbuf.data() + off, ld, B, S, D);
    return dot(h, r);
  };
  Vec dy(B * S * D, 0.f), dgbuf(B * ld, 0.f);
  be().gate_residual_backward(dy.data(), dgbuf.data() + off, r.data(), y.data(), gbuf.data() + off, ld, B, S, D);
  EXPECT_ERR_LE("gate_residual.bwd.dy", fd_check(y, dy, loss, 1e-2).rel, kFdTol);
  EXPECT_ERR_LE("gate_residual.bwd.dg", fd_check(gbuf, dgbuf, loss, 1e-2).rel, kFdTol);
  // The residual input passes the gradient through unchanged: dL/dh0 = r.
  Vec dh0(B * S * D);
  for (size_t i = 0; i < dh0.size(); ++i) dh0[i] = r[i];
  EXPECT_ERR_LE("gate_residual.bwd.dh", fd_check(h0, dh0, loss, 1e-2).rel, kFdTol);
  Vec dy2(B * S * D, 0.f), dg2(B * ld, 0.f);
  for (int t = 0; t < 2; ++t)
    be().gate_residual_backward(dy2.data(), dg2.data() + off, r.data(), y.data(), gbuf.data() + off, ld, B, S, D);
  EXPECT_ERR_LE("gate_residual.accumulate", rel_err(dy2, scaled(dy, 2.f)), kAccTol);
  EXPECT_ERR_LE("gate_residual.accumulate", rel_err(dg2, scaled(dgbuf, 2.f)), kAccTol);
}

// ---------------------------------------------------------------------------------------------
// RoPE 2D. Positions as the DiT uses them: L text tokens at (0,0), then the image grid (y, x).
struct Positions {
  std::vector<int> rows, cols;
};
Positions joint_positions(int L, int hp, int wp) {
  Positions p;
  for (int i = 0; i < L; ++i) { p.rows.push_back(0); p.cols.push_back(0); }
  for (int y = 0; y < hp; ++y)
    for (int x = 0; x < wp; ++x) { p.rows.push_back(y); p.cols.push_back(x); }
  return p;
}

TEST(OpsRope, ForwardMatchesReference) {
  struct Case { int L, hp, wp, H, dh; };
  for (Case c : {Case{3, 3, 5, 3, 4}, Case{3, 3, 5, 2, 8}, Case{4, 6, 4, 3, 24}, Case{2, 4, 7, 2, 64},
                 Case{5, 32, 48, 2, 64}}) {
    const int B = 2;
    Positions pos = joint_positions(c.L, c.hp, c.wp);
    const int S = (int)pos.rows.size(), D = c.H * c.dh;
    std::vector<float> cs, sn;
    rope2d_tables(cs, sn, pos.rows, pos.cols, c.dh, 10000.f);
    ASSERT_EQ(cs.size(), (size_t)S * c.dh / 2);
    Vec x0 = randn((size_t)B * S * D, 140), x = x0, xr = x0;
    be().rope_forward(x.data(), cs.data(), sn.data(), B, S, c.H, c.dh);
    ref::rope2d(xr.data(), pos.rows.data(), pos.cols.data(), B, S, c.H, c.dh, 10000.f);
    EXPECT_ERR_LE("rope.fwd", rel_err(x, xr), kFwdTol) << "S=" << S << " dh=" << c.dh;
    // Text tokens at (0,0) rotate by the identity, exactly.
    for (int b = 0; b < B; ++b)
      for (int s = 0; s < c.L; ++s)
        for (int i = 0; i < D; ++i) {
          size_t o = ((size_t)b * S + s) * D + i;
          ASSERT_EQ(x[o], x0[o]) << "text token moved by RoPE, b=" << b << " s=" << s << " i=" << i;
        }
  }
}

// The reference itself against the spec, worked by hand: ω_0 = 1, so for a token at (row, col) pair 0
// rotates by `row` radians and pair dh/4 by `col` radians; pair 1 by row·θ^(−4/dh).
TEST(OpsRope, ReferenceFollowsSpecFormula) {
  const int dh = 8, H = 2, D = H * dh;
  int rows[1] = {3}, cols[1] = {5};
  Vec x = randn(D, 150), x0 = x;
  ref::rope2d(x.data(), rows, cols, 1, 1, H, dh, 10000.f);
  for (int h = 0; h < H; ++h) {
    auto check = [&](int p, double ang) {
      double a = x0[h * dh + 2 * p], b = x0[h * dh + 2 * p + 1];
      EXPECT_NEAR(x[h * dh + 2 * p], a * std::cos(ang) - b * std::sin(ang), 1e-6) << "pair " << p;
      EXPECT_NEAR(x[h * dh + 2 * p + 1], a * std::sin(ang) + b * std::cos(ang), 1e-6) << "pair " << p;
    };
    check(0, 3.0);
    check(1, 3.0 * std::pow(10000.0, -4.0 / dh));
    check(2, 5.0);
    check(3, 5.0 * std::pow(10000.0, -4.0 / dh));
  }
  std::vector<float> cs, sn;
  EXPECT_THROW(rope2d_tables(cs, sn, {0}, {0}, 6, 10000.f), oboro::Error);
}

TEST(OpsRope, BackwardMatchesFiniteDifferencesAndIsInverse) {
  const int B = 2, H = 2, dh = 8, D = H * dh;
  Positions pos = joint_positions(2, 2, 3);
  const int S = (int)pos.rows.size();
  std::vector<float> cs, sn;
  rope2d_tables(cs, sn, pos.rows, pos.cols, dh, 10000.f);
  Vec x = randn((size_t)B * S * D, 160), r = randn(x.size(), 161), y;
  auto loss = [&] {
    y = x;
    be().rope_forward(y.data(), cs.data(), sn.data(), B, S, H, dh);
    return dot(y, r);
  };
  Vec dx = r;  // backward is in place on dx
  be().rope_backward(dx.data(), cs.data(), sn.data(), B, S, H, dh);
  EXPECT_ERR_LE("rope.bwd", fd_check(x, dx, loss, 1e-2).rel, kFdTol);

  // (d) forward then backward returns the input (large grid, several head dims).
  for (int dh2 : {4, 24, 64}) {
    Positions p2 = joint_positions(4, 20, 30);
    const int S2 = (int)p2.rows.size(), H2 = 3;
    rope2d_tables(cs, sn, p2.rows, p2.cols, dh2, 10000.f);
    Vec x0 = randn((size_t)B * S2 * H2 * dh2, 162), z = x0;
    be().rope_forward(z.data(), cs.data(), sn.data(), B, S2, H2, dh2);
    EXPECT_GT(rel_err(z, x0), 0.1) << "rope_forward did nothing";
    be().rope_backward(z.data(), cs.data(), sn.data(), B, S2, H2, dh2);
    EXPECT_ERR_LE("rope.inverse", rel_err(z, x0), 1e-6) << "dh=" << dh2;
  }
}

// ---------------------------------------------------------------------------------------------
// Attention
enum class Mask { None, Padded, Tile, AllMaskedBatch1 };
const char* mask_name(Mask m) {
  switch (m) {
    case Mask::None: return "none";
    case Mask::Padded: return "padded";
    case Mask::Tile: return "tile";
    default: return "all-masked-batch1";
  }
}

struct Attn {
  int B, S, H, dh;
  float scale;
  Mask mask;
  Vec q, k, v, valid;  // valid empty = no mask
  size_t n() const { return (size_t)B * S * H * dh; }
  const float* kv() const { return valid.empty() ? nullptr : valid.data(); }
};

Attn make_attn(int B, int S, int H, int dh, Mask m, uint64_t seed) {
  Attn a{B, S, H, dh, 1.f / std::sqrt((float)dh), m, {}, {}, {}, {}};
  a.q = randn(a.n(), seed);
  a.k = randn(a.n(), seed + 1);
  a.v = randn(a.n(), seed + 2);
  if (m != Mask::None) {
    a.valid.assign((size_t)B * S, 1.f);
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < S; ++j) {
        float& vj = a.valid[(size_t)b * S + j];
        switch (m) {
          case Mask::Padded:  // batch 0: scattered keys off; later batches: trailing padding
            if (b == 0) vj = (j > 0 && uniform_at(seed, 3, j) < 0.2f) ? 0.f : 1.f;
            else vj = j < S - S / 3 ? 1.f : 0.f;
            break;
          case Mask::Tile:  // batch 0: the whole first 64-key tile masked; batch 1: the second one
            if (b == 0) vj = j < 64 ? 0.f : 1.f;
            else vj = (j >= 64 && j < 128) ? 0.f : 1.f;
            break;
          case Mask::AllMaskedBatch1:
            vj = b == 1 ? 0.f : 1.f;
            break;
          default: break;
        }
      }
  }
  return a;
}

void attn_fwd(const Attn& a, Vec& o, Vec& lse) {
  o.assign(a.n(), kNaN);
  lse.assign((size_t)a.B * a.H * a.S, kNaN);
  be().attention_forward(o.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh,
                         a.scale);
}

// logsumexp of the scaled masked scores, straight from the definition.
Vec reference_lse(const Attn& a) {
  Vec out((size_t)a.B * a.H * a.S);
  const int D = a.H * a.dh;
  for (int b = 0; b < a.B; ++b)
    for (int h = 0; h < a.H; ++h)
      for (int i = 0; i < a.S; ++i) {
        std::vector<double> z;
        for (int j = 0; j < a.S; ++j) {
          if (a.kv() && a.valid[(size_t)b * a.S + j] == 0.f) continue;
          double d = 0;
          for (int e = 0; e < a.dh; ++e)
            d += (double)a.q[((size_t)b * a.S + i) * D + h * a.dh + e] * a.k[((size_t)b * a.S + j) * D + h * a.dh + e];
          z.push_back(d * a.scale);
        }
        double mx = -INFINITY, s = 0;
        for (double zz : z) mx = std::max(mx, zz);
        for (double zz : z) s += std::exp(zz - mx);
        out[((size_t)b * a.H + h) * a.S + i] = z.empty() ? -kInf : (float)(mx + std::log(s));
      }
  return out;
}

double lse_err(const Vec& lse, const Vec& ref) {  // max |Δ| / max(1, |ref|); −inf must match −inf
  double m = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(lse[i])) {
      if (lse[i] != ref[i]) return INFINITY;
      continue;
    }
    m = std::max(m, std::fabs((double)lse[i] - ref[i]) / std::max(1.0, std::fabs((double)ref[i])));
  }
  return m;
}

struct AttnShape { int S, H, dh; };
const AttnShape kAttnShapes[] = {{1, 3, 4}, {5, 2, 8}, {70, 3, 24}, {131, 2, 64}, {70, 2, 4}, {131, 3, 8},
                                 {5, 2, 64}, {1, 2, 24}};

TEST(OpsAttention, ForwardMatchesReference) {
  for (AttnShape sh : kAttnShapes)
    for (Mask m : {Mask::None, Mask::Padded}) {
      Attn a = make_attn(2, sh.S, sh.H, sh.dh, m, 200 + sh.S + sh.dh);
      Vec o, lse, oref(a.n());
      attn_fwd(a, o, lse);
      ref::attention(oref.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
      EXPECT_ERR_LE("attention.fwd", rel_err(o, oref), kFwdTol)
          << "S=" << sh.S << " H=" << sh.H << " dh=" << sh.dh << " mask=" << mask_name(m);
      EXPECT_ERR_LE("attention.fwd.lse", lse_err(lse, reference_lse(a)), kFwdTol)
          << "S=" << sh.S << " dh=" << sh.dh << " mask=" << mask_name(m);
    }
}

TEST(OpsAttention, WholeKeyTileMasked) {
  // S = 131 spans three 64-key tiles and five 32-query tiles; batch 0 masks the first key tile
  // entirely (the online softmax starts on an all −inf block), batch 1 the middle one.
  for (int dh : {8, 24}) {
    Attn a = make_attn(2, 131, 2, dh, Mask::Tile, 300 + dh);
    Vec o, lse, oref(a.n());
    attn_fwd(a, o, lse);
    ref::attention(oref.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
    EXPECT_ERR_LE("attention.fwd(tile-masked)", rel_err(o, oref), kFwdTol) << "dh=" << dh;
    EXPECT_ERR_LE("attention.fwd.lse", lse_err(lse, reference_lse(a)), kFwdTol);
    Vec dout = randn(a.n(), 310), dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f);
    be().attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                            o.data(), lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
    Vec rq(a.n()), rk(a.n()), rv(a.n());
    ref::attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(),
                            a.B, a.S, a.H, a.dh, a.scale);
    EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dq, rq), kAttnBwdTol);
    EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dk, rk), kAttnBwdTol);
    EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dv, rv), kAttnBwdTol);
    // Masked keys get exactly zero gradient.
    const int D = a.H * a.dh;
    for (int b = 0; b < a.B; ++b)
      for (int j = 0; j < a.S; ++j)
        if (a.valid[(size_t)b * a.S + j] == 0.f)
          for (int e = 0; e < D; ++e) {
            size_t i = ((size_t)b * a.S + j) * D + e;
            ASSERT_EQ(dk[i], 0.f);
            ASSERT_EQ(dv[i], 0.f);
          }
  }
}

TEST(OpsAttention, BackwardMatchesReference) {
  for (AttnShape sh : kAttnShapes)
    for (Mask m : {Mask::None, Mask::Padded}) {
      Attn a = make_attn(2, sh.S, sh.H, sh.dh, m, 400 + sh.S + sh.dh);
      Vec o, lse;
      attn_fwd(a, o, lse);
      Vec dout = randn(a.n(), 410), dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f);
      be().attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                              o.data(), lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
      Vec rq(a.n()), rk(a.n()), rv(a.n());
      ref::attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                              a.kv(), a.B, a.S, a.H, a.dh, a.scale);
      const std::string where = "S=" + std::to_string(sh.S) + " H=" + std::to_string(sh.H) +
                                " dh=" + std::to_string(sh.dh) + " mask=" + mask_name(m);
      EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dq, rq), kAttnBwdTol) << "dq " << where;
      EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dk, rk), kAttnBwdTol) << "dk " << where;
      EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dv, rv), kAttnBwdTol) << "dv " << where;
    }
}

// Finite differences of L = Σ o ⊙ r w.r.t. q, k, v, both for the fast kernel and for the reference.
TEST(OpsAttention, BackwardMatchesFiniteDifferences) {
  struct Case { int S, H, dh; Mask m; size_t probe; };
  for (Case c : {Case{1, 3, 4, Mask::None, SIZE_MAX}, Case{5, 2, 8, Mask::Padded, SIZE_MAX},
                 Case{5, 2, 8, Mask::None, SIZE_MAX}, Case{70, 3, 24, Mask::Padded, 40},
                 Case{131, 2, 4, Mask::Tile, 40}}) {
    Attn a = make_attn(2, c.S, c.H, c.dh, c.m, 500 + c.S);
    Vec r = randn(a.n(), 510), o, lse;
    auto loss = [&] {
      attn_fwd(a, o, lse);
      return dot(o, r);
    };
    loss();
    Vec dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f);
    be().attention_backward(dq.data(), dk.data(), dv.data(), r.data(), a.q.data(), a.k.data(), a.v.data(), o.data(),
                            lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
    const std::string where = "S=" + std::to_string(c.S) + " dh=" + std::to_string(c.dh) + " mask=" + mask_name(c.m);
    EXPECT_ERR_LE("attention.bwd.dq", fd_check(a.q, dq, loss, 5e-3, c.probe).rel, kFdTol) << where;
    EXPECT_ERR_LE("attention.bwd.dk", fd_check(a.k, dk, loss, 5e-3, c.probe).rel, kFdTol) << where;
    EXPECT_ERR_LE("attention.bwd.dv", fd_check(a.v, dv, loss, 5e-3, c.probe).rel, kFdTol) << where;
    if (c.S <= 5) {  // the reference backward against FD of the reference forward
      Vec rq(a.n()), rk(a.n()), rv(a.n()), oref(a.n());
      ref::attention_backward(rq.data(), rk.data(), rv.data(), r.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(),
                              a.B, a.S, a.H, a.dh, a.scale);
      auto rloss = [&] {
        ref::attention(oref.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
        return dot(oref, r);
      };
      EXPECT_ERR_LE("ref.attention_backward", fd_check(a.q, rq, rloss, 5e-3).rel, kFdTol) << where;
      EXPECT_ERR_LE("ref.attention_backward", fd_check(a.k, rk, rloss, 5e-3).rel, kFdTol) << where;
      EXPECT_ERR_LE("ref.attention_backward", fd_check(a.v, rv, rloss, 5e-3).rel, kFdTol) << where;
    }
  }
}

TEST(OpsAttention, BackwardAccumulatesAndSkipsNull) {
  Attn a = make_attn(2, 70, 3, 24, Mask::Padded, 600);
  Vec o, lse;
  attn_fwd(a, o, lse);
  Vec dout = randn(a.n(), 601);
  Vec q1(a.n(), 0.f), k1(a.n(), 0.f), v1(a.n(), 0.f), q2(a.n(), 0.f), k2(a.n(), 0.f), v2(a.n(), 0.f);
  auto bwd = [&](float* dq, float* dk, float* dv) {
    be().attention_backward(dq, dk, dv, dout.data(), a.q.data(), a.k.data(), a.v.data(), o.data(), lse.data(), a.kv(),
                            a.B, a.S, a.H, a.dh, a.scale);
  };
  bwd(q1.data(), k1.data(), v1.data());
  bwd(q2.data(), k2.data(), v2.data());
  bwd(q2.data(), k2.data(), v2.data());
  EXPECT_ERR_LE("attention.accumulate", rel_err(q2, scaled(q1, 2.f)), kAccTol);
  EXPECT_ERR_LE("attention.accumulate", rel_err(k2, scaled(k1, 2.f)), kAccTol);
  EXPECT_ERR_LE("attention.accumulate", rel_err(v2, scaled(v1, 2.f)), kAccTol);
  Vec q3(a.n(), 0.f), v3(a.n(), 0.f);
  bwd(q3.data(), nullptr, nullptr);
  bwd(nullptr, nullptr, v3.data());
  EXPECT_TRUE(bitwise_equal(q3, q1));
  EXPECT_TRUE(bitwise_equal(v3, v1));
}

// A sequence whose keys are all masked (degenerate, but must not poison the batch with NaN):
// its output is 0, its lse −inf, its gradients 0; the other sequence is unaffected.
TEST(OpsAttention, FullyMaskedSequenceGivesZeros) {
  Attn a = make_attn(2, 37, 2, 8, Mask::AllMaskedBatch1, 700);
  Vec o, lse, oref(a.n());
  attn_fwd(a, o, lse);
  ref::attention(oref.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
  const size_t half = a.n() / 2;
  for (size_t i = half; i < a.n(); ++i) ASSERT_EQ(o[i], 0.f) << i;
  for (size_t i = lse.size() / 2; i < lse.size(); ++i) ASSERT_EQ(lse[i], -kInf);
  EXPECT_ERR_LE("attention.fwd", rel_err(o, oref), kFwdTol);
  Vec dout = randn(a.n(), 701), dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f);
  be().attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(), o.data(),
                          lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
  for (size_t i = 0; i < a.n(); ++i) {
    ASSERT_TRUE(std::isfinite(dq[i]) && std::isfinite(dk[i]) && std::isfinite(dv[i])) << i;
    if (i >= half) {
      ASSERT_TRUE(dq[i] == 0.f && dk[i] == 0.f && dv[i] == 0.f) << i;
    }
  }
  Vec rq(a.n()), rk(a.n()), rv(a.n());
  ref::attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B,
                          a.S, a.H, a.dh, a.scale);
  EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dq, rq), kAttnBwdTol);
  EXPECT_ERR_LE("attention.bwd.vs_ref", rel_err(dv, rv), kAttnBwdTol);
}

// Padding the key set with masked keys must not change the outputs of the real tokens (spec §3).
TEST(OpsAttention, MaskedPaddingDoesNotChangeOutputs) {
  const int S = 40, pad = 27, H = 2, dh = 8, D = H * dh;
  Attn a = make_attn(1, S, H, dh, Mask::None, 800);
  Attn p = make_attn(1, S + pad, H, dh, Mask::None, 801);  // padded: first S rows copied from a
  p.valid.assign(S + pad, 0.f);
  for (int s = 0; s < S; ++s) {
    p.valid[s] = 1.f;
    for (int e = 0; e < D; ++e) {
      p.q[(size_t)s * D + e] = a.q[(size_t)s * D + e];
      p.k[(size_t)s * D + e] = a.k[(size_t)s * D + e];
      p.v[(size_t)s * D + e] = a.v[(size_t)s * D + e];
    }
  }
  Vec oa, la, op, lp;
  attn_fwd(a, oa, la);
  attn_fwd(p, op, lp);
  op.resize((size_t)S * D);
  EXPECT_ERR_LE("attention.padding_invariance", rel_err(op, oa), 1e-6);
}

// (f) Memory: S = 4096 would need a 64 MiB score matrix per (b, h). The tiled kernels must run,
// match rows computed with a direct per-row softmax, and not grow the peak RSS by anything S×S-sized.
TEST(OpsAttention, LongSequenceNeedsNoSquareBuffer) {
  const int S = 4096, H = 1, dh = 8, B = 1;
  Attn a = make_attn(B, S, H, dh, Mask::None, 900);
  a.valid.assign(S, 1.f);
  for (int j = 4000; j < S; ++j) a.valid[j] = 0.f;  // a padded tail, crossing tile boundaries
  for (int j = 100; j < 164; ++j) a.valid[j] = 0.f;
  Vec o(a.n()), lse(S), dout = randn(a.n(), 901), dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f);
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  be().attention_forward(o.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), a.valid.data(), B, S, H, dh, a.scale);
  be().attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(), o.data(),
                          lse.data(), a.valid.data(), B, S, H, dh, a.scale);
  getrusage(RUSAGE_SELF, &ru1);
  const long grew_kib = ru1.ru_maxrss - ru0.ru_maxrss;
  EXPECT_LT(grew_kib, 32 * 1024) << "peak RSS grew by " << grew_kib << " KiB during S=4096 attention";
  record("attention.S4096.rss_growth_MiB", grew_kib / 1024.0);

  double worst_o = 0, worst_lse = 0, worst_dq = 0;
  for (int i : {0, 1, 31, 32, 63, 64, 130, 2047, 3999, 4000, 4095}) {
    const float* qi = a.q.data() + (size_t)i * dh;
    std::vector<double> z(S), pr(S, 0.0);
    double mx = -INFINITY;
    for (int j = 0; j < S; ++j) {
      if (a.valid[j] == 0.f) { z[j] = -INFINITY; continue; }
      double d = 0;
      for (int e = 0; e < dh; ++e) d += (double)qi[e] * a.k[(size_t)j * dh + e];
      z[j] = d * a.scale;
      mx = std::max(mx, z[j]);
    }
    double sum = 0;
    for (int j = 0; j < S; ++j) if (a.valid[j] != 0.f) sum += (pr[j] = std::exp(z[j] - mx));
    for (int j = 0; j < S; ++j) pr[j] /= sum;
    // o_i and lse_i
    std::vector<double> oi(dh, 0.0);
    for (int j = 0; j < S; ++j)
      for (int e = 0; e < dh; ++e) oi[e] += pr[j] * a.v[(size_t)j * dh + e];
    double num = 0, den = 0;
    for (int e = 0; e < dh; ++e) {
      num += (o[(size_t)i * dh + e] - oi[e]) * (o[(size_t)i * dh + e] - oi[e]);
      den += oi[e] * oi[e];
    }
    worst_o = std::max(worst_o, std::sqrt(num / den));
    worst_lse = std::max(worst_lse, std::fabs(lse[i] - (mx + std::log(sum))) / std::max(1.0, std::fabs(mx)));
    // dq_i = scale Σ_j P_ij (dP_ij − δ_i) k_j, dP_ij = dout_i·v_j, δ_i = Σ_j P_ij dP_ij
    std::vector<double> dp(S, 0.0), g(dh, 0.0);
    double delta = 0;
    for (int j = 0; j < S; ++j) {
      for (int e = 0; e < dh; ++e) dp[j] += (double)dout[(size_t)i * dh + e] * a.v[(size_t)j * dh + e];
      delta += pr[j] * dp[j];
    }
    for (int j = 0; j < S; ++j)
      for (int e = 0; e < dh; ++e) g[e] += a.scale * pr[j] * (dp[j] - delta) * a.k[(size_t)j * dh + e];
    num = den = 0;
    for (int e = 0; e < dh; ++e) {
      num += (dq[(size_t)i * dh + e] - g[e]) * (dq[(size_t)i * dh + e] - g[e]);
      den += g[e] * g[e];
    }
    worst_dq = std::max(worst_dq, std::sqrt(num / den));
  }
  EXPECT_ERR_LE("attention.S4096.fwd_rows", worst_o, kFwdTol);
  EXPECT_ERR_LE("attention.S4096.lse_rows", worst_lse, kFwdTol);
  EXPECT_ERR_LE("attention.S4096.dq_rows", worst_dq, kAttnBwdTol);
  // Masked keys: no gradient.
  for (int j = 4000; j < S; ++j)
    for (int e = 0; e < dh; ++e) ASSERT_EQ(dk[(size_t)j * dh + e], 0.f);
}

// ---------------------------------------------------------------------------------------------
// (g) Determinism across thread counts.
TEST(OpsDeterminism, AttentionAndNormsIndependentOfThreadCount) {
  Attn a = make_attn(2, 70, 3, 24, Mask::Padded, 1000);
  Vec dout = randn(a.n(), 1001);
  const int M = 96, D = 256;
  Vec x = randn((size_t)M * D, 1002), g = randn(D, 1003, 0.5f, 1.f), b = randn(D, 1004), dy = randn((size_t)M * D, 1005);

  struct Out { Vec o, lse, dq, dk, dv, rdx, rdg, ldx, ldg, ldb, ndx; };
  auto run = [&](int threads) {
    ThreadCount tc(threads);
    EXPECT_EQ(num_threads(), threads);
    Out r;
    attn_fwd(a, r.o, r.lse);
    r.dq.assign(a.n(), 0.f); r.dk.assign(a.n(), 0.f); r.dv.assign(a.n(), 0.f);
    be().attention_backward(r.dq.data(), r.dk.data(), r.dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                            r.o.data(), r.lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale);
    Vec y((size_t)M * D), rstd(M), mean(M);
    be().rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), M, D, 1e-5f);
    r.rdx.assign((size_t)M * D, 0.f); r.rdg.assign(D, 0.f);
    be().rmsnorm_backward(r.rdx.data(), r.rdg.data(), dy.data(), x.data(), g.data(), rstd.data(), M, D);
    be().layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), g.data(), b.data(), M, D, 1e-5f);
    r.ldx.assign((size_t)M * D, 0.f); r.ldg.assign(D, 0.f); r.ldb.assign(D, 0.f);
    be().layernorm_backward(r.ldx.data(), r.ldg.data(), r.ldb.data(), dy.data(), x.data(), g.data(), mean.data(),
                            rstd.data(), M, D);
    be().layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), nullptr, nullptr, M, D, 1e-6f);
    r.ndx.assign((size_t)M * D, 0.f);
    be().layernorm_backward(r.ndx.data(), nullptr, nullptr, dy.data(), x.data(), nullptr, mean.data(), rstd.data(), M,
                            D);
    return r;
  };
  const int before = num_threads();
  Out r1 = run(1), r2 = run(2);
  EXPECT_EQ(num_threads(), before) << "thread count not restored";
  EXPECT_TRUE(bitwise_equal(r1.o, r2.o)) << "attention forward output";
  EXPECT_TRUE(bitwise_equal(r1.lse, r2.lse)) << "attention lse";
  EXPECT_TRUE(bitwise_equal(r1.dq, r2.dq)) << "attention dq";
  EXPECT_TRUE(bitwise_equal(r1.dk, r2.dk)) << "attention dk";
  EXPECT_TRUE(bitwise_equal(r1.dv, r2.dv)) << "attention dv";
  EXPECT_TRUE(bitwise_equal(r1.rdx, r2.rdx)) << "rmsnorm dx";
  EXPECT_TRUE(bitwise_equal(r1.rdg, r2.rdg)) << "rmsnorm dgamma";
  EXPECT_TRUE(bitwise_equal(r1.ldx, r2.ldx)) << "layernorm dx";
  EXPECT_TRUE(bitwise_equal(r1.ldg, r2.ldg)) << "layernorm dgamma";
  EXPECT_TRUE(bitwise_equal(r1.ldb, r2.ldb)) << "layernorm dbeta";
  EXPECT_TRUE(bitwise_equal(r1.ndx, r2.ndx)) << "layernorm (no affine) dx";
}

// ---------------------------------------------------------------------------------------------
// Patchify / unpatchify
struct PatchCase { int B, C, h, w, p; };
const PatchCase kPatchCases[] = {{2, 3, 4, 6, 2}, {1, 4, 6, 10, 2}, {2, 3, 5, 7, 1}, {1, 16, 8, 12, 2}, {2, 2, 9, 6, 3}};

TEST(OpsPatchify, MatchesSpecOrderingElementByElement) {
  for (PatchCase c : kPatchCases) {
    const int hp = c.h / c.p, wp = c.w / c.p, F = c.C * c.p * c.p, N = hp * wp;
    const size_t n = (size_t)c.B * c.C * c.h * c.w;
    // Each pixel holds a unique code of its coordinates.
    Vec x(n);
    auto code = [&](int b, int ch, int r, int col) { return (float)(((b * c.C + ch) * c.h + r) * c.w + col); };
    for (int b = 0; b < c.B; ++b)
      for (int ch = 0; ch < c.C; ++ch)
        for (int r = 0; r < c.h; ++r)
          for (int col = 0; col < c.w; ++col) x[(((size_t)b * c.C + ch) * c.h + r) * c.w + col] = code(b, ch, r, col);
    Vec t(n, kNaN), tr(n, kNaN);
    be().patchify(t.data(), x.data(), c.B, c.C, c.h, c.w, c.p);
    ref::patchify(tr.data(), x.data(), c.B, c.C, c.h, c.w, c.p);
    EXPECT_TRUE(bitwise_equal(t, tr)) << "patchify vs ref, p=" << c.p;
    // Walk the pixels: pixel (b, ch, r, col) lands in token n = (r/p)·(w/p) + col/p at feature
    // f = ch·p² + (r%p)·p + col%p.
    for (int b = 0; b < c.B; ++b)
      for (int ch = 0; ch < c.C; ++ch)
        for (int r = 0; r < c.h; ++r)
          for (int col = 0; col < c.w; ++col) {
            int tok = (r / c.p) * wp + col / c.p;
            int f = ch * c.p * c.p + (r % c.p) * c.p + col % c.p;
            ASSERT_EQ(t[((size_t)b * N + tok) * F + f], code(b, ch, r, col))
                << "b=" << b << " c=" << ch << " y=" << r << " x=" << col << " p=" << c.p;
          }
    // Round trips.
    Vec back(n, kNaN);
    be().unpatchify(back.data(), t.data(), c.B, c.C, c.h, c.w, c.p);
    EXPECT_TRUE(bitwise_equal(back, x)) << "unpatchify(patchify(x)) != x";
    Vec tt = randn(n, 1100), xx(n, kNaN), t2(n, kNaN);
    be().unpatchify(xx.data(), tt.data(), c.B, c.C, c.h, c.w, c.p);
    be().patchify(t2.data(), xx.data(), c.B, c.C, c.h, c.w, c.p);
    EXPECT_TRUE(bitwise_equal(t2, tt)) << "patchify(unpatchify(t)) != t";
  }
  // Spec §1: 16 latent channels, p = 2 → 64 features, f = c·4 + i·2 + j.
  Vec x(16 * 2 * 2), t(64);
  for (int i = 0; i < 64; ++i) x[i] = (float)i;  // x[c][i][j] = 4c + 2i + j
  be().patchify(t.data(), x.data(), 1, 16, 2, 2, 2);
  for (int f = 0; f < 64; ++f) EXPECT_EQ(t[f], (float)f);
}

TEST(OpsPatchify, BackwardsMatchFiniteDifferencesAndAccumulate) {
  for (PatchCase c : kPatchCases) {
    const size_t n = (size_t)c.B * c.C * c.h * c.w;
    Vec x = randn(n, 1200), r = randn(n, 1201), y(n);
    // patchify: d/dx Σ patchify(x) ⊙ r
    {
      auto loss = [&] { be().patchify(y.data(), x.data(), c.B, c.C, c.h, c.w, c.p); return dot(y, r); };
      Vec base = randn(n, 1202), dx = base;
      be().patchify_backward(dx.data(), r.data(), c.B, c.C, c.h, c.w, c.p);
      Vec g(n);
      for (size_t i = 0; i < n; ++i) g[i] = dx[i] - base[i];  // accumulated on top of `base`
      EXPECT_ERR_LE("patchify.bwd", fd_check(x, g, loss, 1e-2, 64).rel, kFdTol);
      Vec d1(n, 0.f), d2(n, 0.f);
      be().patchify_backward(d1.data(), r.data(), c.B, c.C, c.h, c.w, c.p);
      for (int k = 0; k < 2; ++k) be().patchify_backward(d2.data(), r.data(), c.B, c.C, c.h, c.w, c.p);
      EXPECT_ERR_LE("patchify.accumulate", rel_err(d2, scaled(d1, 2.f)), kAccTol);
      Vec u(n);
      be().unpatchify(u.data(), r.data(), c.B, c.C, c.h, c.w, c.p);
      EXPECT_TRUE(bitwise_equal(d1, u)) << "patchify_backward != unpatchify into zeros";
    }
    // unpatchify: d/dt Σ unpatchify(t) ⊙ r
    {
      auto loss = [&] { be().unpatchify(y.data(), x.data(), c.B, c.C, c.h, c.w, c.p); return dot(y, r); };
      Vec dt(n, 0.f);
      be().unpatchify_backward(dt.data(), r.data(), c.B, c.C, c.h, c.w, c.p);
      EXPECT_ERR_LE("unpatchify.bwd", fd_check(x, dt, loss, 1e-2, 64).rel, kFdTol);
      Vec d2(n, 0.f);
      for (int k = 0; k < 2; ++k) be().unpatchify_backward(d2.data(), r.data(), c.B, c.C, c.h, c.w, c.p);
      EXPECT_ERR_LE("unpatchify.accumulate", rel_err(d2, scaled(dt, 2.f)), kAccTol);
    }
  }
}

TEST(OpsPatchify, RejectsIndivisibleSizes) {
  Vec x(1 * 3 * 5 * 6), t(x.size());
  EXPECT_THROW(be().patchify(t.data(), x.data(), 1, 3, 5, 6, 2), oboro::Error);
  EXPECT_THROW(be().unpatchify(x.data(), t.data(), 1, 3, 6, 5, 2), oboro::Error);
}

// ---------------------------------------------------------------------------------------------
// Timestep embedding (spec §2.1: t_s = 1000·t, dim 256, φ_k = exp(−ln(10000)·k/128), cos first).
TEST(OpsTimestep, MatchesReferenceAndSpec) {
  for (int dim : {2, 8, 256}) {
    Vec t = {0.f, 0.001f, 0.37f, 0.5f, 1.f};
    const int B = (int)t.size();
    Vec out((size_t)B * dim, kNaN), outr(out.size());
    be().timestep_embedding(out.data(), t.data(), B, dim, 1000.f, 10000.f);
    ref::timestep_embedding(outr.data(), t.data(), B, dim, 1000.f, 10000.f);
    EXPECT_ERR_LE("timestep_embedding.fwd", rel_err(out, outr), kFwdTol) << "dim=" << dim;
    const int half = dim / 2;
    for (int k = 0; k < half; ++k) {  // t = 0: cos half is 1, sin half is 0 (cos first)
      EXPECT_EQ(out[k], 1.f);
      EXPECT_EQ(out[half + k], 0.f);
    }
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < half; ++k) {
        double phi = std::exp(-std::log(10000.0) * k / half), a = 1000.0 * t[b] * phi;
        EXPECT_NEAR(out[(size_t)b * dim + k], std::cos(a), 2e-6);
        EXPECT_NEAR(out[(size_t)b * dim + half + k], std::sin(a), 2e-6);
      }
  }
}

// ---------------------------------------------------------------------------------------------
// MSE
double mse_fwd(const float* p, const float* t, size_t n) {  // the loss lands in a one-value F64 buffer
  double loss = -1;
  be().mse_forward(&loss, p, t, n);
  return loss;
}

TEST(OpsMse, ForwardBackward) {
  for (size_t n : {size_t(1), size_t(17), size_t(4099)}) {
    Vec p = randn(n, 1300), tg = randn(n, 1301);
    const double m = mse_fwd(p.data(), tg.data(), n), mr = ref::mse(p.data(), tg.data(), n);
    EXPECT_ERR_LE("mse.fwd", std::fabs(m - mr) / mr, 1e-12);
  }
  const size_t n = 53;
  const float dloss = 0.7f;
  Vec p = randn(n, 1310), tg = randn(n, 1311);
  auto loss = [&] { return mse_fwd(p.data(), tg.data(), n) * dloss; };
  Vec base = randn(n, 1312), dp = base;
  be().mse_backward(dp.data(), p.data(), tg.data(), n, dloss);
  Vec g(n);
  for (size_t i = 0; i < n; ++i) g[i] = dp[i] - base[i];
  EXPECT_ERR_LE("mse.bwd", fd_check(p, g, loss, 1e-2).rel, kFdTol);
  Vec d1(n, 0.f), d2(n, 0.f);
  be().mse_backward(d1.data(), p.data(), tg.data(), n, dloss);
  for (int k = 0; k < 2; ++k) be().mse_backward(d2.data(), p.data(), tg.data(), n, dloss);
  EXPECT_ERR_LE("mse.accumulate", rel_err(d2, scaled(d1, 2.f)), kAccTol);
  EXPECT_EQ(mse_fwd(p.data(), tg.data(), 0), 0.0);
}

}  // namespace
