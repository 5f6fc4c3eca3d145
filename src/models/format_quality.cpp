#include "models/format_quality.h"
#include "core/error.h"
#include "core/rng.h"
#include <chrono>
#include <cmath>

namespace oboro {

std::vector<FormatQuality> dit_format_quality(DiT& ref, const std::vector<WFormat>& fmts, int B, int L, int h, int w,
                                              uint64_t seed, bool time_it, bool weights_only) {
  if (ref.weight_format() != WFormat::F32) fail("the quality guard needs the F32 model as its reference");
  const DiTConfig& cfg = ref.config();
  std::vector<float> x((size_t)B * cfg.latent_channels * h * w), t(B), txt((size_t)B * L * cfg.text_dim),
      mask((size_t)B * L, 1.f), v0(x.size()), v(x.size());
  fill_normal(x.data(), (int64_t)x.size(), seed, 1);
  fill_normal(txt.data(), (int64_t)txt.size(), seed, 2);
  for (int b = 0; b < B; ++b) t[b] = 0.3f + 0.4f * b / B;
  Backend& be = ref.backend();  // the inputs and the velocity on the backend
  Buffer xb = upload_new(be, x, "quality.x"), tb = upload_new(be, t, "quality.t"), txtb = upload_new(be, txt, "quality.txt"),
         maskb = upload_new(be, mask, "quality.mask"), vb = be.alloc(x.size(), DType::F32, "quality.v");
  auto forward = [&](DiT& m, std::vector<float>& out) {
    m.forward(vb.f32(), xb.f32(), tb.f32(), txtb.f32(), maskb.f32(), B, L, h, w, false);
    be.download(out.data(), vb.f32(), out.size());
  };
  auto now = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
  auto run = [&](DiT& m, std::vector<float>& out) {
    if (time_it) forward(m, out);  // warm-up
    double t0 = now();
    forward(m, out);
    return now() - t0;
  };
  auto rel = [&](const std::vector<float>& a, double* max_abs) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = (double)a[i] - v0[i];
      num += d * d;
      den += (double)v0[i] * v0[i];
      if (max_abs) *max_abs = std::max(*max_abs, std::fabs(d));
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  };
  std::vector<FormatQuality> res;
  FormatQuality f32;
  f32.seconds = run(ref, v0);
  f32.weight_bytes = ref.weight_bytes();
  res.push_back(f32);
  for (WFormat f : fmts) {
    if (f == WFormat::F32) continue;
    auto m = ref.converted(f);
    FormatQuality q;
    q.fmt = f;
    q.weight_bytes = m->weight_bytes();
    q.seconds = run(*m, v);
    q.rel_err = rel(v, &q.max_abs_err);
    if (weights_only) {
      auto deq = m->converted(WFormat::F32);
      m.reset();
      forward(*deq, v);
      q.rel_err_weights_only = rel(v, nullptr);
    }
    res.push_back(q);
  }
  return res;
}

}  // namespace oboro
