// Procedural shapes dataset: scene sampling, anti-aliased rendering, dataset writer.
#include "data/shapes.h"

#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/safetensors.h"  // write_file_atomic

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

namespace oboro::shapes {

namespace fs = std::filesystem;

namespace {

const char* const kColourNames[kNumColours] = {"red", "green", "blue", "yellow", "purple", "orange"};
const std::array<uint8_t, 3> kColourRgb[kNumColours] = {
    {210, 30, 40}, {30, 160, 60}, {30, 90, 225}, {245, 210, 20}, {150, 40, 170}, {250, 140, 20}};
const std::array<uint8_t, 3> kBackground = {238, 238, 238};
const char* const kShapeNames[kNumShapes] = {"circle", "square", "triangle", "cross"};
const char* const kSizeNames[kNumSizes] = {"small", "large"};
const char* const kRelationNames[kNumRelations] = {"above", "below", "left of", "right of"};

// Sequential draws from one Philox stream.
struct Draw {
  uint64_t seed, stream, index = 0;
  float u() { return uniform_at(seed, stream, index++); }
  int below(int n) { return std::min((int)(u() * (float)n), n - 1); }
  float range(float lo, float hi) { return lo + (hi - lo) * u(); }
};

int find_word(const char* const* table, int n, const std::string& w) {
  for (int i = 0; i < n; ++i)
    if (w == table[i]) return i;
  return -1;
}

void sample_attrs(Draw& d, Object& o) {
  o.colour = d.below(kNumColours);
  o.shape = d.below(kNumShapes);
  o.size = d.below(kNumSizes);
}

float sample_side(Draw& d, int size, int S) {
  return size == 0 ? d.range(kSmallMin, kSmallMax) * S : d.range(kLargeMin, kLargeMax) * S;
}

// Samples attributes that avoid the holdout (rejection, bounded; parse_holdout guarantees that
// some combination survives, and a deterministic scan is the fallback).
void sample_seen(Draw& d, Object& o, const Holdout& h) {
  for (int t = 0; t < 256; ++t) {
    sample_attrs(d, o);
    if (!h.matches(o.colour, o.shape, o.size)) return;
  }
  for (int c = 0; c < kNumColours; ++c)
    for (int s = 0; s < kNumShapes; ++s)
      for (int z = 0; z < kNumSizes; ++z)
        if (!h.matches(c, s, z)) { o.colour = c; o.shape = s; o.size = z; return; }
  fail("the holdout excludes every colour/shape/size combination");
}

void sample_heldout(Draw& d, Object& o, const Holdout& h) {
  const Combo& c = h.combos[d.below((int)h.combos.size())];
  sample_attrs(d, o);
  if (c.colour >= 0) o.colour = c.colour;
  if (c.shape >= 0) o.shape = c.shape;
  if (c.size >= 0) o.size = c.size;
}

void place_one(Draw& d, Object& o, int S) {
  const float m = 0.04f * S;
  o.cx = d.range(m + o.side / 2, S - m - o.side / 2);
  o.cy = d.range(m + o.side / 2, S - m - o.side / 2);
}

// Places a (first) and b (second) so that "a <relation> b" holds unambiguously: separated along the
// relation's axis by at least a gap, and offset across it by at most half the separation.
void place_two(Draw& d, Object& a, Object& b, int relation, int S) {
  const float m = 0.04f * S, gap = 0.06f * S;
  const bool vertical = relation == 0 || relation == 1;
  // "first" is the object nearer the origin along the axis (top or left).
  Object& first = (relation == 0 || relation == 2) ? a : b;
  Object& second = (relation == 0 || relation == 2) ? b : a;
  const float slack = std::max(0.f, S - 2 * m - first.side - second.side - gap);
  float u1 = d.u() * slack, u2 = d.u() * slack;
  if (u1 > u2) std::swap(u1, u2);
  const float f_along = m + u1 + first.side / 2;
  const float s_along = m + first.side + gap + u2 + second.side / 2;
  const float sep = s_along - f_along;
  // Across the axis: first anywhere valid, second within ±sep/2 of it (and valid).
  const float f_lo = m + first.side / 2, f_hi = S - m - first.side / 2;
  const float f_across = d.range(f_lo, std::max(f_lo, f_hi));
  const float s_lo = std::max(m + second.side / 2, f_across - 0.5f * sep);
  const float s_hi = std::min(S - m - second.side / 2, f_across + 0.5f * sep);
  const float s_across = s_hi >= s_lo ? d.range(s_lo, s_hi) : std::clamp(f_across, m + second.side / 2, S - m - second.side / 2);
  if (vertical) {
    first.cy = f_along; second.cy = s_along; first.cx = f_across; second.cx = s_across;
  } else {
    first.cx = f_along; second.cx = s_along; first.cy = f_across; second.cy = s_across;
  }
}

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

void write_text_file(const std::string& path, const std::string& text) { write_file_atomic(path, text); }

}  // namespace

const char* colour_name(int c) { return c >= 0 && c < kNumColours ? kColourNames[c] : "?"; }
const char* shape_name(int s) { return s >= 0 && s < kNumShapes ? kShapeNames[s] : "?"; }
const char* size_name(int s) { return s >= 0 && s < kNumSizes ? kSizeNames[s] : "?"; }
const char* relation_name(int r) { return r >= 0 && r < kNumRelations ? kRelationNames[r] : "?"; }
std::array<uint8_t, 3> colour_rgb(int c) { return kColourRgb[std::clamp(c, 0, kNumColours - 1)]; }
std::array<uint8_t, 3> background_rgb() { return kBackground; }

float shape_fill(int shape) {
  switch (shape) {
    case 0: return 0.78539816f;  // π/4
    case 1: return 1.f;
    case 2: return 0.5f;
    default: {
      const float a = kCrossArm, arm = (1.f - a) / 2.f;
      return 1.f - 4.f * arm * arm;
    }
  }
}

bool Combo::matches(int colour_, int shape_, int size_) const {
  if (colour >= 0 && colour != colour_) return false;
  if (shape >= 0 && shape != shape_) return false;
  if (size >= 0 && size != size_) return false;
  return true;
}

std::string Combo::str() const {
  std::string s;
  auto add = [&](const char* w) { s += (s.empty() ? "" : ":") + std::string(w); };
  if (size >= 0) add(size_name(size));
  if (colour >= 0) add(colour_name(colour));
  if (shape >= 0) add(shape_name(shape));
  return s;
}

bool Holdout::matches(int colour, int shape, int size) const {
  for (const auto& c : combos)
    if (c.matches(colour, shape, size)) return true;
  return false;
}

std::vector<std::string> Holdout::strs() const {
  std::vector<std::string> v;
  for (const auto& c : combos) v.push_back(c.str());
  return v;
}

Holdout parse_holdout(const std::string& list) {
  Holdout h;
  std::string item;
  auto flush = [&] {
    if (item.empty()) return;
    Combo c;
    std::string word;
    auto take = [&] {
      if (word.empty()) fail("--holdout item \"", item, "\": empty attribute (write e.g. red:triangle)");
      const std::string w = lower(word);
      int k;
      if ((k = find_word(kColourNames, kNumColours, w)) >= 0) {
        if (c.colour >= 0) fail("--holdout item \"", item, "\" names two colours");
        c.colour = k;
      } else if ((k = find_word(kShapeNames, kNumShapes, w)) >= 0) {
        if (c.shape >= 0) fail("--holdout item \"", item, "\" names two shapes");
        c.shape = k;
      } else if ((k = find_word(kSizeNames, kNumSizes, w)) >= 0) {
        if (c.size >= 0) fail("--holdout item \"", item, "\" names two sizes");
        c.size = k;
      } else {
        fail("--holdout item \"", item, "\": unknown word \"", word,
             "\" (colours: red green blue yellow purple orange; shapes: circle square triangle cross; sizes: small large)");
      }
      word.clear();
    };
    for (char ch : item) {
      if (ch == ':') take();
      else word += ch;
    }
    take();
    bool dup = false;
    for (const auto& o : h.combos) dup |= o.colour == c.colour && o.shape == c.shape && o.size == c.size;
    if (!dup) h.combos.push_back(c);
    item.clear();
  };
  for (char ch : list) {
    if (ch == ',' || ch == ';' || std::isspace((unsigned char)ch)) flush();
    else item += ch;
  }
  flush();
  bool any_left = false;
  for (int c = 0; c < kNumColours && !any_left; ++c)
    for (int s = 0; s < kNumShapes && !any_left; ++s)
      for (int z = 0; z < kNumSizes && !any_left; ++z) any_left = !h.matches(c, s, z);
  if (!any_left) fail("--holdout \"", list, "\" excludes every combination: nothing would be left to train on");
  return h;
}

bool inside_shape(int shape, float cx, float cy, float side, float x, float y) {
  const float h = side / 2, dx = x - cx, dy = y - cy;
  switch (shape) {
    case 0: return dx * dx + dy * dy <= h * h;
    case 1: return std::fabs(dx) <= h && std::fabs(dy) <= h;
    case 2:  // apex up, base at the bottom, bbox = side × side
      return dy <= h && dy >= -h && std::fabs(dx) <= (dy + h) * 0.5f;
    default: {
      const float a = side * kCrossArm / 2;
      if (std::fabs(dx) > h || std::fabs(dy) > h) return false;
      return std::fabs(dx) <= a || std::fabs(dy) <= a;
    }
  }
}

float coverage(int shape, float cx, float cy, float side, int px, int py, int ss) {
  int n = 0;
  const float step = 1.f / ss;
  for (int j = 0; j < ss; ++j) {
    const float y = py + (j + 0.5f) * step;
    for (int i = 0; i < ss; ++i)
      if (inside_shape(shape, cx, cy, side, px + (i + 0.5f) * step, y)) ++n;
  }
  return (float)n / (float)(ss * ss);
}

std::string scene_caption(const Scene& s) {
  auto np = [](const Object& o) {
    std::string t = o.size_in_caption ? std::string(size_name(o.size)) + " " : std::string();
    t += std::string(colour_name(o.colour)) + " " + shape_name(o.shape);
    return (std::strchr("aeiou", t[0]) ? "an " : "a ") + t;
  };
  if (s.objects.empty()) return "";
  if (s.objects.size() == 1) return np(s.objects[0]);
  return np(s.objects[0]) + " " + relation_name(s.relation) + " " + np(s.objects[1]);
}

Scene make_scene(uint64_t seed, uint64_t stream_tag, uint64_t index, int S, const Holdout& holdout, SceneKind kind,
                 float two_fraction) {
  if (kind == SceneKind::HeldOut && holdout.empty()) fail("make_scene: a held-out scene needs a non-empty holdout");
  Draw d{seed, (stream_tag << 48) ^ index};
  Scene sc;
  const bool two = d.u() < two_fraction;
  const int n = two ? 2 : 1;
  sc.objects.resize(n);
  const int held_slot = kind == SceneKind::HeldOut ? d.below(n) : -1;
  for (int k = 0; k < n; ++k) {
    Object& o = sc.objects[k];
    for (int t = 0; t < 64; ++t) {
      if (k == held_slot) sample_heldout(d, o, holdout);
      else if (kind == SceneKind::HeldOut) sample_attrs(d, o);  // the other object: anything
      else sample_seen(d, o, holdout);
      // Two objects must differ in colour or shape so the caption identifies each.
      if (k == 0 || o.colour != sc.objects[0].colour || o.shape != sc.objects[0].shape) break;
    }
    if (k == 1 && o.colour == sc.objects[0].colour && o.shape == sc.objects[0].shape) {
      // Vanishingly rare: step the colour until it differs (never onto a held-out combination
      // for seen scenes).
      for (int step = 1; step < kNumColours; ++step) {
        int c = (o.colour + step) % kNumColours;
        if (kind != SceneKind::HeldOut && holdout.matches(c, o.shape, o.size)) continue;
        o.colour = c;
        break;
      }
    }
    o.side = sample_side(d, o.size, S);
    o.size_in_caption = n == 1 || d.u() < 0.5f;
    // A held-out combination that involves a size is only asked for when the caption says the size.
    for (const Combo& c : holdout.combos)
      if (c.size >= 0 && c.matches(o.colour, o.shape, o.size)) o.size_in_caption = true;
  }
  if (n == 1) {
    place_one(d, sc.objects[0], S);
  } else {
    sc.relation = d.below(kNumRelations);
    place_two(d, sc.objects[0], sc.objects[1], sc.relation, S);
  }
  for (const auto& o : sc.objects) sc.heldout |= holdout.matches(o.colour, o.shape, o.size);
  sc.caption = scene_caption(sc);
  return sc;
}

Image render_scene(const Scene& s, int S) {
  Image img;
  img.width = img.height = S;
  img.rgb.resize((size_t)S * S * 3);
  std::vector<float> px((size_t)S * S * 3);
  for (size_t i = 0; i < (size_t)S * S; ++i)
    for (int c = 0; c < 3; ++c) px[3 * i + c] = kBackground[c];
  const int ss = S <= 128 ? 8 : 4;
  for (const Object& o : s.objects) {
    const auto col = colour_rgb(o.colour);
    const int x0 = std::max(0, (int)std::floor(o.cx - o.side / 2) - 1), x1 = std::min(S - 1, (int)std::ceil(o.cx + o.side / 2) + 1);
    const int y0 = std::max(0, (int)std::floor(o.cy - o.side / 2) - 1), y1 = std::min(S - 1, (int)std::ceil(o.cy + o.side / 2) + 1);
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) {
        const float a = coverage(o.shape, o.cx, o.cy, o.side, x, y, ss);
        if (a <= 0.f) continue;
        float* p = &px[3 * ((size_t)y * S + x)];
        for (int c = 0; c < 3; ++c) p[c] += a * (col[c] - p[c]);
      }
  }
  for (size_t i = 0; i < px.size(); ++i) img.rgb[i] = (uint8_t)std::clamp((int)std::lround(px[i]), 0, 255);
  return img;
}

GenerateSummary generate_dataset(const GenerateOptions& opt) {
  if (opt.out_dir.empty()) fail("data shapes: --out DIR is required");
  if (opt.count < 0 || opt.count > 10000000) fail("data shapes: --count ", opt.count, " must be in [0, 10000000]");
  if (opt.size < 16 || opt.size > 2048) fail("data shapes: --size ", opt.size, " must be in [16, 2048]");
  if (opt.prompts < 0 || opt.prompts > 1000000) fail("data shapes: --prompts ", opt.prompts, " must be in [0, 1000000]");
  if (!(opt.two_fraction >= 0.f && opt.two_fraction <= 1.f))
    fail("data shapes: --two-fraction ", opt.two_fraction, " must be in [0, 1]");
  const bool test = opt.split == "test";
  if (!test && opt.split != "train") fail("data shapes: --split must be train or test, not \"", opt.split, "\"");
  const Holdout holdout = parse_holdout(opt.holdout);

  const fs::path dir(opt.out_dir);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) fail(opt.out_dir, ": exists and is not a directory");
  if (fs::exists(dir / "manifest.json", ec)) {
    if (!opt.force)
      fail(opt.out_dir, ": already holds a dataset (manifest.json): pass --force to replace it, or choose another --out");
    // Remove only files this command writes.
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      const std::string stem = e.path().stem().string(), ext = e.path().extension().string();
      const bool numbered = !stem.empty() && std::all_of(stem.begin(), stem.end(), [](char c) { return c >= '0' && c <= '9'; });
      if ((numbered && (ext == ".png" || ext == ".txt")) || n == "manifest.json" || n == "prompts_seen.txt" ||
          n == "prompts_heldout.txt")
        fs::remove(e.path(), ec);
    }
  }
  fs::create_directories(dir, ec);
  if (ec) fail(opt.out_dir, ": cannot create directory: ", ec.message());

  const uint64_t tag = test ? 2 : 1;
  const int width = std::max(6, (int)std::to_string(std::max(opt.count - 1, 0)).size());
  std::vector<Scene> scenes(opt.count);
  std::vector<std::string> names(opt.count);
  parallel_for(opt.count, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      SceneKind kind = SceneKind::Train;
      if (test) {
        // Test split: half the images contain a held-out combination (when there is a holdout).
        kind = !holdout.empty() && uniform_at(opt.seed, (uint64_t)5 << 48, (uint64_t)i) < 0.5f ? SceneKind::HeldOut
                                                                                                : SceneKind::Seen;
      }
      Scene sc = make_scene(opt.seed, tag, (uint64_t)i, opt.size, holdout, kind, opt.two_fraction);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%0*lld", width, (long long)i);
      names[i] = buf;
      const std::string base = (dir / names[i]).string();
      save_png(base + ".png", render_scene(sc, opt.size));
      write_text_file(base + ".txt", sc.caption + "\n");
      scenes[i] = std::move(sc);
    }
  }, 16);

  GenerateSummary sum;
  using json = nlohmann::ordered_json;
  json images = json::array();
  for (int i = 0; i < opt.count; ++i) {
    const Scene& sc = scenes[i];
    json objs = json::array();
    for (const Object& o : sc.objects) {
      const float x0 = o.cx - o.side / 2, y0 = o.cy - o.side / 2;
      auto r3 = [](float v) { return std::round(v * 1000.f) / 1000.f; };
      objs.push_back({{"colour", colour_name(o.colour)},
                      {"shape", shape_name(o.shape)},
                      {"size", size_name(o.size)},
                      {"bbox", {r3(x0), r3(y0), r3(o.side), r3(o.side)}},
                      {"centre", {r3(o.cx), r3(o.cy)}}});
    }
    json rec = {{"file", names[i] + ".png"}, {"caption", sc.caption}, {"objects", std::move(objs)}};
    rec["relation"] = sc.relation >= 0 ? json(relation_name(sc.relation)) : json(nullptr);
    rec["split"] = opt.split;
    rec["heldout"] = sc.heldout;
    rec["seed"] = opt.seed;
    rec["index"] = i;
    rec["licence"] = kLicence;
    images.push_back(std::move(rec));
    sum.images++;
    sum.heldout_images += sc.heldout;
  }

  // Evaluation prompts: independent streams, so they are the same for any --count and --split.
  std::vector<std::string> seen, held;
  auto collect = [&](SceneKind kind, uint64_t stream_tag, std::vector<std::string>& out) {
    std::set<std::string> uniq;
    for (uint64_t i = 0; (int)out.size() < opt.prompts && i < (uint64_t)opt.prompts * 50 + 100; ++i) {
      Scene sc = make_scene(opt.seed, stream_tag, i, opt.size, holdout, kind, opt.two_fraction);
      if (uniq.insert(sc.caption).second) out.push_back(sc.caption);
    }
  };
  collect(SceneKind::Seen, 3, seen);
  if (!holdout.empty()) collect(SceneKind::HeldOut, 4, held);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += x + "\n";
    return s;
  };
  write_text_file((dir / "prompts_seen.txt").string(), join(seen));
  write_text_file((dir / "prompts_heldout.txt").string(), join(held));
  sum.seen_prompts = (int)seen.size();
  sum.heldout_prompts = (int)held.size();

  json colours = json::object();
  for (int c = 0; c < kNumColours; ++c) {
    auto rgb = colour_rgb(c);
    colours[colour_name(c)] = {rgb[0], rgb[1], rgb[2]};
  }
  json manifest = {{"generator", "oboro data shapes"},
                   {"version", 1},
                   {"licence", kLicence},
                   {"split", opt.split},
                   {"seed", opt.seed},
                   {"size", opt.size},
                   {"count", opt.count},
                   {"two_fraction", opt.two_fraction},
                   {"holdout", holdout.strs()},
                   {"background", {kBackground[0], kBackground[1], kBackground[2]}},
                   {"colours", colours},
                   {"shapes", std::vector<std::string>(kShapeNames, kShapeNames + kNumShapes)},
                   {"sizes", {{"small", {kSmallMin, kSmallMax}}, {"large", {kLargeMin, kLargeMax}}}},
                   {"relations", std::vector<std::string>(kRelationNames, kRelationNames + kNumRelations)},
                   {"prompts", {{"seen", "prompts_seen.txt"}, {"heldout", "prompts_heldout.txt"}}},
                   {"images", std::move(images)}};
  write_text_file((dir / "manifest.json").string(), manifest.dump(1) + "\n");
  return sum;
}

}  // namespace oboro::shapes
