#include "data/buckets.h"

#include "core/error.h"
#include "core/rng.h"
#include "data/manifest.h"

#include <algorithm>
#include <cmath>

namespace oboro {

namespace {

uint64_t hash64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

double aspect_of(int w, int h) { return std::max((double)w / h, (double)h / w); }

// Source window of aspect bw:bh covering as much of the image as possible, scaled down to bw×bh.
Bucket window(int w, int h, int bw, int bh, float fx, float fy) {
  Bucket b;
  b.width = bw;
  b.height = bh;
  const double scale = std::max((double)bw / w, (double)bh / h);
  b.crop_w = std::min(w, (int)std::lround(bw / scale));
  b.crop_h = std::min(h, (int)std::lround(bh / scale));
  b.crop_x = (int)std::lround((w - b.crop_w) * fx);
  b.crop_y = (int)std::lround((h - b.crop_h) * fy);
  return b;
}

}  // namespace

std::string Bucket::str() const {
  return oboro::str(width, "x", height, " crop ", crop_x, ",", crop_y, " ", crop_w, "x", crop_h);
}

std::vector<std::pair<int, int>> stage2_buckets(int64_t area, double max_aspect, int step) {
  std::vector<std::pair<int, int>> out;
  for (int w = step; (int64_t)w * step <= area; w += step) {
    const int h = (int)(area / w / step) * step;
    if (h >= step && aspect_of(w, h) <= max_aspect + 1e-9) out.push_back({w, h});
  }
  return out;
}

std::optional<Bucket> assign_bucket(int w, int h, const std::string& hash, const BucketOptions& o, std::string* why) {
  if (w <= 0 || h <= 0) {
    if (why) *why = "no size (corrupt image?)";
    return std::nullopt;
  }
  if (o.stage == 1) {
    const int s = std::min(w, h);
    int side = o.stage1_size;
    if (s < side && !o.upscale) side = s / o.step * o.step;
    if (side < o.step) {
      if (why) *why = oboro::str("too small for stage 1 (", w, "x", h, " < ", o.step, " px; --upscale allows it)");
      return std::nullopt;
    }
    // Random square along the longer side, a function of (seed, content hash).
    const float u = uniform_at(o.seed, hash64(hash), 0);
    return window(w, h, side, side, w > h ? u : 0.5f, h > w ? u : 0.5f);
  }
  if (o.stage != 2) fail("--stage ", o.stage, ": use 1 (256² random crops) or 2 (~512² aspect buckets)");
  const double a = std::log((double)w / h);
  auto nearest = [&](const std::vector<std::pair<int, int>>& list) {
    std::pair<int, int> best{0, 0};
    double bd = 1e9;
    for (const auto& [bw, bh] : list) {
      const double d = std::fabs(std::log((double)bw / bh) - a);
      if (d < bd - 1e-12) bd = d, best = {bw, bh};
    }
    return best;
  };
  const float fy = 0.25f;  // vertical excess: a quarter above, three quarters below
  const auto std_list = stage2_buckets(o.stage2_area, o.max_aspect, o.step);
  const auto [bw, bh] = nearest(std_list);
  if (o.upscale || (bw <= w && bh <= h && std::max((double)bw / w, (double)bh / h) <= 1.0)) return window(w, h, bw, bh, 0.5f, fy);
  // No upscaling: the largest bucket the image covers; ties → nearest aspect.
  std::vector<std::pair<int, int>> fits;
  int64_t best_area = 0;
  for (int cw = o.step; cw <= w; cw += o.step)
    for (int ch = o.step; ch <= h; ch += o.step) {
      if ((int64_t)cw * ch > o.stage2_area || aspect_of(cw, ch) > o.max_aspect + 1e-9) continue;
      const int64_t ar = (int64_t)cw * ch;
      if (ar > best_area) best_area = ar, fits.clear();
      if (ar == best_area) fits.push_back({cw, ch});
    }
  if (fits.empty()) {
    if (why) *why = oboro::str("too small for stage 2 (", w, "x", h, " < ", o.step, " px; --upscale allows it)");
    return std::nullopt;
  }
  const auto [fw, fh] = nearest(fits);
  return window(w, h, fw, fh, 0.5f, fy);
}

std::pair<float, float> crop_fractions(int w, int h, const Bucket& b) {
  const float fx = w > b.crop_w ? (float)b.crop_x / (float)(w - b.crop_w) : 0.5f;
  const float fy = h > b.crop_h ? (float)b.crop_y / (float)(h - b.crop_h) : 0.5f;
  return {std::clamp(fx, 0.f, 1.f), std::clamp(fy, 0.f, 1.f)};
}

BucketReport assign_buckets(Manifest& m, const BucketOptions& o, bool dry_run, const std::function<void(const std::string&)>& line) {
  BucketReport rep;
  if (o.stage != 1 && o.stage != 2) fail("--stage ", o.stage, ": use 1 (256² random crops) or 2 (~512² aspect buckets)");
  sql::Db& db = m.db();
  sql::Stmt old(db, "SELECT width, height, crop_x, crop_y, crop_w, crop_h FROM buckets WHERE image_id=? AND stage=?");
  sql::Stmt up(db, "INSERT INTO buckets(image_id, stage, width, height, crop_x, crop_y, crop_w, crop_h) VALUES (?,?,?,?,?,?,?,?) "
                   "ON CONFLICT(image_id, stage) DO UPDATE SET width=excluded.width, height=excluded.height, "
                   "crop_x=excluded.crop_x, crop_y=excluded.crop_y, crop_w=excluded.crop_w, crop_h=excluded.crop_h");
  sql::Stmt del(db, "DELETE FROM buckets WHERE image_id=? AND stage=?");
  int64_t last = 0;
  for (;;) {
    std::vector<std::tuple<int64_t, std::string, std::string, int, int>> page;
    {
      sql::Stmt s(db, "SELECT id, path, sha256, width, height FROM images WHERE status='active' AND id > ? ORDER BY id LIMIT 4096");
      s.bind(1, last);
      while (s.step()) page.emplace_back(s.i64(0), s.text(1), s.text(2), (int)s.i64(3), (int)s.i64(4));
    }
    if (page.empty()) break;
    last = std::get<0>(page.back());
    std::unique_ptr<sql::Transaction> tx;
    if (!dry_run) tx = std::make_unique<sql::Transaction>(db);
    for (const auto& [id, path, sha, w, h] : page) {
      ++rep.images;
      std::string why;
      const std::optional<Bucket> b = assign_bucket(w, h, sha, o, &why);
      if (!b) {
        ++rep.too_small;
        if (line) line(path + "\tnone: " + why);
        if (!dry_run) del.bind(1, id).bind(2, o.stage).run();
        continue;
      }
      ++rep.bucketed;
      ++rep.per_bucket[oboro::str(b->width, "x", b->height)];
      if (line) line(path + "\t" + b->str());
      if (dry_run) continue;
      old.bind(1, id).bind(2, o.stage);
      const bool same = old.step() && old.i64(0) == b->width && old.i64(1) == b->height && old.i64(2) == b->crop_x &&
                        old.i64(3) == b->crop_y && old.i64(4) == b->crop_w && old.i64(5) == b->crop_h;
      old.reset();
      if (same) continue;
      ++rep.changed;
      up.bind(1, id).bind(2, o.stage).bind(3, b->width).bind(4, b->height).bind(5, b->crop_x).bind(6, b->crop_y);
      up.bind(7, b->crop_w).bind(8, b->crop_h).run();
    }
    if (tx) tx->commit();
  }
  return rep;
}

}  // namespace oboro
