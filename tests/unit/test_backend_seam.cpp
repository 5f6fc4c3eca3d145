// The device seam (ops/buffer.h, ops/backend.h, ops/checked_backend.h): typed owned buffers, the training and
// sampling ops run on every backend (CPU and checked) against naive references, and the checking backend refusing
// every crossing that is not an upload or a download.
#include "test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "flow/flow.h"
#include "ops/backend.h"
#include "ops/checked_backend.h"
#include <gtest/gtest.h>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

using namespace oboro;
using oboro::test::error_of;

namespace {

using Vec = std::vector<float>;

Vec randn(size_t n, uint64_t seed) {
  Vec v(n);
  fill_normal(v.data(), (int64_t)n, seed);
  return v;
}

bool bitwise_equal(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

Backend& checked() {
  static std::unique_ptr<Backend> be = make_checked_backend(cpu_backend());
  return *be;
}

// Every backend the step ops are run on; each result is compared with the CPU backend's (bitwise) and with a
// naive reference.
std::vector<Backend*> backends() { return {&cpu_backend(), &checked()}; }

// ---------------------------------------------------------------- buffers

TEST(Buffer, TypedOwnedZeroInitialisedAndMovable) {
  for (Backend* be : backends()) {
    SCOPED_TRACE(be->name());
    Buffer f = be->alloc(1000, DType::F32, "f");
    EXPECT_EQ(f.size(), 1000u);
    EXPECT_EQ(f.bytes(), 4000u);
    EXPECT_EQ(f.dtype(), DType::F32);
    EXPECT_EQ(f.backend(), be);
    EXPECT_FALSE(f.is_host());
    for (float x : download_all(f)) ASSERT_EQ(x, 0.f);
    EXPECT_THROW(f.i32(), Error);
    Buffer ids = be->alloc(5, DType::I32, "ids");
    const std::vector<int32_t> host = {1, -2, 3, 1 << 30, 7};
    be->upload(ids.i32(), host.data(), host.size());
    std::vector<int32_t> back(5);
    be->download(back.data(), ids.i32(), 5);
    EXPECT_EQ(back, host);
    EXPECT_THROW(ids.f32(), Error);
    Buffer moved = std::move(ids);
    EXPECT_TRUE(ids.empty());
    EXPECT_EQ(moved.size(), 5u);
    moved.reset();
    EXPECT_TRUE(moved.empty());
    auto keep = std::make_shared<Vec>(Vec{1.f, 2.f});
    Buffer h = be->wrap_host(keep->data(), keep->size(), DType::F32, keep, "wrapped");
    EXPECT_TRUE(h.is_host());
  }
}

// ---------------------------------------------------------------- training and sampling ops

TEST(StepOps, IcfmPairEqualOnEveryBackendAndMatchesTheFormula) {
  const int B = 3;
  const int64_t n = 257;
  const Vec x1 = randn((size_t)B * n, 1);
  for (bool logit : {false, true})
    for (float sigma : {0.f, 0.05f}) {
      IcfmDraw d = icfm_draw(StepRng{11, 5}, sigma, logit ? TimestepSampling::LogitNormal : TimestepSampling::Uniform);
      Vec ref_t, ref_xt, ref_u;
      for (Backend* be : backends()) {
        SCOPED_TRACE(be->name());
        Buffer x = upload_new(*be, x1, "x1"), t = be->alloc(B), xt = be->alloc(x1.size()), u = be->alloc(x1.size());
        be->icfm_pair(t.f32(), xt.f32(), u.f32(), x.f32(), B, n, d);
        const Vec th = download_all(t), xth = download_all(xt), uh = download_all(u);
        if (ref_t.empty()) {
          ref_t = th, ref_xt = xth, ref_u = uh;
        } else {
          EXPECT_TRUE(bitwise_equal(th, ref_t));
          EXPECT_TRUE(bitwise_equal(xth, ref_xt));
          EXPECT_TRUE(bitwise_equal(uh, ref_u));
        }
        // Naive reference: the same counter-based draws.
        Vec x0(n), eps(n);
        for (int b = 0; b < B; ++b) {
          const float tb = logit ? 1.f / (1.f + std::exp(-normal_at(d.seed, d.time_stream, (uint64_t)b)))
                                 : uniform_at(d.seed, d.time_stream, (uint64_t)b);
          EXPECT_FLOAT_EQ(th[b], tb);
          fill_normal(x0.data(), n, d.seed, d.noise_stream, (uint64_t)b * n);
          fill_normal(eps.data(), n, d.seed, d.eps_stream, (uint64_t)b * n);
          for (int64_t i = 0; i < n; ++i) {
            const size_t k = (size_t)b * n + i;
            EXPECT_NEAR(xth[k], tb * x1[k] + (1 - tb) * x0[i] + sigma * eps[i], 1e-5);
            EXPECT_NEAR(uh[k], x1[k] - x0[i], 1e-6);
          }
        }
      }
    }
}

TEST(StepOps, LossNormAdamWEmaEqualOnEveryBackendAndMatchReferences) {
  const size_t n = 5000;
  const Vec p0 = randn(n, 2), g = randn(n, 3), tgt = randn(n, 4);
  std::vector<uint8_t> decay(n);
  for (size_t i = 0; i < n; ++i) decay[i] = i % 3 == 0;
  Vec ref_p;
  double ref_loss = -1, ref_norm = -1;
  for (Backend* be : backends()) {
    SCOPED_TRACE(be->name());
    Buffer p = upload_new(*be, p0, "p"), gb = upload_new(*be, g, "g"), tb = upload_new(*be, tgt, "t");
    Buffer m = be->alloc(n), v = be->alloc(n), dm = be->alloc(n, DType::U8), loss = be->alloc(1, DType::F64),
           norm = be->alloc(1, DType::F64), ema = upload_new(*be, p0, "ema"), dp = be->alloc(n);
    be->upload(dm.u8(), decay.data(), n);
    be->mse_forward(loss.f64(), p.f32(), tb.f32(), n);
    double l = 0;
    be->download(&l, loss.f64(), 1);
    double lr = 0;
    for (size_t i = 0; i < n; ++i) lr += ((double)p0[i] - tgt[i]) * ((double)p0[i] - tgt[i]);
    EXPECT_NEAR(l, lr / n, 1e-12 * lr);
    be->mse_backward(dp.f32(), p.f32(), tb.f32(), n, 0.5f);
    const Vec dph = download_all(dp);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(dph[i], (p0[i] - tgt[i]) / n, 1e-7);
    // Σ g² accumulated over two buffers, in a fixed order.
    be->sum_squares(norm.f64(), gb.f32(), n / 2, false);
    be->sum_squares(norm.f64(), gb.f32() + n / 2, n - n / 2, true);
    double s = 0;
    be->download(&s, norm.f64(), 1);
    double sr = 0;
    for (float x : g) sr += (double)x * x;
    EXPECT_NEAR(s, sr, 1e-10 * sr);
    // AdamW with the clipping scale folded in equals AdamW on the pre-scaled gradient (bitwise: g·s is rounded once
    // either way).
    AdamWUpdate u;
    u.lr = 1e-2f, u.weight_decay = 0.1f, u.step_size = 1e-2f / 0.1f, u.inv_sqrt_bc2 = 1.f / std::sqrt(0.001f);
    u.grad_scale = 0.37f;
    be->adamw_update(p.f32(), gb.f32(), m.f32(), v.f32(), dm.u8(), n, u);
    Vec gs(n), pr = p0, mr(n, 0.f), vr(n, 0.f);
    for (size_t i = 0; i < n; ++i) gs[i] = g[i] * 0.37f;
    for (size_t i = 0; i < n; ++i) {
      mr[i] = (1.f - u.beta1) * gs[i];
      vr[i] = (1.f - u.beta2) * gs[i] * gs[i];
      if (decay[i]) pr[i] -= u.lr * u.weight_decay * pr[i];
      pr[i] -= u.step_size * mr[i] / (std::sqrt(vr[i]) * u.inv_sqrt_bc2 + u.eps);
    }
    const Vec ph = download_all(p);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(ph[i], pr[i], 1e-6f * (1.f + std::fabs(pr[i]))) << i;
    be->ema_update(ema.f32(), p.f32(), n, 0.9f);
    const Vec eh = download_all(ema);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(eh[i], 0.9f * p0[i] + 0.1f * ph[i], 1e-6f);
    if (ref_p.empty()) {
      ref_p = ph, ref_loss = l, ref_norm = s;
    } else {
      EXPECT_TRUE(bitwise_equal(ph, ref_p));
      EXPECT_EQ(l, ref_loss);
      EXPECT_EQ(s, ref_norm);
    }
  }
}

TEST(StepOps, EulerCfgInterpolateMasksFillEqualOnEveryBackend) {
  const size_t n = 999;
  const Vec x0 = randn(n, 5), vc = randn(n, 6), vu = randn(n, 7), x1 = randn(n, 8);
  Vec ref_guided, ref_plain, ref_lerp;
  for (Backend* be : backends()) {
    SCOPED_TRACE(be->name());
    Buffer x = upload_new(*be, x0, "x"), c = upload_new(*be, vc, "vc"), u = upload_new(*be, vu, "vu"),
           y = upload_new(*be, x0, "y"), cl = upload_new(*be, x1, "x1"), z = upload_new(*be, x0, "z");
    be->euler_cfg_step(x.f32(), c.f32(), u.f32(), 4.5f, 0.1f, n);
    be->euler_cfg_step(y.f32(), c.f32(), nullptr, 4.5f, 0.1f, n);
    be->flow_interpolate(z.f32(), cl.f32(), 0.3f, n);
    const Vec xh = download_all(x), yh = download_all(y), zh = download_all(z);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(xh[i], x0[i] + 0.1f * (vu[i] + 4.5f * (vc[i] - vu[i])), 1e-5f);
      ASSERT_NEAR(yh[i], x0[i] + 0.1f * vc[i], 1e-6f);
      ASSERT_NEAR(zh[i], 0.3f * x1[i] + 0.7f * x0[i], 1e-6f);
    }
    if (ref_guided.empty()) {
      ref_guided = xh, ref_plain = yh, ref_lerp = zh;
    } else {
      EXPECT_TRUE(bitwise_equal(xh, ref_guided));
      EXPECT_TRUE(bitwise_equal(yh, ref_plain));
      EXPECT_TRUE(bitwise_equal(zh, ref_lerp));
    }
    // Padded text rows: mask_rows zeroes them; the key mask is [text mask ‖ 1 × N].
    const int B = 2, L = 3, D = 4, N = 2;
    const Vec mask = {1, 1, 0, 1, 0, 0};
    Buffer h = upload_new(*be, randn((size_t)B * L * D, 9), "h"), mb = upload_new(*be, mask, "mask"),
           kv = be->alloc((size_t)B * (L + N));
    be->mask_rows(h.f32(), mb.f32(), B * L, D);
    const Vec hh = download_all(h);
    for (int r = 0; r < B * L; ++r)
      for (int d = 0; d < D; ++d)
        if (mask[r] == 0) ASSERT_EQ(hh[(size_t)r * D + d], 0.f);
        else ASSERT_NE(hh[(size_t)r * D + d], 0.f);
    be->text_image_key_valid(kv.f32(), mb.f32(), B, L, N);
    EXPECT_EQ(download_all(kv), (Vec{1, 1, 0, 1, 1, 1, 0, 0, 1, 1}));
    Buffer f = be->alloc(7);
    be->fill(f.f32(), 0.25f, 7);
    EXPECT_EQ(download_all(f), Vec(7, 0.25f));
  }
}

TEST(StepOps, InpaintBlendKeepsTheNoisedOriginalWhereTheMaskIsZero) {
  // x = m·x + (1 − m)·(t·x1 + (1 − t)·noise) against the naive loop; m = 0 at t = 1 gives x1 bitwise.
  const size_t n = 777;
  const Vec x0 = randn(n, 11), nz = randn(n, 12), x1 = randn(n, 13);
  Vec m(n);
  for (size_t i = 0; i < n; ++i) m[i] = i % 3 == 0 ? 0.f : i % 3 == 1 ? 1.f : 0.25f;
  Vec ref_half;
  for (Backend* be : backends()) {
    SCOPED_TRACE(be->name());
    Buffer x = upload_new(*be, x0, "x"), y = upload_new(*be, x0, "y"), nb = upload_new(*be, nz, "noise"),
           cl = upload_new(*be, x1, "x1"), mb = upload_new(*be, m, "mask");
    be->inpaint_blend(x.f32(), nb.f32(), cl.f32(), mb.f32(), 0.4f, n);
    be->inpaint_blend(y.f32(), nb.f32(), cl.f32(), mb.f32(), 1.f, n);
    const Vec xh = download_all(x), yh = download_all(y);
    for (size_t i = 0; i < n; ++i) {
      const float keep = 0.4f * x1[i] + 0.6f * nz[i];
      ASSERT_NEAR(xh[i], m[i] * x0[i] + (1 - m[i]) * keep, 1e-6f);
      if (m[i] == 0.f) {
        ASSERT_EQ(yh[i], x1[i]);
      }
      if (m[i] == 1.f) {
        ASSERT_EQ(yh[i], x0[i]);
      }
    }
    // axpy: y += a·x.
    Buffer ya = upload_new(*be, x0, "y");
    be->axpy(ya.f32(), nb.f32(), -0.5f, n);
    const Vec yah = download_all(ya);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(yah[i], x0[i] - 0.5f * nz[i], 1e-6f);
    if (ref_half.empty()) ref_half = xh;
    else EXPECT_TRUE(bitwise_equal(xh, ref_half));
  }
}

// ---------------------------------------------------------------- the checking backend

TEST(CheckedBackend, RefusesPointersItDidNotAllocateNamingTheOpAndArgument) {
  Backend& be = checked();
  Buffer y = be.alloc(16, DType::F32, "y");
  Vec host(16, 1.f);
  std::string e = error_of([&] { be.silu_forward(y.f32(), host.data(), 16); });
  EXPECT_NE(e.find("silu_forward"), std::string::npos) << e;
  EXPECT_NE(e.find("'x'"), std::string::npos) << e;
  e = error_of([&] { be.linear_forward(host.data(), y.f32(), y.f32(), nullptr, 1, 4, 4); });
  EXPECT_NE(e.find("linear_forward"), std::string::npos) << e;
  EXPECT_NE(e.find("'y'"), std::string::npos) << e;
  // A buffer of another backend is not this backend's memory either.
  Buffer other = cpu_backend().alloc(16);
  e = error_of([&] { be.add_inplace(y.f32(), other.f32(), 16); });
  EXPECT_NE(e.find("add_inplace"), std::string::npos) << e;
  // Crossings are bounds-checked over their whole range.
  Vec big(17, 0.f);
  e = error_of([&] { be.upload(y.f32(), big.data(), big.size()); });
  EXPECT_NE(e.find("out of bounds"), std::string::npos) << e;
  EXPECT_NE(e.find("'y'"), std::string::npos) << e;
  // A freed buffer is gone.
  float* stale = y.f32();
  y.reset();
  e = error_of([&] { be.fill(stale, 0.f, 1); });
  EXPECT_NE(e.find("fill"), std::string::npos) << e;
  // The same op on its own buffers runs.
  Buffer a = be.alloc(16), b = be.alloc(16);
  EXPECT_EQ(error_of([&] { be.silu_forward(a.f32(), b.f32(), 16); }), "(no error)");
}

TEST(CheckedBackendDeathTest, HostReadWithoutADownloadFailsNamingTheBuffer) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Buffer probe = checked().alloc(64, DType::F32, "probe.buffer");
        volatile float x = probe.f32()[3];  // host code touching backend memory directly
        (void)x;
        std::exit(0);
      },
      ::testing::ExitedWithCode(3), "host code touched backend buffer 'probe.buffer'");
  EXPECT_EXIT(
      {
        Buffer probe = checked().alloc(64, DType::F32, "written.buffer");
        probe.f32()[0] = 1.f;
        std::exit(0);
      },
      ::testing::ExitedWithCode(3), "'written.buffer'");
  // Through upload/download the same buffer is fine.
  Buffer ok = checked().alloc(4, DType::F32, "ok");
  const Vec in = {1, 2, 3, 4};
  checked().upload(ok.f32(), in.data(), 4);
  EXPECT_EQ(download_all(ok), in);
}

}  // namespace
