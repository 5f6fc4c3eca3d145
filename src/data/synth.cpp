#include "data/synth.h"

#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "io/atomic_file.h"

#include <nlohmann/json.hpp>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace oboro::synth {

namespace fs = std::filesystem;

namespace {

// Philox streams: (purpose << 56) ^ index.
enum : uint64_t { kContent = 1, kDup = 2, kPerturb = 3 };
uint64_t stream(uint64_t purpose, uint64_t index) { return (purpose << 56) ^ index; }

struct Draw {
  uint64_t seed, stream;
  uint64_t k = 0;
  float u() { return uniform_at(seed, stream, k++); }
  float range(float a, float b) { return a + (b - a) * u(); }
  int irange(int a, int b) { return std::min(b - 1, a + (int)((b - a) * u())); }  // [a, b)
};

struct Rgbf {
  float r, g, b;
};
Rgbf colour(Draw& d) { return {d.range(0, 255), d.range(0, 255), d.range(0, 255)}; }

uint8_t clamp8(float v) { return (uint8_t)std::lround(std::clamp(v, 0.f, 255.f)); }

const char* const kShapes[] = {"circle", "square", "triangle", "ring"};

}  // namespace

const char* perturb_name(Perturb p) {
  switch (p) {
    case Perturb::Resize: return "resize";
    case Perturb::Jpeg: return "jpeg";
    case Perturb::Crop: return "crop";
    case Perturb::Jitter: return "colour-jitter";
    case Perturb::CropJpeg: return "crop+jpeg";
    case Perturb::ResizeJitter: return "resize+colour-jitter";
    default: return "?";
  }
}

Image make_image(uint64_t seed, uint64_t index, int W, int H) {
  Draw d{seed, stream(kContent, index)};
  std::vector<float> px((size_t)W * H * 3);
  // Gradient background.
  const Rgbf c0 = colour(d), c1 = colour(d);
  const float ang = d.range(0, 6.2831853f), ca = std::cos(ang), sa = std::sin(ang);
  // Stripes.
  const float samp = d.range(0, 24), sfreq = d.range(1.5f, 10.f), sang = d.range(0, 3.14159265f), sph = d.range(0, 6.28f);
  const float sc = std::cos(sang), ss = std::sin(sang);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float fx = (x + 0.5f) / W - 0.5f, fy = (y + 0.5f) / H - 0.5f;
      const float t = std::clamp(0.5f + (fx * ca + fy * sa), 0.f, 1.f);
      const float st = samp * std::sin(6.2831853f * sfreq * (fx * sc + fy * ss) + sph);
      float* p = &px[((size_t)y * W + x) * 3];
      p[0] = c0.r + (c1.r - c0.r) * t + st;
      p[1] = c0.g + (c1.g - c0.g) * t + st;
      p[2] = c0.b + (c1.b - c0.b) * t + st;
    }
  // Soft blobs.
  const int blobs = d.irange(1, 4);
  for (int b = 0; b < blobs; ++b) {
    const Rgbf c = colour(d);
    const float cx = d.range(0, 1), cy = d.range(0, 1), sg = d.range(0.08f, 0.35f), al = d.range(0.4f, 0.9f);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const float dx = (x + 0.5f) / W - cx, dy = (y + 0.5f) / H - cy;
        const float a = al * std::exp(-(dx * dx + dy * dy) / (2 * sg * sg));
        float* p = &px[((size_t)y * W + x) * 3];
        p[0] += (c.r - p[0]) * a;
        p[1] += (c.g - p[1]) * a;
        p[2] += (c.b - p[2]) * a;
      }
  }
  // Flat shapes.
  const int shapes = d.irange(2, 8);
  for (int s = 0; s < shapes; ++s) {
    const int kind = d.irange(0, 4);
    const Rgbf c = colour(d);
    const float cx = d.range(0.1f, 0.9f), cy = d.range(0.1f, 0.9f), r = d.range(0.06f, 0.25f);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const float dx = (x + 0.5f) / W - cx, dy = (y + 0.5f) / H - cy;
        bool in = false;
        switch (kind) {
          case 0: in = dx * dx + dy * dy < r * r; break;
          case 1: in = std::fabs(dx) < r && std::fabs(dy) < r; break;
          case 2: in = dy < r && dy > -r && std::fabs(dx) < (dy + r) * 0.5f; break;
          default: {
            const float q = dx * dx + dy * dy;
            in = q < r * r && q > 0.45f * r * r;
          }
        }
        if (in) {
          float* p = &px[((size_t)y * W + x) * 3];
          p[0] = c.r, p[1] = c.g, p[2] = c.b;
        }
      }
  }
  Image img;
  img.width = W;
  img.height = H;
  img.rgb.resize(px.size());
  Draw noise{seed, stream(kContent, index) ^ (1ull << 40)};
  for (size_t i = 0; i < px.size(); ++i) img.rgb[i] = clamp8(px[i] + noise.range(-4.f, 4.f));
  return img;
}

std::string encode_jpeg(const Image& img, int quality) {
  std::string out;
  auto sink = [](void* ctx, void* data, int size) { ((std::string*)ctx)->append((const char*)data, (size_t)size); };
  if (!stbi_write_jpg_to_func(sink, &out, img.width, img.height, 3, img.rgb.data(), quality))
    fail("JPEG encoding failed (", img.width, "x", img.height, ")");
  return out;
}

Image perturb(const Image& src, Perturb kind, uint64_t seed, uint64_t index, std::string* jpeg) {
  Draw d{seed, stream(kPerturb, index)};
  auto do_resize = [&](const Image& im) {
    const float s = d.range(0.5f, 0.8f);
    return resize(im, std::max(8, (int)std::lround(im.width * s)), std::max(8, (int)std::lround(im.height * s)));
  };
  auto do_crop = [&](const Image& im) {
    const int l = (int)(im.width * d.range(0, 0.05f)), r = (int)(im.width * d.range(0, 0.05f));
    const int t = (int)(im.height * d.range(0, 0.05f)), b = (int)(im.height * d.range(0, 0.05f));
    Image o;
    o.width = im.width - l - r;
    o.height = im.height - t - b;
    o.rgb.resize((size_t)o.width * o.height * 3);
    for (int y = 0; y < o.height; ++y)
      std::copy_n(&im.rgb[((size_t)(y + t) * im.width + l) * 3], (size_t)o.width * 3, &o.rgb[(size_t)y * o.width * 3]);
    return o;
  };
  auto do_jitter = [&](const Image& im) {
    const float bright = d.range(-10, 10), contrast = d.range(0.92f, 1.08f), sat = d.range(0.9f, 1.1f);
    const float gr = d.range(0.97f, 1.03f), gg = d.range(0.97f, 1.03f), gb = d.range(0.97f, 1.03f);
    Image o = im;
    for (size_t i = 0; i < o.rgb.size(); i += 3) {
      float r = im.rgb[i], g = im.rgb[i + 1], b = im.rgb[i + 2];
      const float l = 0.299f * r + 0.587f * g + 0.114f * b;
      r = l + (r - l) * sat, g = l + (g - l) * sat, b = l + (b - l) * sat;
      o.rgb[i] = clamp8((r * gr - 128) * contrast + 128 + bright);
      o.rgb[i + 1] = clamp8((g * gg - 128) * contrast + 128 + bright);
      o.rgb[i + 2] = clamp8((b * gb - 128) * contrast + 128 + bright);
    }
    return o;
  };
  auto do_jpeg = [&](const Image& im) {
    std::string bytes = encode_jpeg(im, d.irange(40, 86));
    Image o = decode_image(bytes, "synthetic JPEG");
    if (jpeg) *jpeg = std::move(bytes);
    return o;
  };
  switch (kind) {
    case Perturb::Resize: return do_resize(src);
    case Perturb::Jpeg: return do_jpeg(src);
    case Perturb::Crop: return do_crop(src);
    case Perturb::Jitter: return do_jitter(src);
    case Perturb::CropJpeg: return do_jpeg(do_crop(src));
    case Perturb::ResizeJitter: return do_jitter(do_resize(src));
    default: fail("synth: unknown perturbation");
  }
}

namespace {

bool is_dup(const Options& o, uint64_t i) {
  return i >= 8 && uniform_at(o.seed, stream(kDup, i), 0) < o.dup_fraction;
}
// The original a duplicate copies: a uniformly drawn earlier index that is not itself a duplicate.
uint64_t original_of(const Options& o, uint64_t i) {
  for (uint64_t k = 1;; ++k) {
    uint64_t j = std::min<uint64_t>(i - 1, (uint64_t)(uniform_at(o.seed, stream(kDup, i), k) * i));
    if (!is_dup(o, j)) return j;
  }
}

std::string rel_name(const Options& o, uint64_t i, const char* ext) {
  char b[64];
  std::snprintf(b, sizeof b, "%03llu/%08llu%s", (unsigned long long)(i / o.per_folder), (unsigned long long)i, ext);
  return b;
}

}  // namespace

Summary write_dataset(const Options& o) {
  if (o.count <= 0) fail("synth: --count must be positive");
  if (o.size < 16 || o.size > 4096) fail("synth: --size ", o.size, " must be in [16, 4096]");
  if (!(o.dup_fraction >= 0 && o.dup_fraction < 1)) fail("synth: --dup-fraction must be in [0, 1)");
  if (o.per_folder <= 0) fail("synth: per-folder count must be positive");
  const fs::path dir(o.out_dir);
  std::error_code ec;
  if (fs::exists(dir / "duplicates.tsv", ec) && !o.force)
    fail(o.out_dir, ": already holds a synthetic dataset (duplicates.tsv): pass --force to replace it, or choose another --out");
  fs::create_directories(dir, ec);
  if (ec) fail(o.out_dir, ": cannot create the folder: ", ec.message());
  remove_stale_temps_below(dir.string());  // of an interrupted earlier run
  for (int64_t f = 0; f <= (o.count - 1) / o.per_folder; ++f) {
    fs::create_directories(dir / rel_name(o, (uint64_t)f * o.per_folder, "").substr(0, 3), ec);
    if (ec) fail(o.out_dir, ": cannot create a subfolder: ", ec.message());
  }
  // Workers fill per-image records; files are written in parallel, the two index files at the end
  // (small: ~200 bytes per image).
  std::vector<std::string> lines((size_t)o.count), dups((size_t)o.count);
  parallel_for(o.count, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint64_t u = (uint64_t)i;
      std::string bytes, rel, caption = "synthetic image " + std::to_string(i), original = "synth:" + std::to_string(i);
      if (!is_dup(o, u)) {
        bytes = encode_png(make_image(o.seed, u, o.size, o.size));
        rel = rel_name(o, u, ".png");
      } else {
        const uint64_t j = original_of(o, u);
        const Perturb k = (Perturb)(uint64_t)(uniform_at(o.seed, stream(kDup, u), 1000) * (int)Perturb::kCount);
        std::string jpeg;
        Image im = perturb(make_image(o.seed, j, o.size, o.size), k, o.seed, u, &jpeg);
        const bool is_jpeg = k == Perturb::Jpeg || k == Perturb::CropJpeg;
        bytes = is_jpeg ? jpeg : encode_png(im);
        rel = rel_name(o, u, is_jpeg ? ".jpg" : ".png");
        dups[(size_t)i] = rel + "\t" + rel_name(o, j, ".png") + "\t" + perturb_name(k) + "\n";
        caption = "synthetic image " + std::to_string(j);
        original = "synth:" + std::to_string(j) + ":" + perturb_name(k);
      }
      const fs::path p = dir / rel;
      write_file_atomic(p.string(), bytes, Durability::Deferred);  // no part file under a final name if killed
      fs::path cap = p;
      cap.replace_extension(".txt");
      write_file_atomic(cap.string(), caption + "\n", Durability::Deferred);
      if (o.manifest_jsonl) {
        nlohmann::json rec = {{"file", rel},
                              {"sha256", sha256_hex(bytes)},
                              {"source", "oboro data synth"},
                              {"original", original},
                              {"license", o.license},
                              {"attribution", "oboro synthetic data (seed " + std::to_string(o.seed) + ")"},
                              {"captions", {caption}}};
        lines[(size_t)i] = rec.dump() + "\n";
      }
    }
  });
  Summary s;
  std::string tsv = "# duplicate\toriginal\tperturbation\n", jsonl;
  for (int64_t i = 0; i < o.count; ++i) {
    if (!dups[(size_t)i].empty()) {
      tsv += dups[(size_t)i];
      ++s.duplicates;
    } else {
      ++s.originals;
    }
    jsonl += lines[(size_t)i];
  }
  // The images on disk first, then the index files (duplicates.tsv last: its presence marks a finished dataset).
  sync_filesystem(dir.string());
  if (o.manifest_jsonl) write_file_atomic((dir / "manifest.jsonl").string(), jsonl);
  write_file_atomic((dir / "duplicates.tsv").string(), tsv);
  return s;
}

}  // namespace oboro::synth
