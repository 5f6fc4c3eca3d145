// Flow matching, sampler schedule, optimizer, schedules, infotext, hashes and the pixels codec.
#include "core/base64.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "models/codec.h"
#include "train/optim.h"
#include <gtest/gtest.h>
#include <cmath>

using namespace oboro;

namespace {
// The I-CFM pair through the backend op (host in, host out).
void icfm_pair(Backend& be, const std::vector<float>& x1, int B, int64_t n, float sigma, TimestepSampling ts,
               const StepRng& rng, std::vector<float>& t, std::vector<float>& xt, std::vector<float>& u) {
  Buffer x1b = upload_new(be, x1, "x1"), tb = be.alloc(B), xtb = be.alloc((size_t)B * n), ub = be.alloc((size_t)B * n);
  be.icfm_pair(tb.f32(), xtb.f32(), ub.f32(), x1b.f32(), B, n, icfm_draw(rng, sigma, ts));
  t = download_all(tb), xt = download_all(xtb), u = download_all(ub);
}
double sum_squares(Backend& be, const std::vector<float>& g) {
  Buffer gb = upload_new(be, g, "g"), out = be.alloc(1, DType::F64);
  be.sum_squares(out.f64(), gb.f32(), g.size(), false);
  double s = 0;
  be.download(&s, out.f64(), 1);
  return s;
}
}  // namespace

TEST(Flow, EulerTimestepsFollowTheFluxShift) {
  // Without shift: uniform 0, 1/S, ..., 1.
  auto t = euler_timesteps(4, 1196, false);
  ASSERT_EQ(t.size(), 5u);
  for (int i = 0; i <= 4; ++i) EXPECT_FLOAT_EQ(t[i], i / 4.f);
  // With shift for N = 1196 (the report's 416x736): mu = 0.5 + 940·0.65/3840.
  double k = std::exp(0.5 + (1196 - 256) * 0.65 / 3840);
  EXPECT_NEAR(resolution_shift(1196), k, 1e-12);
  t = euler_timesteps(10, 1196, true);
  for (int i = 0; i <= 10; ++i) {
    double s = 1.0 - i / 10.0;
    EXPECT_NEAR(t[i], 1.0 - k * s / (1 + (k - 1) * s), 1e-6);
  }
  EXPECT_EQ(t.front(), 0.f);
  EXPECT_EQ(t.back(), 1.f);
  for (int i = 0; i < 10; ++i) EXPECT_LT(t[i], t[i + 1]);
  EXPECT_THROW(euler_timesteps(0, 16, true), Error);
}

TEST(Flow, IcfmPairMatchesTheFormulaAndIsReproducible) {
  const int B = 3;
  const int64_t n = 50;
  std::vector<float> x1(B * n), t(B), xt(B * n), u(B * n), t2(B), xt2(B * n), u2(B * n);
  fill_normal(x1.data(), B * n, 5);
  StepRng rng{7, 11};
  Backend& be = cpu_backend();
  icfm_pair(be, x1, B, n, 0.f, TimestepSampling::Uniform, rng, t, xt, u);
  icfm_pair(be, x1, B, n, 0.f, TimestepSampling::Uniform, rng, t2, xt2, u2);
  EXPECT_EQ(xt, xt2);
  EXPECT_EQ(t, t2);
  for (int b = 0; b < B; ++b) {
    EXPECT_GT(t[b], 0.f);
    EXPECT_LT(t[b], 1.f);
    for (int64_t i = 0; i < n; ++i) {
      // sigma = 0: x_t = t·x1 + (1−t)·x0 with x0 = x1 − u.
      float x0 = x1[b * n + i] - u[b * n + i];
      EXPECT_NEAR(xt[b * n + i], t[b] * x1[b * n + i] + (1 - t[b]) * x0, 1e-5);
    }
  }
  // Sample b's noise does not depend on the batch size.
  std::vector<float> t1(1), xt1(n), u1(n);
  icfm_pair(be, std::vector<float>(x1.begin(), x1.begin() + n), 1, n, 0.f, TimestepSampling::Uniform, rng, t1, xt1, u1);
  EXPECT_EQ(t1[0], t[0]);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(u1[i], u[i]);
  // Another step draws other numbers; sigma > 0 adds noise; logit-normal t stays in (0,1).
  StepRng rng2{7, 12};
  icfm_pair(be, x1, B, n, 1e-2f, TimestepSampling::LogitNormal, rng2, t2, xt2, u2);
  EXPECT_NE(u2, u);
  for (float tv : t2) { EXPECT_GT(tv, 0.f); EXPECT_LT(tv, 1.f); }
  EXPECT_THROW(timestep_sampling_from_name("cosine"), Error);
}

TEST(Optim, AdamWMatchesAReferenceInDouble) {
  ParamLayout L;
  L.add("w", {4, 5});
  L.add("b", {5});
  const size_t n = L.total();
  std::vector<float> p(n), g(n);
  fill_normal(p.data(), n, 1);
  std::vector<double> pr(p.begin(), p.end()), m(n, 0), v(n, 0);
  Backend& be = cpu_backend();
  AdamW opt;
  AdamWConfig c{0.9f, 0.99f, 1e-8f, 0.1f};
  opt.init(be, L, c);
  Buffer pb = upload_new(be, p, "p"), gb = be.alloc(n);
  for (int t = 1; t <= 5; ++t) {
    fill_normal(g.data(), n, 100 + t);
    be.upload(gb.f32(), g.data(), n);
    opt.step(pb.f32(), gb.f32(), 1e-2f, t);
    p = download_all(pb);
    for (const auto& pv : L.views())
      for (size_t i = pv.offset; i < pv.offset + pv.numel(); ++i) {
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.99 * v[i] + 0.01 * (double)g[i] * g[i];
        if (pv.shape.size() >= 2) pr[i] -= 1e-2 * 0.1 * pr[i];  // decay matrices only
        double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.99, t));
        pr[i] -= 1e-2 * mh / (std::sqrt(vh) + 1e-8);
      }
  }
  for (const auto& pv : L.views())
    for (size_t i = pv.offset; i < pv.offset + pv.numel(); ++i) EXPECT_NEAR(p[i], pr[i], 2e-6) << pv.name;
}

TEST(Optim, SchedulesAndClipping) {
  LrSchedule s;
  s.lr = 1.0;
  s.total_steps = 110;
  s.warmup_steps = 10;
  s.kind = "constant_with_warmup";
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(50), 1.0);
  s.kind = "linear";
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_DOUBLE_EQ(s.at(60), 0.5);
  EXPECT_DOUBLE_EQ(s.at(110), 0.0);
  s.kind = "cosine";
  EXPECT_NEAR(s.at(60), 0.5, 1e-12);
  EXPECT_NEAR(s.at(35), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(s.at(0), 1.0);
  EXPECT_THROW(LrSchedule::validate_kind("exponential"), Error);
  Backend& be = cpu_backend();
  std::vector<float> g = {3, 4};
  EXPECT_DOUBLE_EQ(sum_squares(be, g), 25.0);
  std::vector<float> big(100003);
  fill_normal(big.data(), big.size(), 3);
  double ref = 0;
  for (float x : big) ref += (double)x * x;
  EXPECT_NEAR(sum_squares(be, big), ref, 1e-9 * ref);
  g[1] = NAN;
  EXPECT_TRUE(std::isnan(sum_squares(be, g)));  // a non-finite gradient shows in the norm (the trainer stops on it)
}

TEST(Infotext, FormatsLikeA1111AndParsesBack) {
  EXPECT_EQ(py_float(5.0), "5");
  EXPECT_EQ(py_float(3.5), "3.5");
  EXPECT_EQ(py_float(0.0001), "0.0001");
  EXPECT_EQ(py_float(1e-5), "1e-05");
  EXPECT_EQ(py_float(1.93), "1.93");
  EXPECT_EQ(py_float(0.1f), "0.10000000149011612");  // a float32 widened, as Python would print it
  EXPECT_EQ(py_float32(0.1f), "0.1");
  EXPECT_EQ(py_float32(3.7f), "3.7");
  EXPECT_EQ(py_float32(5.f), "5");
  std::string s = format_infotext("a red circle", "blurry", {{"Steps", "30"}, {"Sampler", "Euler"}, {"CFG scale", "5"},
                                                             {"Note", "a, b: c"}});
  EXPECT_EQ(s, "a red circle\nNegative prompt: blurry\nSteps: 30, Sampler: Euler, CFG scale: 5, Note: \"a, b: c\"");
  Infotext p = parse_infotext(s);
  EXPECT_EQ(p.prompt, "a red circle");
  EXPECT_EQ(p.negative, "blurry");
  ASSERT_EQ(p.params.size(), 4u);
  EXPECT_EQ(p.params[3].second, "a, b: c");
  EXPECT_EQ(format_infotext("p", "", {{"Steps", "1"}}), "p\nSteps: 1");
}

TEST(Infotext, KohyaPromptLines) {
  PromptLine p = parse_prompt_line("a blue square --n red --w 64 --h 32 --d 42 --s 12 --l 4.5");
  EXPECT_EQ(p.prompt, "a blue square");
  EXPECT_EQ(p.negative, "red");
  EXPECT_EQ(p.width, 64);
  EXPECT_EQ(p.height, 32);
  EXPECT_EQ(p.seed, 42);
  EXPECT_EQ(p.steps, 12);
  EXPECT_FLOAT_EQ(p.cfg, 4.5f);
  EXPECT_EQ(parse_prompt_line("just a prompt").prompt, "just a prompt");
  EXPECT_THROW(parse_prompt_line("x --q 3"), Error);
  EXPECT_THROW(parse_prompt_line("x --w abc"), Error);
}

TEST(Hashes, Sha256AndBase64KnownAnswers) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  std::string bin;
  for (int i = 0; i < 256; ++i) bin += (char)i;
  EXPECT_EQ(base64_decode(base64_encode(bin)), bin);
  EXPECT_THROW(base64_decode("abc"), Error);
  EXPECT_THROW(base64_decode("ab!="), Error);
}

TEST(Codec, PixelsUnshuffleRoundTripAndLayout) {
  for (int s : {1, 2}) {
    PixelsCodec c;
    c.stride = s;
    const int H = 4, W = 6;
    std::vector<float> img(3 * H * W), lat(img.size()), back(img.size());
    for (size_t i = 0; i < img.size(); ++i) img[i] = (float)i;
    c.encode(img.data(), H, W, lat.data());
    c.decode(lat.data(), H, W, back.data());
    EXPECT_EQ(img, back);
    if (s == 2) {  // channel c·4 + i·2 + j at (y, x) is pixel (2y + i, 2x + j): check (c=1, i=1, j=0, y=1, x=2)
      EXPECT_EQ(lat[((1 * 4 + 2) * 2 + 1) * 3 + 2], img[(1 * H + 3) * W + 4]);
    }
  }
  EXPECT_EQ(codec_stride("pixels", 12), 2);
  EXPECT_THROW(codec_stride("pixels", 16), Error);
  EXPECT_THROW(codec_stride("jpeg", 3), Error);
}

TEST(Optim, EmaWarmsUpSoInitialWeightsFadeEarly) {
  EXPECT_FLOAT_EQ(ema_decay_at(1, 0.999f), 2.f / 11.f);
  EXPECT_FLOAT_EQ(ema_decay_at(100000, 0.999f), 0.999f);
  // Weight left on the initial value after 1000 steps: with warmup it is negligible (without: 0.999^1000 = 0.37).
  double w = 1;
  for (int t = 1; t <= 1000; ++t) w *= ema_decay_at(t, 0.999f);
  EXPECT_LT(w, 1e-3);
  Backend& be = cpu_backend();
  Buffer p = upload_new(be, {1.f}, "p"), zero = upload_new(be, {0.f}, "zero");
  Ema ema;
  ema.init(be, zero.f32(), 1, "ema");
  ema.update(p.f32(), 0.75f);
  EXPECT_FLOAT_EQ(download_all(ema.w)[0], 0.25f);
}
