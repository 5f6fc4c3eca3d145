// Shapes evaluator: prompt parsing, object detection, scoring, directory reports.
#include "data/shapes_eval.h"

#include "core/error.h"
#include "core/threads.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace oboro::shapes {

namespace fs = std::filesystem;

namespace {

// ---- tunables of the detector ----
constexpr float kMinStep = 24.f;   // |pixel - background| below this is background (0..255 units)
constexpr float kFgAlpha = 0.45f;  // unmixed coverage at which a pixel counts as the object
constexpr float kCoreAlpha = 0.8f; // pixels used to measure an object's colour
constexpr int kGrid = 8;           // shape descriptor: soft mask resampled to kGrid × kGrid
constexpr int kDesc = kGrid * kGrid + 1;
constexpr float kAspectWeight = 2.f;

struct Lab { float L, a, b; };

float srgb_to_linear(float u) {
  u /= 255.f;
  return u <= 0.04045f ? u / 12.92f : std::pow((u + 0.055f) / 1.055f, 2.4f);
}

Lab to_lab(float r, float g, float b) {
  const float R = srgb_to_linear(r), G = srgb_to_linear(g), B = srgb_to_linear(b);
  float X = (0.4124f * R + 0.3576f * G + 0.1805f * B) / 0.95047f;
  float Y = 0.2126f * R + 0.7152f * G + 0.0722f * B;
  float Z = (0.0193f * R + 0.1192f * G + 0.9505f * B) / 1.08883f;
  auto f = [](float t) { return t > 0.008856f ? std::cbrt(t) : 7.787f * t + 16.f / 116.f; };
  const float fx = f(X), fy = f(Y), fz = f(Z);
  return {116.f * fy - 16.f, 500.f * (fx - fy), 200.f * (fy - fz)};
}

float lab_dist2(const Lab& p, const Lab& q) {
  return (p.L - q.L) * (p.L - q.L) + (p.a - q.a) * (p.a - q.a) + (p.b - q.b) * (p.b - q.b);
}

using Desc = std::array<float, kDesc>;

// Area-average of mask m (row stride mw) over the window [bx0, bx1] × [by0, by1] into kGrid².
Desc describe(const float* m, int mw, int bx0, int by0, int bx1, int by1) {
  Desc d{};
  const int bw = bx1 - bx0 + 1, bh = by1 - by0 + 1;
  const float sx = (float)bw / kGrid, sy = (float)bh / kGrid;
  for (int gy = 0; gy < kGrid; ++gy) {
    const float ya = gy * sy, yb = (gy + 1) * sy;
    for (int gx = 0; gx < kGrid; ++gx) {
      const float xa = gx * sx, xb = (gx + 1) * sx;
      float acc = 0, wsum = 0;
      for (int y = (int)std::floor(ya); y < (int)std::ceil(yb) && y < bh; ++y) {
        const float wy = std::min(yb, (float)y + 1) - std::max(ya, (float)y);
        if (wy <= 0) continue;
        for (int x = (int)std::floor(xa); x < (int)std::ceil(xb) && x < bw; ++x) {
          const float wx = std::min(xb, (float)x + 1) - std::max(xa, (float)x);
          if (wx <= 0) continue;
          acc += wx * wy * m[(size_t)(by0 + y) * mw + (bx0 + x)];
          wsum += wx * wy;
        }
      }
      d[gy * kGrid + gx] = wsum > 0 ? acc / wsum : 0.f;
    }
  }
  d[kGrid * kGrid] = kAspectWeight * std::log((float)bw / (float)bh);
  return d;
}

struct Proto {
  int shape;
  Desc d;
};

// Descriptors of the renderer's own shapes at many sizes and sub-pixel offsets (sharp, and
// slightly blurred for soft generated images), passed through the same mask/bbox pipeline.
std::vector<Proto> build_prototypes() {
  std::vector<float> sides;
  for (float s = 4.f; s <= 16.f; s += 0.5f) sides.push_back(s);
  for (float s = 17.f; s <= 24.f; s += 1.f) sides.push_back(s);
  for (float s : {26.f, 28.f, 32.f, 40.f, 48.f}) sides.push_back(s);
  const float offs[3] = {0.f, 1.f / 3.f, 2.f / 3.f};
  struct Job { int shape; float side, ox, oy; };
  std::vector<Job> jobs;
  for (int sh = 0; sh < kNumShapes; ++sh)
    for (float s : sides)
      for (float ox : offs)
        for (float oy : offs) jobs.push_back({sh, s, ox, oy});
  constexpr int kBlurLevels = 3;
  std::vector<Proto> out(jobs.size() * kBlurLevels);
  parallel_for((int64_t)jobs.size(), [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const Job& jb = jobs[j];
      const int C = (int)std::ceil(jb.side) + 6;
      const float cx = 3.f + jb.side / 2 + jb.ox, cy = 3.f + jb.side / 2 + jb.oy;
      std::vector<float> cov((size_t)C * C);
      for (int y = 0; y < C; ++y)
        for (int x = 0; x < C; ++x) cov[(size_t)y * C + x] = coverage(jb.shape, cx, cy, jb.side, x, y, 8);
      // 3×3 binomial blur (separable [1 2 1]/4), applied once and twice.
      auto blur3 = [C](const std::vector<float>& in) {
        std::vector<float> tmp(in.size()), out(in.size());
        for (int y = 0; y < C; ++y)
          for (int x = 0; x < C; ++x)
            tmp[(size_t)y * C + x] = 0.25f * in[(size_t)y * C + std::max(x - 1, 0)] + 0.5f * in[(size_t)y * C + x] +
                                     0.25f * in[(size_t)y * C + std::min(x + 1, C - 1)];
        for (int y = 0; y < C; ++y)
          for (int x = 0; x < C; ++x)
            out[(size_t)y * C + x] = 0.25f * tmp[(size_t)std::max(y - 1, 0) * C + x] + 0.5f * tmp[(size_t)y * C + x] +
                                     0.25f * tmp[(size_t)std::min(y + 1, C - 1) * C + x];
        return out;
      };
      const std::vector<float> blur1 = blur3(cov), blur2 = blur3(blur1);
      for (int v = 0; v < kBlurLevels; ++v) {
        const std::vector<float>& m = v == 0 ? cov : v == 1 ? blur1 : blur2;
        int x0 = C, y0 = C, x1 = -1, y1 = -1;
        for (int y = 0; y < C; ++y)
          for (int x = 0; x < C; ++x)
            if (m[(size_t)y * C + x] >= kFgAlpha) {
              x0 = std::min(x0, x); x1 = std::max(x1, x); y0 = std::min(y0, y); y1 = std::max(y1, y);
            }
        Proto& p = out[kBlurLevels * j + v];
        p.shape = jb.shape;
        if (x1 < 0) { p.d.fill(1e6f); continue; }  // nothing above threshold: never the nearest
        std::vector<float> mm(m);
        for (auto& q : mm) q = std::min(q, 1.f);
        p.d = describe(mm.data(), C, x0, y0, x1, y1);
      }
    }
  }, 8);
  return out;
}

const std::vector<Proto>& prototypes() {
  static const std::vector<Proto> p = build_prototypes();
  return p;
}

int classify_shape(const Desc& d) {
  float best = INFINITY;
  int shape = 0;
  for (const Proto& p : prototypes()) {
    float s = 0;
    for (int k = 0; k < kDesc; ++k) {
      const float t = d[k] - p.d[k];
      s += t * t;
    }
    if (s < best) { best = s; shape = p.shape; }
  }
  return shape;
}

const std::array<Lab, kNumColours>& palette_lab() {
  static const std::array<Lab, kNumColours> p = [] {
    std::array<Lab, kNumColours> a;
    for (int c = 0; c < kNumColours; ++c) {
      auto rgb = colour_rgb(c);
      a[c] = to_lab(rgb[0], rgb[1], rgb[2]);
    }
    return a;
  }();
  return p;
}

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

bool is_image_path(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".webp" || e == ".bmp";
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace((unsigned char)s[a])) ++a;
  while (b > a && std::isspace((unsigned char)s[b - 1])) --b;
  return s.substr(a, b - a);
}

}  // namespace

// ---- prompts ----

std::string prompt_from_infotext(const std::string& parameters) {
  std::istringstream ss(parameters);
  std::string line, out;
  bool first = true;
  while (std::getline(ss, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("Negative prompt:", 0) == 0 || line.rfind("Steps:", 0) == 0) break;
    out += (first ? "" : "\n") + line;
    first = false;
  }
  return trim(out);
}

ParsedPrompt parse_prompt(const std::string& prompt) {
  ParsedPrompt p;
  std::vector<std::string> words;
  std::string w;
  for (char ch : prompt) {
    if (std::isalpha((unsigned char)ch)) w += (char)std::tolower((unsigned char)ch);
    else if (!w.empty()) { words.push_back(w); w.clear(); }
  }
  if (!w.empty()) words.push_back(w);

  ExpectedObject cur;
  bool pending = false;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& t = words[i];
    int colour = -1, shape = -1, size = -1, rel = -1;
    if (t == "red") colour = 0;
    else if (t == "green") colour = 1;
    else if (t == "blue") colour = 2;
    else if (t == "yellow") colour = 3;
    else if (t == "purple" || t == "magenta" || t == "violet") colour = 4;
    else if (t == "orange") colour = 5;
    else if (t == "circle" || t == "circles" || t == "disc" || t == "disk") shape = 0;
    else if (t == "square" || t == "squares") shape = 1;
    else if (t == "triangle" || t == "triangles") shape = 2;
    else if (t == "cross" || t == "crosses" || t == "plus") shape = 3;
    else if (t == "small" || t == "little" || t == "tiny") size = 0;
    else if (t == "large" || t == "big") size = 1;
    else if (t == "above" || t == "over" || t == "top") rel = 0;
    else if (t == "below" || t == "under" || t == "beneath" || t == "underneath") rel = 1;
    else if (t == "left") rel = 2;
    else if (t == "right") rel = 3;
    if (colour >= 0) { cur.colour = colour; pending = true; }
    if (size >= 0) { cur.size = size; pending = true; }
    if (shape >= 0) {
      cur.shape = shape;
      p.objects.push_back(cur);
      cur = ExpectedObject{};
      pending = false;
    }
    if (rel >= 0) {
      if (p.relation >= 0) { p.error = "more than one relation"; return p; }
      if (p.objects.size() != 1 || pending) { p.error = "relation word not between two objects"; return p; }
      p.relation = rel;
    }
  }
  if (pending) { p.error = "colour/size word without a shape"; return p; }
  if (p.objects.empty()) { p.error = "no shape named (circle, square, triangle, cross)"; return p; }
  if (p.objects.size() > 2) { p.error = "more than two objects"; return p; }
  if (p.objects.size() == 2 && p.relation < 0) { p.error = "two objects but no relation (above, below, left of, right of)"; return p; }
  if (p.objects.size() == 1 && p.relation >= 0) { p.error = "relation with only one object"; return p; }
  p.ok = true;
  return p;
}

// ---- detection ----

std::vector<Detection> detect_objects(const Image& img) {
  std::vector<Detection> out;
  const int W = img.width, H = img.height;
  if (W < 4 || H < 4 || img.rgb.size() != (size_t)W * H * 3) return out;
  const size_t N = (size_t)W * H;

  // Background: per-channel median of a border band.
  const int band = std::max(1, std::min(W, H) / 32);
  std::array<float, 3> bg{};
  {
    std::array<std::vector<uint8_t>, 3> ch;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        if (x < band || y < band || x >= W - band || y >= H - band)
          for (int c = 0; c < 3; ++c) ch[c].push_back(img.rgb[3 * ((size_t)y * W + x) + c]);
    for (int c = 0; c < 3; ++c) {
      auto& v = ch[c];
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      bg[c] = v[v.size() / 2];
    }
  }
  // Palette directions from the background; colours too close to it cannot be separated.
  std::array<std::array<float, 3>, kNumColours> dir{};
  std::array<float, kNumColours> dir2{};
  std::array<bool, kNumColours> usable{};
  for (int c = 0; c < kNumColours; ++c) {
    auto rgb = colour_rgb(c);
    for (int k = 0; k < 3; ++k) dir[c][k] = rgb[k] - bg[k];
    dir2[c] = dir[c][0] * dir[c][0] + dir[c][1] * dir[c][1] + dir[c][2] * dir[c][2];
    usable[c] = dir2[c] >= 40.f * 40.f;
  }
  auto unmix = [&](size_t i, int c) {
    const uint8_t* p = &img.rgb[3 * i];
    return ((p[0] - bg[0]) * dir[c][0] + (p[1] - bg[1]) * dir[c][1] + (p[2] - bg[2]) * dir[c][2]) / dir2[c];
  };

  // Per pixel: the palette line (background → colour) the pixel lies closest to, and its
  // coverage along that line.
  std::vector<int8_t> label(N, -1);
  std::vector<float> alpha(N, 0.f);
  for (size_t i = 0; i < N; ++i) {
    const uint8_t* p = &img.rgb[3 * i];
    const float v[3] = {p[0] - bg[0], p[1] - bg[1], p[2] - bg[2]};
    if (v[0] * v[0] + v[1] * v[1] + v[2] * v[2] < kMinStep * kMinStep) continue;
    float best = INFINITY, best_a = 0;
    int bc = -1;
    for (int c = 0; c < kNumColours; ++c) {
      if (!usable[c]) continue;
      const float a = (v[0] * dir[c][0] + v[1] * dir[c][1] + v[2] * dir[c][2]) / dir2[c];
      if (a <= 0.2f) continue;
      const float r0 = v[0] - a * dir[c][0], r1 = v[1] - a * dir[c][1], r2 = v[2] - a * dir[c][2];
      const float r = r0 * r0 + r1 * r1 + r2 * r2;
      if (r < best) { best = r; bc = c; best_a = a; }
    }
    if (bc >= 0 && best_a >= kFgAlpha) {
      label[i] = (int8_t)bc;
      alpha[i] = best_a;
    }
  }

  // Connected pieces (8-connectivity) over pixels accepted by `same(seed, neighbour)`.
  auto flood = [&](std::vector<int>& id_map, const std::vector<int>& seeds, auto&& same) {
    std::vector<std::vector<int>> pieces;
    std::vector<int> stack;
    for (int s : seeds) {
      if (id_map[s] >= 0) continue;
      const int id = (int)pieces.size();
      pieces.emplace_back();
      stack.assign(1, s);
      id_map[s] = id;
      while (!stack.empty()) {
        const int q = stack.back();
        stack.pop_back();
        pieces[id].push_back(q);
        const int qx = q % W, qy = q / W;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int nx = qx + dx, ny = qy + dy;
            if ((dx | dy) == 0 || nx < 0 || ny < 0 || nx >= W || ny >= H) continue;
            const int n = ny * W + nx;
            if (id_map[n] < 0 && same(s, n)) {
              id_map[n] = id;
              stack.push_back(n);
            }
          }
      }
    }
    return pieces;
  };
  // Mean colour (CIELAB) of a pixel set, from its core pixels when it has any.
  auto mean_lab = [&](const std::vector<int>& px) {
    double sr = 0, sg = 0, sb = 0;
    int n = 0;
    for (int pass = 0; pass < 2 && n == 0; ++pass)
      for (int q : px)
        if (pass == 1 || alpha[q] >= kCoreAlpha) {
          sr += img.rgb[3 * (size_t)q]; sg += img.rgb[3 * (size_t)q + 1]; sb += img.rgb[3 * (size_t)q + 2];
          ++n;
        }
    return to_lab((float)(sr / n), (float)(sg / n), (float)(sb / n));
  };

  std::vector<int> fg_seeds;
  for (size_t i = 0; i < N; ++i)
    if (label[i] >= 0) fg_seeds.push_back((int)i);
  // Blobs: connected foreground, whatever the colour label.
  std::vector<int> blob_id(N, -1);
  const auto blobs = flood(blob_id, fg_seeds, [&](int, int n) { return label[n] >= 0; });
  // Pieces: connected pixels of one label (within a blob by construction).
  std::vector<int> piece_id(N, -1);
  const auto pieces = flood(piece_id, fg_seeds, [&](int s, int n) { return label[n] == label[s]; });
  const size_t min_area = std::max<size_t>(4, (size_t)std::lround(0.004 * (double)N));

  // Objects: a blob is one object unless it holds large pieces of clearly different colours (two
  // objects touching); pieces of similar colour (an object whose colour drifts across a palette
  // boundary) stay together. Small pieces join the nearest-coloured object of their blob.
  constexpr float kSameObjectDE = 25.f;
  std::vector<std::vector<int>> objects;
  std::vector<int> obj_id(N, -1);
  std::vector<std::vector<int>> blob_pieces(blobs.size());
  for (size_t p = 0; p < pieces.size(); ++p) blob_pieces[blob_id[pieces[p][0]]].push_back((int)p);
  for (size_t b = 0; b < blobs.size(); ++b) {
    if (blobs[b].size() < min_area) continue;
    std::vector<int> big;
    std::vector<Lab> big_lab;
    for (int p : blob_pieces[b])
      if (pieces[p].size() >= min_area) { big.push_back(p); big_lab.push_back(mean_lab(pieces[p])); }
    // Group big pieces by colour (single linkage).
    std::vector<int> group(big.size(), -1);
    int ngroups = 0;
    for (size_t i = 0; i < big.size(); ++i) {
      if (group[i] >= 0) continue;
      group[i] = ngroups;
      std::vector<size_t> todo{i};
      while (!todo.empty()) {
        const size_t a = todo.back();
        todo.pop_back();
        for (size_t j = 0; j < big.size(); ++j)
          if (group[j] < 0 && lab_dist2(big_lab[a], big_lab[j]) < kSameObjectDE * kSameObjectDE) {
            group[j] = ngroups;
            todo.push_back(j);
          }
      }
      ++ngroups;
    }
    if (ngroups <= 1) {
      for (int q : blobs[b]) obj_id[q] = (int)objects.size();
      objects.push_back(blobs[b]);
      continue;
    }
    std::vector<Lab> group_lab(ngroups);
    std::vector<size_t> group_px(ngroups, 0);
    for (size_t i = 0; i < big.size(); ++i)
      if (pieces[big[i]].size() > group_px[group[i]]) { group_px[group[i]] = pieces[big[i]].size(); group_lab[group[i]] = big_lab[i]; }
    const int base = (int)objects.size();
    objects.resize(base + ngroups);
    for (int p : blob_pieces[b]) {
      int g = -1;
      for (size_t i = 0; i < big.size(); ++i)
        if (big[i] == p) g = group[i];
      if (g < 0) {
        const Lab l = mean_lab(pieces[p]);
        float best = INFINITY;
        for (int k = 0; k < ngroups; ++k)
          if (lab_dist2(l, group_lab[k]) < best) { best = lab_dist2(l, group_lab[k]); g = k; }
      }
      for (int q : pieces[p]) obj_id[q] = base + g;
      objects[base + g].insert(objects[base + g].end(), pieces[p].begin(), pieces[p].end());
    }
  }

  const float S = (float)std::min(W, H);
  for (size_t k = 0; k < objects.size(); ++k) {
    const std::vector<int>& px = objects[k];
    if (px.empty()) continue;
    Detection d;
    // Colour: mean of the core pixels, nearest palette entry in CIELAB.
    const Lab lab = mean_lab(px);
    float best = INFINITY;
    for (int c = 0; c < kNumColours; ++c) {
      const float dd = lab_dist2(lab, palette_lab()[c]);
      if (dd < best) { best = dd; d.colour = c; }
    }
    // Coverage is measured along the object's most common label.
    std::array<int, kNumColours> votes{};
    for (int q : px) votes[label[q]]++;
    const int main_label = (int)(std::max_element(votes.begin(), votes.end()) - votes.begin());
    // Soft mask over the bbox grown by one pixel (to include the anti-aliased fringe).
    int x0 = W, y0 = H, x1 = -1, y1 = -1;
    for (int q : px) {
      x0 = std::min(x0, q % W); x1 = std::max(x1, q % W);
      y0 = std::min(y0, q / W); y1 = std::max(y1, q / W);
    }
    d.x0 = x0; d.y0 = y0; d.x1 = x1; d.y1 = y1;
    const int gx0 = std::max(0, x0 - 1), gy0 = std::max(0, y0 - 1), gx1 = std::min(W - 1, x1 + 1), gy1 = std::min(H - 1, y1 + 1);
    const int mw = gx1 - gx0 + 1, mh = gy1 - gy0 + 1;
    std::vector<float> m((size_t)mw * mh, 0.f);
    double area = 0, mx = 0, my = 0;
    for (int y = gy0; y <= gy1; ++y)
      for (int x = gx0; x <= gx1; ++x) {
        const size_t i = (size_t)y * W + x;
        float a;
        if (obj_id[i] == (int)k) a = std::max(std::min(unmix(i, main_label), 1.f), kFgAlpha);
        else if (label[i] >= 0) a = 0.f;  // another object or a dropped speck
        else a = std::clamp(unmix(i, main_label), 0.f, kFgAlpha);
        m[(size_t)(y - gy0) * mw + (x - gx0)] = a;
        area += a;
        mx += a * (x + 0.5);
        my += a * (y + 0.5);
      }
    (void)mh;
    const Desc desc = describe(m.data(), mw, x0 - gx0, y0 - gy0, x1 - gx0, y1 - gy0);
    d.shape = classify_shape(desc);
    d.area = (float)area;
    d.cx = area > 0 ? (float)(mx / area) : (x0 + x1 + 1) * 0.5f;
    d.cy = area > 0 ? (float)(my / area) : (y0 + y1 + 1) * 0.5f;
    d.side = std::sqrt(std::max(0.f, d.area) / shape_fill(d.shape));
    d.size = d.side / S >= kSizeThreshold ? 1 : 0;
    out.push_back(d);
  }
  std::stable_sort(out.begin(), out.end(), [](const Detection& a, const Detection& b) { return a.area > b.area; });
  return out;
}

// ---- scoring ----

namespace {

bool relation_holds(int rel, const Detection& a, const Detection& b) {
  const float dx = b.cx - a.cx, dy = b.cy - a.cy;
  switch (rel) {
    case 0: return dy > 0 && std::fabs(dy) >= std::fabs(dx);   // a above b
    case 1: return dy < 0 && std::fabs(dy) >= std::fabs(dx);   // a below b
    case 2: return dx > 0 && std::fabs(dx) > std::fabs(dy);    // a left of b
    case 3: return dx < 0 && std::fabs(dx) > std::fabs(dy);    // a right of b
    default: return false;
  }
}

int attr_matches(const ExpectedObject& e, const Detection& d) {
  return (e.colour >= 0 && e.colour == d.colour) + (e.shape == d.shape) + (e.size >= 0 && e.size == d.size);
}

}  // namespace

ImageScore score_image(const ParsedPrompt& p, const std::vector<Detection>& det) {
  ImageScore s;
  const int E = (int)p.objects.size();
  s.objects = E;
  for (const auto& e : p.objects) s.size_n += e.size >= 0;
  s.relation_n = E == 2 ? 1 : 0;
  s.count_ok = (int)det.size() == E;
  // Best assignment of expected objects to (the largest 16) detections.
  const int K = std::min<int>((int)det.size(), 16);
  std::vector<int> best_assign(E, -1);
  int best_score = -1;
  if (E == 1) {
    for (int i = 0; i < K; ++i) {
      const int sc = attr_matches(p.objects[0], det[i]);
      if (sc > best_score) { best_score = sc; best_assign = {i}; }
    }
  } else if (E == 2) {
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < K; ++j) {
        if (i == j) continue;
        const int sc = attr_matches(p.objects[0], det[i]) + attr_matches(p.objects[1], det[j]) +
                       (relation_holds(p.relation, det[i], det[j]) ? 1 : 0);
        if (sc > best_score) { best_score = sc; best_assign = {i, j}; }
      }
    if (best_score < 0 && K == 1) {  // one detection for two objects: credit the better match
      const int a = attr_matches(p.objects[0], det[0]), b = attr_matches(p.objects[1], det[0]);
      best_assign = a >= b ? std::vector<int>{0, -1} : std::vector<int>{-1, 0};
    }
  }
  for (int k = 0; k < E; ++k) {
    const int i = best_assign[k];
    if (i < 0) continue;
    const ExpectedObject& e = p.objects[k];
    s.colour_ok += e.colour < 0 || e.colour == det[i].colour;
    s.shape_ok += e.shape == det[i].shape;
    s.size_ok += e.size >= 0 && e.size == det[i].size;
  }
  if (E == 2 && best_assign[0] >= 0 && best_assign[1] >= 0)
    s.relation_ok = relation_holds(p.relation, det[best_assign[0]], det[best_assign[1]]);
  s.all_ok = s.count_ok && s.colour_ok == E && s.shape_ok == E && s.size_ok == s.size_n && s.relation_ok == s.relation_n;
  return s;
}

void Tally::add(const ImageScore& s) {
  images++;
  objects += s.objects;
  colour += s.colour_ok;
  shape += s.shape_ok;
  size += s.size_ok;
  size_n += s.size_n;
  relation += s.relation_ok;
  relation_n += s.relation_n;
  count += s.count_ok;
  all += s.all_ok;
}

// ---- directory evaluation ----

namespace {

using json = nlohmann::ordered_json;

json tally_json(const Tally& t) {
  auto acc = [](long ok, long n) {
    json j = {{"correct", ok}, {"total", n}};
    j["accuracy"] = n ? json((double)ok / (double)n) : json(nullptr);
    return j;
  };
  return {{"images", t.images},
          {"colour", acc(t.colour, t.objects)},
          {"shape", acc(t.shape, t.objects)},
          {"size", acc(t.size, t.size_n)},
          {"relation", acc(t.relation, t.relation_n)},
          {"count", acc(t.count, t.images)},
          {"all_correct", acc(t.all, t.images)}};
}

std::string pct(long ok, long n) {
  if (!n) return "      -";
  char b[32];
  std::snprintf(b, sizeof b, "%6.1f%%", 100.0 * ok / n);
  return b;
}

}  // namespace

EvalResult evaluate_dir(const EvalOptions& opt) {
  EvalResult res;
  std::error_code ec;
  const fs::path dir(opt.images_dir);
  if (!fs::is_directory(dir, ec)) fail(opt.images_dir, ": not a directory (give --images DIR with generated images)");

  // Which combinations count as held out.
  Holdout holdout;
  std::string holdout_source = "none";
  if (!opt.holdout.empty()) {
    holdout = parse_holdout(opt.holdout);
    holdout_source = "--holdout";
  } else {
    fs::path man = opt.manifest.empty() ? dir / "manifest.json" : fs::path(opt.manifest);
    if (!opt.manifest.empty() && !fs::is_regular_file(man, ec)) fail(opt.manifest, ": manifest not found");
    if (fs::is_regular_file(man, ec)) {
      json j = json::parse(slurp(man), nullptr, false);
      if (j.is_discarded()) fail(man.string(), ": not valid JSON");
      std::string list;
      if (j.contains("holdout") && j["holdout"].is_array())
        for (const auto& h : j["holdout"])
          if (h.is_string()) list += h.get<std::string>() + ",";
      if (!list.empty()) holdout = parse_holdout(list);
      holdout_source = man.string();
    }
  }
  res.holdout = holdout.strs();

  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec) && is_image_path(it->path())) files.push_back(it->path());
  if (ec) fail(opt.images_dir, ": cannot list directory: ", ec.message());
  std::sort(files.begin(), files.end());
  if (files.empty()) fail(opt.images_dir, ": no images found (.png .jpg .jpeg .webp .bmp)");

  struct Item {
    std::string file, prompt, warning;
    bool ok = false;
    ImageScore score;
    std::vector<Detection> det;
  };
  std::vector<Item> items(files.size());
  parallel_for((int64_t)files.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Item& it = items[i];
      std::error_code ec_rel;
      it.file = fs::relative(files[i], dir, ec_rel).string();
      if (it.file.empty()) it.file = files[i].string();
      try {
        const std::string bytes = slurp(files[i]);
        std::string prompt;
        if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) {
          for (const auto& [k, v] : read_png_text_bytes(bytes, files[i].string()))
            if (k == "parameters") { prompt = prompt_from_infotext(v); break; }
        }
        if (prompt.empty()) {
          fs::path side = files[i];
          side.replace_extension(".txt");
          std::error_code ec2;
          if (fs::is_regular_file(side, ec2)) {
            std::istringstream ss(slurp(side));
            std::getline(ss, prompt);
            prompt = trim(prompt);
          }
        }
        if (prompt.empty()) {
          it.warning = "no prompt (no PNG `parameters` chunk and no sidecar .txt)";
          continue;
        }
        it.prompt = prompt;
        const ParsedPrompt pp = parse_prompt(prompt);
        if (!pp.ok) {
          it.warning = "cannot parse prompt \"" + prompt + "\": " + pp.error;
          continue;
        }
        const Image img = decode_image(bytes, files[i].string());
        it.det = detect_objects(img);
        it.score = score_image(pp, it.det);
        for (const auto& o : pp.objects) it.score.heldout |= holdout.matches(o.colour, o.shape, o.size);
        it.ok = true;
      } catch (const std::exception& ex) {
        it.warning = ex.what();
      }
    }
  });

  json per = json::array();
  for (const Item& it : items) {
    if (!it.ok) {
      res.skipped++;
      std::fprintf(stderr, "oboro: warning: skipping %s: %s\n", it.file.c_str(), it.warning.c_str());
      continue;
    }
    res.all.add(it.score);
    (it.score.heldout ? res.heldout : res.seen).add(it.score);
    if (opt.per_image) {
      json det = json::array();
      for (const auto& d : it.det)
        det.push_back({{"colour", colour_name(d.colour)}, {"shape", shape_name(d.shape)}, {"size", size_name(d.size)},
                       {"centre", {std::round(d.cx * 100) / 100, std::round(d.cy * 100) / 100}},
                       {"area", std::round(d.area * 10) / 10}});
      per.push_back({{"file", it.file}, {"prompt", it.prompt}, {"heldout", it.score.heldout},
                     {"all_correct", it.score.all_ok}, {"count_ok", it.score.count_ok}, {"detected", std::move(det)}});
    }
  }

  json j = {{"images_dir", opt.images_dir}, {"evaluated", res.all.images}, {"skipped", res.skipped},
            {"holdout", res.holdout}, {"holdout_source", holdout_source},
            {"overall", tally_json(res.all)}, {"seen", tally_json(res.seen)}, {"heldout", tally_json(res.heldout)}};
  if (opt.per_image) j["images"] = std::move(per);
  res.json = j.dump(2);

  std::ostringstream t;
  t << "images: " << res.all.images << " evaluated (" << res.seen.images << " seen, " << res.heldout.images
    << " held-out), " << res.skipped << " skipped\n";
  t << "held-out combinations: ";
  if (res.holdout.empty()) t << "(none)";
  for (size_t k = 0; k < res.holdout.size(); ++k) t << (k ? ", " : "") << res.holdout[k];
  t << "\n\n";
  t << "attribute      overall     seen  held-out\n";
  auto row = [&](const char* name, long Tally::*ok, long Tally::*n) {
    char b[64];
    std::snprintf(b, sizeof b, "%-12s", name);
    t << b << "  " << pct(res.all.*ok, res.all.*n) << "  " << pct(res.seen.*ok, res.seen.*n) << "  "
      << pct(res.heldout.*ok, res.heldout.*n) << "\n";
  };
  row("colour", &Tally::colour, &Tally::objects);
  row("shape", &Tally::shape, &Tally::objects);
  row("size", &Tally::size, &Tally::size_n);
  row("relation", &Tally::relation, &Tally::relation_n);
  row("count", &Tally::count, &Tally::images);
  row("all-correct", &Tally::all, &Tally::images);
  res.text = t.str();
  return res;
}

}  // namespace oboro::shapes
