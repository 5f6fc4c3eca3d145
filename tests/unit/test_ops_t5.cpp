// Op tests for the T5 additions to the Backend: attention with an additive relative-position bias
// (forward vs ref::attention, backward vs ref::attention_backward and central finite differences,
// d_rel_bias included; accumulation; thread-count determinism), embedding lookup, the bucketed
// bias gather and the gated GELU.
#include "core/error.h"
#include "core/threads.h"
#include "ops/backend.h"
#include "ops/reference.h"
#include "op_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <tuple>

using namespace oboro;
using namespace oboro::test;

namespace {

constexpr double kFwdTol = 1e-5;
constexpr double kBwdTol = 1e-4;   // tiled backward vs the double-precision reference
constexpr double kFdTol = 1e-2;    // analytic vs central finite differences (fp32 forward)
constexpr double kAccTol = 1e-6;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

Backend& be() { return cpu_backend(); }

std::map<std::string, double>& worst() {
  static std::map<std::string, double> m;
  return m;
}
class ErrorSummary : public ::testing::Environment {
 public:
  void TearDown() override {
    if (worst().empty()) return;
    std::printf("[ t5 op errors ] worst measured error per check:\n");
    for (auto& [k, v] : worst()) std::printf("[ t5 op errors ]   %-34s %.3e\n", k.c_str(), v);
  }
};
[[maybe_unused]] auto* const kSummaryEnv = ::testing::AddGlobalTestEnvironment(new ErrorSummary);
double rec(const std::string& key, double e) {
  auto it = worst().find(key);
  if (it == worst().end()) worst()[key] = e;
  else it->second = std::max(it->second, e);
  return e;
}

// ---------------------------------------------------------------------------------------------
// Attention with a relative-position bias

struct Attn {
  int B, S, H, dh;
  float scale;
  Vec q, k, v, valid, rel;  // valid empty = no mask; rel (H, 2S−1)
  size_t n() const { return (size_t)B * S * H * dh; }
  size_t nrel() const { return (size_t)H * (2 * S - 1); }
  const float* kv() const { return valid.empty() ? nullptr : valid.data(); }
};

Attn make(int B, int S, int H, int dh, bool padded, float scale, uint64_t seed) {
  Attn a{B, S, H, dh, scale, {}, {}, {}, {}, {}};
  a.q = randn(a.n(), seed);
  a.k = randn(a.n(), seed + 1);
  a.v = randn(a.n(), seed + 2);
  a.rel = randn(a.nrel(), seed + 3, 1.5f);
  if (padded) {
    a.valid.assign((size_t)B * S, 1.f);
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < S; ++j) {
        if (b == 0) a.valid[(size_t)b * S + j] = (j > 0 && uniform_at(seed, 3, j) < 0.25f) ? 0.f : 1.f;
        else a.valid[(size_t)b * S + j] = j < S - S / 3 ? 1.f : 0.f;
      }
  }
  return a;
}

void fwd(const Attn& a, Vec& o, Vec& lse, bool with_bias = true) {
  o.assign(a.n(), kNaN);
  lse.assign((size_t)a.B * a.H * a.S, kNaN);
  be().attention_forward(o.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh,
                         a.scale, with_bias ? a.rel.data() : nullptr);
}

// logsumexp of the biased, masked scores from the definition.
double lse_error(const Attn& a, const Vec& lse) {
  const int D = a.H * a.dh;
  double m = 0;
  for (int b = 0; b < a.B; ++b)
    for (int h = 0; h < a.H; ++h)
      for (int i = 0; i < a.S; ++i) {
        double mx = -INFINITY, s = 0;
        std::vector<double> z;
        for (int j = 0; j < a.S; ++j) {
          if (a.kv() && a.valid[(size_t)b * a.S + j] == 0.f) continue;
          double d = 0;
          for (int e = 0; e < a.dh; ++e)
            d += (double)a.q[((size_t)b * a.S + i) * D + h * a.dh + e] * a.k[((size_t)b * a.S + j) * D + h * a.dh + e];
          z.push_back(d * a.scale + a.rel[(size_t)h * (2 * a.S - 1) + (j - i + a.S - 1)]);
          mx = std::max(mx, z.back());
        }
        for (double zz : z) s += std::exp(zz - mx);
        double ref = mx + std::log(s);
        double got = lse[((size_t)b * a.H + h) * a.S + i];
        m = std::max(m, std::fabs(got - ref) / std::max(1.0, std::fabs(ref)));
      }
  return m;
}

struct Shape { int S, H, dh; };
const Shape kShapes[] = {{1, 2, 4}, {5, 2, 8}, {33, 3, 16}, {70, 3, 24}, {131, 2, 8}};

TEST(OpsRelBiasAttention, ForwardMatchesReference) {
  for (Shape sh : kShapes)
    for (bool padded : {false, true})
      for (float scale : {1.f, 0.35f}) {
        Attn a = make(2, sh.S, sh.H, sh.dh, padded, scale, 100 + sh.S);
        Vec o, lse, oref(a.n());
        fwd(a, o, lse);
        ref::attention(oref.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale,
                       a.rel.data());
        const std::string where = "S=" + std::to_string(sh.S) + " H=" + std::to_string(sh.H) +
                                  " dh=" + std::to_string(sh.dh) + (padded ? " padded" : "") +
                                  " scale=" + std::to_string(scale);
        EXPECT_LE(rec("relattn.fwd", rel_err(o, oref)), kFwdTol) << where;
        EXPECT_LE(rec("relattn.fwd.lse", lse_error(a, lse)), kFwdTol) << where;
      }
}

TEST(OpsRelBiasAttention, BiasChangesTheOutputAndNullMeansZeroBias) {
  Attn a = make(2, 40, 2, 8, true, 1.f, 150);
  Vec o1, l1, o2, l2;
  fwd(a, o1, l1, true);
  fwd(a, o2, l2, false);
  EXPECT_GT(rel_err(o1, o2), 1e-2) << "the bias table has no effect";
  std::fill(a.rel.begin(), a.rel.end(), 0.f);
  fwd(a, o1, l1, true);
  EXPECT_TRUE(bitwise_equal(o1, o2)) << "a zero table must equal no table";
  EXPECT_TRUE(bitwise_equal(l1, l2));
}

// The reference itself: the bias term equals a per-offset score shift, checked on one hand-built case:
// H = 1, S = 2, q = k = 0 → softmax over the bias row only.
TEST(OpsRelBiasAttention, ReferenceUsesOffsetJMinusI) {
  const int S = 2;
  Vec q(4, 0.f), k(4, 0.f), v = {1.f, 0.f, 0.f, 1.f};  // (S, dh) = (2, 2): v_0 = e0, v_1 = e1
  Vec rel = {0.f, 0.f, std::log(3.f)};                 // offsets −1, 0, +1: key j = i + 1 gets weight 3
  Vec o(4), lse(2);
  ref::attention(o.data(), q.data(), k.data(), v.data(), nullptr, 1, S, 1, 2, 1.f, rel.data());
  // row 0: keys j=0 (offset 0, w 1) and j=1 (offset +1, w 3) → o = (1/4, 3/4); row 1: offsets −1, 0 → (1/2, 1/2)
  EXPECT_NEAR(o[0], 0.25f, 1e-6);
  EXPECT_NEAR(o[1], 0.75f, 1e-6);
  EXPECT_NEAR(o[2], 0.5f, 1e-6);
  EXPECT_NEAR(o[3], 0.5f, 1e-6);
  be().attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), nullptr, 1, S, 1, 2, 1.f, rel.data());
  EXPECT_NEAR(o[0], 0.25f, 1e-6);
  EXPECT_NEAR(o[1], 0.75f, 1e-6);
  EXPECT_NEAR(lse[0], std::log(4.f), 1e-6);
  EXPECT_NEAR(lse[1], std::log(2.f), 1e-6);
}

TEST(OpsRelBiasAttention, BackwardMatchesReference) {
  for (Shape sh : kShapes)
    for (bool padded : {false, true}) {
      Attn a = make(3, sh.S, sh.H, sh.dh, padded, 1.f, 200 + sh.S);
      Vec o, lse;
      fwd(a, o, lse);
      Vec dout = randn(a.n(), 210), dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f), dr(a.nrel(), 0.f);
      be().attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                              o.data(), lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale, a.rel.data(), dr.data());
      Vec rq(a.n()), rk(a.n()), rv(a.n()), rr(a.nrel());
      ref::attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                              a.kv(), a.B, a.S, a.H, a.dh, a.scale, a.rel.data(), rr.data());
      const std::string where = "S=" + std::to_string(sh.S) + " dh=" + std::to_string(sh.dh) + (padded ? " padded" : "");
      EXPECT_LE(rec("relattn.bwd.dq", rel_err(dq, rq)), kBwdTol) << where;
      EXPECT_LE(rec("relattn.bwd.dk", rel_err(dk, rk)), kBwdTol) << where;
      EXPECT_LE(rec("relattn.bwd.dv", rel_err(dv, rv)), kBwdTol) << where;
      EXPECT_LE(rec("relattn.bwd.drel", rel_err(dr, rr)), kBwdTol) << where;
    }
}

// L = Σ o ⊙ r: central differences w.r.t. q, k, v and the bias table, for the tiled kernel and the reference.
TEST(OpsRelBiasAttention, BackwardMatchesFiniteDifferences) {
  struct Case { int S, H, dh; bool padded; size_t probe; };
  for (Case c : {Case{1, 2, 4, false, SIZE_MAX}, Case{5, 2, 8, true, SIZE_MAX}, Case{5, 3, 4, false, SIZE_MAX},
                 Case{70, 2, 8, true, 40}}) {
    Attn a = make(2, c.S, c.H, c.dh, c.padded, 1.f, 300 + c.S);
    Vec r = randn(a.n(), 310), o, lse;
    auto loss = [&] {
      fwd(a, o, lse);
      return dot(o, r);
    };
    loss();
    Vec dq(a.n(), 0.f), dk(a.n(), 0.f), dv(a.n(), 0.f), dr(a.nrel(), 0.f);
    be().attention_backward(dq.data(), dk.data(), dv.data(), r.data(), a.q.data(), a.k.data(), a.v.data(), o.data(),
                            lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale, a.rel.data(), dr.data());
    const std::string where = "S=" + std::to_string(c.S) + " dh=" + std::to_string(c.dh);
    EXPECT_LE(rec("relattn.fd.dq", fd_check(a.q, dq, loss, 5e-3, c.probe).rel), kFdTol) << where;
    EXPECT_LE(rec("relattn.fd.dk", fd_check(a.k, dk, loss, 5e-3, c.probe).rel), kFdTol) << where;
    EXPECT_LE(rec("relattn.fd.dv", fd_check(a.v, dv, loss, 5e-3, c.probe).rel), kFdTol) << where;
    EXPECT_LE(rec("relattn.fd.drel", fd_check(a.rel, dr, loss, 5e-3, c.probe).rel), kFdTol) << where;
    if (c.S <= 5) {
      Vec rq(a.n()), rk(a.n()), rv(a.n()), rr(a.nrel()), oref(a.n());
      ref::attention_backward(rq.data(), rk.data(), rv.data(), r.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(),
                              a.B, a.S, a.H, a.dh, a.scale, a.rel.data(), rr.data());
      auto rloss = [&] {
        ref::attention(oref.data(), a.q.data(), a.k.data(), a.v.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale,
                       a.rel.data());
        return dot(oref, r);
      };
      EXPECT_LE(rec("ref.relattn.fd", fd_check(a.q, rq, rloss, 5e-3).rel), kFdTol) << where;
      EXPECT_LE(rec("ref.relattn.fd", fd_check(a.rel, rr, rloss, 5e-3).rel), kFdTol) << where;
    }
  }
}

TEST(OpsRelBiasAttention, BackwardAccumulatesAndSkipsNull) {
  Attn a = make(2, 45, 2, 8, true, 1.f, 400);
  Vec o, lse;
  fwd(a, o, lse);
  Vec dout = randn(a.n(), 401);
  auto bwd = [&](float* dq, float* dr) {
    be().attention_backward(dq, nullptr, nullptr, dout.data(), a.q.data(), a.k.data(), a.v.data(), o.data(),
                            lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale, a.rel.data(), dr);
  };
  Vec r1(a.nrel(), 0.f), r2(a.nrel(), 0.f), q1(a.n(), 0.f), q2(a.n(), 0.f);
  bwd(q1.data(), r1.data());
  bwd(nullptr, r2.data());
  bwd(nullptr, r2.data());
  EXPECT_LE(rec("relattn.accumulate", rel_err(r2, scaled(r1, 2.f))), kAccTol);
  bwd(q2.data(), nullptr);
  EXPECT_TRUE(bitwise_equal(q1, q2)) << "d_rel_bias must not change dq";
  // Σ_n drel[h][n] = Σ_{b,i,j} dS_ij = 0 (softmax rows): a cheap sanity identity.
  for (int h = 0; h < a.H; ++h) {
    double s = 0, m = 0;
    for (int n = 0; n < 2 * a.S - 1; ++n) {
      s += r1[(size_t)h * (2 * a.S - 1) + n];
      m = std::max(m, std::fabs((double)r1[(size_t)h * (2 * a.S - 1) + n]));
    }
    EXPECT_LE(std::fabs(s), 1e-4 * std::max(1.0, m)) << "head " << h;
  }
}

TEST(OpsRelBiasAttention, IndependentOfThreadCount) {
  Attn a = make(3, 97, 3, 16, true, 1.f, 500);
  Vec dout = randn(a.n(), 501);
  struct Out { Vec o, lse, dq, dk, dv, dr; };
  auto run = [&](int threads) {
    ThreadCount tc(threads);
    Out r;
    fwd(a, r.o, r.lse);
    r.dq.assign(a.n(), 0.f); r.dk.assign(a.n(), 0.f); r.dv.assign(a.n(), 0.f); r.dr.assign(a.nrel(), 0.f);
    be().attention_backward(r.dq.data(), r.dk.data(), r.dv.data(), dout.data(), a.q.data(), a.k.data(), a.v.data(),
                            r.o.data(), r.lse.data(), a.kv(), a.B, a.S, a.H, a.dh, a.scale, a.rel.data(),
                            r.dr.data());
    return r;
  };
  Out r1 = run(1), r2 = run(2), r3 = run(3);
  for (const Out* r : {&r2, &r3}) {
    EXPECT_TRUE(bitwise_equal(r1.o, r->o));
    EXPECT_TRUE(bitwise_equal(r1.lse, r->lse));
    EXPECT_TRUE(bitwise_equal(r1.dq, r->dq));
    EXPECT_TRUE(bitwise_equal(r1.dk, r->dk));
    EXPECT_TRUE(bitwise_equal(r1.dv, r->dv));
    EXPECT_TRUE(bitwise_equal(r1.dr, r->dr)) << "d_rel_bias depends on the thread count";
  }
}

// ---------------------------------------------------------------------------------------------
// Embedding

struct Emb {
  int V, N, D;
  Vec table;
  std::vector<int32_t> ids;
};
Emb make_emb(int V, int N, int D, uint64_t seed) {
  Emb e{V, N, D, randn((size_t)V * D, seed), std::vector<int32_t>(N)};
  for (int n = 0; n < N; ++n) e.ids[n] = (int32_t)(uniform_at(seed, 5, n) * V) % V;
  e.ids[0] = 0;
  if (N > 2) {  // repeated ids, both ends of the table
    e.ids[N - 1] = V - 1;
    e.ids[1] = V - 1;
  }
  return e;
}

TEST(OpsEmbedding, ForwardAndBackwardMatchReference) {
  for (auto [V, N, D] : {std::tuple{7, 1, 3}, std::tuple{10, 40, 16}, std::tuple{50, 333, 64}}) {
    Emb e = make_emb(V, N, D, 600 + N);
    Vec out((size_t)N * D, kNaN), oref((size_t)N * D);
    std::vector<int> ids_i(e.ids.begin(), e.ids.end());
    be().embedding_forward(out.data(), e.table.data(), e.ids.data(), N, D);
    ref::embedding(oref.data(), e.table.data(), ids_i.data(), N, D);
    EXPECT_TRUE(bitwise_equal(out, oref)) << "V=" << V << " N=" << N;
    Vec dout = randn((size_t)N * D, 601), dt((size_t)V * D, 0.f), rt((size_t)V * D);
    be().embedding_backward(dt.data(), dout.data(), e.ids.data(), N, D);
    ref::embedding_backward(rt.data(), dout.data(), ids_i.data(), N, D, V);
    EXPECT_LE(rec("embedding.bwd", rel_err(dt, rt)), 1e-6) << "V=" << V << " N=" << N;
    // FD of L = Σ out ⊙ r w.r.t. the table (linear: exact up to rounding).
    auto loss = [&] {
      be().embedding_forward(out.data(), e.table.data(), e.ids.data(), N, D);
      return dot(out, dout);
    };
    EXPECT_LE(rec("embedding.fd", fd_check(e.table, dt, loss, 1e-2, 60).rel), kFdTol);
    // accumulate
    be().embedding_backward(dt.data(), dout.data(), e.ids.data(), N, D);
    EXPECT_LE(rec("embedding.accumulate", rel_err(dt, scaled(rt, 2.f))), kAccTol);
  }
}

TEST(OpsEmbedding, BackwardIndependentOfThreadCount) {
  Emb e = make_emb(13, 4000, 200, 700);  // many collisions per row
  Vec dout = randn((size_t)e.N * e.D, 701, 3.f);
  auto run = [&](int t) {
    ThreadCount tc(t);
    Vec dt((size_t)e.V * e.D, 0.f);
    be().embedding_backward(dt.data(), dout.data(), e.ids.data(), e.N, e.D);
    return dt;
  };
  Vec a = run(1), b = run(2), c = run(3);
  EXPECT_TRUE(bitwise_equal(a, b));
  EXPECT_TRUE(bitwise_equal(a, c));
}

TEST(OpsEmbedding, IdsTravelInBackendBuffers) {
  std::vector<int32_t> ids = {3, 0, 2, 3};
  Buffer buf = be().alloc(ids.size(), DType::I32);  // integers in an integer buffer
  be().upload(buf.i32(), ids.data(), ids.size());
  Vec table = randn(4 * 5, 800), out(4 * 5);
  be().embedding_forward(out.data(), table.data(), buf.i32(), 4, 5);
  for (int n = 0; n < 4; ++n)
    for (int d = 0; d < 5; ++d) EXPECT_EQ(out[n * 5 + d], table[ids[n] * 5 + d]);
}

// ---------------------------------------------------------------------------------------------
// Bucketed bias gather

TEST(OpsBucketBias, GatherAndScatterMatchDefinition) {
  const int nb = 6, H = 3, n = 17;
  Vec table = randn((size_t)nb * H, 900), bias((size_t)H * n, kNaN);
  std::vector<int32_t> bucket(n);
  for (int k = 0; k < n; ++k) bucket[k] = (k * 7 + 2) % nb;
  be().bucket_bias_forward(bias.data(), table.data(), bucket.data(), n, H);
  for (int h = 0; h < H; ++h)
    for (int k = 0; k < n; ++k) ASSERT_EQ(bias[(size_t)h * n + k], table[(size_t)bucket[k] * H + h]);
  Vec dbias = randn((size_t)H * n, 901), dt((size_t)nb * H, 1.f);  // accumulates onto 1
  be().bucket_bias_backward(dt.data(), dbias.data(), bucket.data(), n, H);
  for (int b = 0; b < nb; ++b)
    for (int h = 0; h < H; ++h) {
      double s = 1.0;
      for (int k = 0; k < n; ++k)
        if (bucket[k] == b) s += dbias[(size_t)h * n + k];
      EXPECT_NEAR(dt[(size_t)b * H + h], s, 1e-5);
    }
}

// ---------------------------------------------------------------------------------------------
// Gated GELU

TEST(OpsGeglu, ForwardMatchesReferenceAndBackwardMatchesFiniteDifferences) {
  const size_t n = 3001;
  Vec a = randn(n, 1000, 2.f), b = randn(n, 1001), y(n), yref(n);
  be().geglu_forward(y.data(), a.data(), b.data(), n);
  ref::geglu(yref.data(), a.data(), b.data(), n);
  EXPECT_LE(rec("geglu.fwd", rel_err(y, yref)), kFwdTol);
  Vec r = randn(n, 1002), da(n, 0.f), db(n, 0.f);
  be().geglu_backward(da.data(), db.data(), r.data(), a.data(), b.data(), n);
  auto loss = [&] {
    ref::geglu(yref.data(), a.data(), b.data(), n);
    return dot(yref, r);
  };
  EXPECT_LE(rec("geglu.fd.da", fd_check(a, da, loss, 1e-3, 200).rel), kFdTol);
  EXPECT_LE(rec("geglu.fd.db", fd_check(b, db, loss, 1e-3, 200).rel), kFdTol);
  Vec da2(n, 0.f), db2(n, 0.f);
  be().geglu_backward(da2.data(), nullptr, r.data(), a.data(), b.data(), n);
  be().geglu_backward(da2.data(), db2.data(), r.data(), a.data(), b.data(), n);
  EXPECT_LE(rec("geglu.accumulate", rel_err(da2, scaled(da, 2.f))), kAccTol);
  EXPECT_TRUE(bitwise_equal(db2, db));
}

}  // namespace
