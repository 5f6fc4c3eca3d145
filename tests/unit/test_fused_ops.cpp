// Fused inference ops (ops/backend.h): the CPU kernels equal the composition of the separate ops bit for bit, and
// the Backend defaults (what a backend without fused kernels runs) equal it too. Odd sizes, several samples so the
// per-sample modulation / gate rows are exercised, two head dims for RoPE.
#include "ops/backend.h"
#include "ops/rope.h"
#include "op_test_util.h"
#include <gtest/gtest.h>

namespace oboro {
namespace {

using test::bitwise_equal;
using test::randn;
using test::Vec;

TEST(FusedOps, RmsnormModulateEqualsComposition) {
  Backend& be = cpu_backend();
  const int B = 3, S = 7, D = 45, ld = 4 * D;
  const float eps = 1e-6f;
  Vec x = randn((size_t)B * S * D, 1), g = randn(D, 2, 0.3f, 1.f), s = randn((size_t)B * ld, 3, 0.5f);
  Vec n((size_t)B * S * D), ref(n.size()), rstd_ref((size_t)B * S);
  be.rmsnorm_forward(n.data(), rstd_ref.data(), x.data(), g.data(), B * S, D, eps);
  be.modulate_forward(ref.data(), n.data(), s.data() + D, ld, B, S, D);
  Vec y(n.size()), rstd((size_t)B * S), y_def(n.size());
  be.rmsnorm_modulate_forward(y.data(), rstd.data(), x.data(), g.data(), s.data() + D, ld, B, S, D, eps);
  EXPECT_TRUE(bitwise_equal(y, ref));
  EXPECT_TRUE(bitwise_equal(rstd, rstd_ref));
  be.Backend::rmsnorm_modulate_forward(y_def.data(), nullptr, x.data(), g.data(), s.data() + D, ld, B, S, D, eps);
  EXPECT_TRUE(bitwise_equal(y_def, ref));
}

TEST(FusedOps, RmsnormGateResidualEqualsComposition) {
  Backend& be = cpu_backend();
  const int B = 2, S = 9, D = 37, ld = 4 * D;
  const float eps = 1e-6f;
  Vec h0 = randn((size_t)B * S * D, 4), y = randn((size_t)B * S * D, 5, 2.f), gam = randn(D, 6, 0.2f, 1.f),
      g = randn((size_t)B * ld, 7);
  Vec n(y.size()), rs((size_t)B * S), ref = h0;
  be.rmsnorm_forward(n.data(), rs.data(), y.data(), gam.data(), B * S, D, eps);
  be.gate_residual_forward(ref.data(), n.data(), g.data() + 3 * D, ld, B, S, D);
  Vec h = h0, h_def = h0;
  be.rmsnorm_gate_residual_forward(h.data(), y.data(), gam.data(), g.data() + 3 * D, ld, B, S, D, eps);
  EXPECT_TRUE(bitwise_equal(h, ref));
  be.Backend::rmsnorm_gate_residual_forward(h_def.data(), y.data(), gam.data(), g.data() + 3 * D, ld, B, S, D, eps);
  EXPECT_TRUE(bitwise_equal(h_def, ref));
}

TEST(FusedOps, LayernormRopeEqualsComposition) {
  Backend& be = cpu_backend();
  const int B = 2, S = 6;
  const float eps = 1e-6f;
  for (int H : {3, 6}) {
    const int D = 48, dh = D / H;
    std::vector<int> rows(S), cols(S);
    for (int i = 0; i < S; ++i) rows[i] = i / 3, cols[i] = i % 3;
    std::vector<float> cs, sn;
    rope2d_tables(cs, sn, rows, cols, dh, 10000.f);
    Vec x = randn((size_t)B * S * D, 8, 1.5f, 0.3f), g = randn(D, 9, 0.2f, 1.f), b = randn(D, 10, 0.1f);
    Vec ref(x.size()), mean_ref((size_t)B * S), rstd_ref((size_t)B * S);
    be.layernorm_forward(ref.data(), mean_ref.data(), rstd_ref.data(), x.data(), g.data(), b.data(), B * S, D, eps);
    be.rope_forward(ref.data(), cs.data(), sn.data(), B, S, H, dh);
    Vec y(x.size()), mean((size_t)B * S), rstd((size_t)B * S), y_def(x.size());
    be.layernorm_rope_forward(y.data(), mean.data(), rstd.data(), x.data(), g.data(), b.data(), cs.data(), sn.data(), B,
                              S, H, dh, eps);
    EXPECT_TRUE(bitwise_equal(y, ref)) << H << " heads";
    EXPECT_TRUE(bitwise_equal(mean, mean_ref));
    EXPECT_TRUE(bitwise_equal(rstd, rstd_ref));
    be.Backend::layernorm_rope_forward(y_def.data(), nullptr, nullptr, x.data(), g.data(), b.data(), cs.data(),
                                       sn.data(), B, S, H, dh, eps);
    EXPECT_TRUE(bitwise_equal(y_def, ref)) << H << " heads (default)";
  }
}

}  // namespace
}  // namespace oboro
