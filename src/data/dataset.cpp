// Dataset scanning (directory or kohya-style TOML) and per-sample loading with augmentations.
#include "data/dataset.h"

#include "core/error.h"
#include "core/rng.h"
#include "io/image.h"

#include <toml++/toml.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

namespace oboro {

namespace fs = std::filesystem;

namespace {

// RNG streams for load(): (purpose << 56) ^ entry index; the draw number is the Philox index.
enum : uint64_t { kCrop = 1, kFlip = 2, kDrop = 3, kShuffle = 4 };
uint64_t stream_of(uint64_t purpose, uint64_t entry) { return (purpose << 56) ^ entry; }

const char* const kImageExts[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp"};

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

bool is_image_file(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  for (const char* x : kImageExts)
    if (e == x) return true;
  return false;
}

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace((unsigned char)s[a])) ++a;
  while (b > a && std::isspace((unsigned char)s[b - 1])) --b;
  return s.substr(a, b - a);
}

void warn(const std::string& msg) { std::fprintf(stderr, "oboro: warning: %s\n", msg.c_str()); }

// Sidecar caption: first non-empty line, trimmed (UTF-8 BOM and CR removed); "" when absent.
std::string read_caption(const fs::path& image, const std::string& ext) {
  fs::path cap = image;
  cap.replace_extension(ext);
  std::error_code ec;
  if (!fs::is_regular_file(cap, ec)) return "";
  std::ifstream f(cap, std::ios::binary);
  if (!f) {
    warn(str(cap.string(), ": cannot read caption file; using an empty caption"));
    return "";
  }
  std::string text((std::istreambuf_iterator<char>(f)), {});
  if (text.compare(0, 3, "\xef\xbb\xbf") == 0) text.erase(0, 3);
  std::istringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    line = trim(line);
    if (!line.empty()) return line;
  }
  return "";
}

// "10_name" → 10; anything else → 0.
int repeats_from_name(const std::string& name) {
  size_t i = 0;
  while (i < name.size() && std::isdigit((unsigned char)name[i])) ++i;
  if (i == 0 || i > 6 || i >= name.size() || name[i] != '_' || i + 1 >= name.size()) return 0;
  const int n = std::stoi(name.substr(0, i));
  return n;  // 0_name means 0 repeats → treated as "not a repeat folder" (0)
}

std::string ext_list() {
  std::string s;
  for (const char* x : kImageExts) {
    if (!s.empty()) s += ' ';
    s += x;
  }
  return s;
}

// Image files directly in `dir` (recursive = whole tree), sorted by path.
std::vector<fs::path> list_images(const fs::path& dir, bool recursive) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (recursive) {
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) fail(dir.string(), ": cannot list directory: ", ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) fail(dir.string(), ": cannot list directory: ", ec.message());
      if (hidden(it->path())) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file(ec) && is_image_file(it->path())) out.push_back(it->path());
    }
  } else {
    fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) fail(dir.string(), ": cannot list directory: ", ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) fail(dir.string(), ": cannot list directory: ", ec.message());
      if (!hidden(it->path()) && it->is_regular_file(ec) && is_image_file(it->path())) out.push_back(it->path());
    }
  }
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return a.generic_string() < b.generic_string(); });
  return out;
}

// ---- TOML ----

struct TomlCtx {
  std::string file;
  std::vector<std::string> unknown;  // "path.key (line N)"
};

std::string where(const TomlCtx& c, const toml::node& n) {
  const auto& src = n.source();
  return src.begin.line ? str(c.file, ":", src.begin.line) : c.file;
}

// Keys that belong to kohya's dataset level (bucketing, resolution); read by the trainer, not here.
bool is_dataset_level_key(std::string_view k) {
  static const char* const keys[] = {"resolution",      "batch_size",        "enable_bucket", "min_bucket_reso",
                                     "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale"};
  for (const char* x : keys)
    if (k == x) return true;
  return false;
}

struct SubsetSpec {
  DatasetSubset s;
  std::string class_tokens;  // kohya: caption for images without a sidecar file
  bool has_image_dir = false;
};

bool get_bool(const TomlCtx& c, const toml::node& v, std::string_view key) {
  if (!v.is_boolean()) fail(where(c, v), ": ", key, " must be true or false");
  return *v.value<bool>();
}

int64_t get_int(const TomlCtx& c, const toml::node& v, std::string_view key, int64_t lo, int64_t hi) {
  if (!v.is_integer()) fail(where(c, v), ": ", key, " must be an integer");
  int64_t x = *v.value<int64_t>();
  if (x < lo || x > hi) fail(where(c, v), ": ", key, " = ", x, " is out of range [", lo, ", ", hi, "]");
  return x;
}

double get_float(const TomlCtx& c, const toml::node& v, std::string_view key, double lo, double hi) {
  if (!v.is_number()) fail(where(c, v), ": ", key, " must be a number");
  double x = *v.value<double>();
  if (!(x >= lo && x <= hi)) fail(where(c, v), ": ", key, " = ", x, " is out of range [", lo, ", ", hi, "]");
  return x;
}

std::string get_string(const TomlCtx& c, const toml::node& v, std::string_view key) {
  if (!v.is_string()) fail(where(c, v), ": ", key, " must be a string");
  return *v.value<std::string>();
}

// Applies the subset-level keys of `tbl` onto `spec`; collects unknown keys. `level` names the
// table in messages ("general", "datasets[0]", "datasets[0].subsets[1]").
void apply_keys(TomlCtx& c, const toml::table& tbl, SubsetSpec& spec, const std::string& level, bool subset_level) {
  for (auto&& [k, v] : tbl) {
    const std::string_view key = k.str();
    if (key == "image_dir") {
      if (!subset_level) {
        c.unknown.push_back(str(level, ".image_dir (line ", k.source().begin.line, "; image_dir belongs in [[datasets.subsets]])"));
        continue;
      }
      spec.s.image_dir = get_string(c, v, key);
      spec.has_image_dir = true;
    } else if (key == "caption_extension") {
      std::string e = get_string(c, v, key);
      if (e.empty()) fail(where(c, v), ": caption_extension must not be empty (e.g. \".txt\")");
      if (e[0] != '.') e = "." + e;
      spec.s.caption_extension = e;
    } else if (key == "num_repeats") {
      spec.s.num_repeats = (int)get_int(c, v, key, 1, 1000000);
    } else if (key == "keep_tokens") {
      spec.s.keep_tokens = (int)get_int(c, v, key, 0, 1000000);
    } else if (key == "shuffle_caption") {
      spec.s.shuffle_caption = get_bool(c, v, key);
    } else if (key == "caption_dropout_rate") {
      spec.s.caption_dropout_rate = (float)get_float(c, v, key, 0.0, 1.0);
    } else if (key == "flip_aug") {
      spec.s.flip_aug = get_bool(c, v, key);
    } else if (key == "class_tokens") {
      spec.class_tokens = get_string(c, v, key);
    } else if (is_dataset_level_key(key) && !subset_level) {
      // accepted; used by the trainer's bucketing, not by scanning
    } else if ((key == "datasets" && level == "general") || (key == "subsets" && !subset_level && level != "general")) {
      // structure, handled by the caller
    } else {
      c.unknown.push_back(str(level, ".", key, " (line ", k.source().begin.line, ")"));
    }
  }
}

}  // namespace

Dataset Dataset::open(const std::string& source) {
  Dataset ds;
  std::error_code ec;
  const fs::path src(source);
  if (!fs::exists(src, ec))
    fail(source, ": no such file or directory (give a folder of images with .txt captions, or a dataset .toml)");

  if (fs::is_directory(src, ec)) {
    // Folder mode: every image below `source`; the nearest ancestor folder named N_name sets the
    // repeat count, and each such folder is its own subset (the root is one too).
    std::map<std::string, int> subset_of_dir;
    const fs::path root = src.lexically_normal();
    for (const fs::path& img : list_images(root, /*recursive=*/true)) {
      fs::path owner = root;
      int repeats = 1;
      for (fs::path d = img.parent_path(); ; d = d.parent_path()) {
        int r = repeats_from_name(d.filename().string());
        if (r > 0) { owner = d; repeats = r; break; }
        if (d == root || d.empty() || d == d.parent_path() || d.string().size() <= root.string().size()) break;
      }
      auto [it, inserted] = subset_of_dir.try_emplace(owner.string(), (int)ds.subsets_.size());
      if (inserted) {
        DatasetSubset s;
        s.image_dir = owner.string();
        s.num_repeats = repeats;
        ds.subsets_.push_back(s);
      }
      const int si = it->second;
      const std::string caption = read_caption(img, ds.subsets_[si].caption_extension);
      for (int r = 0; r < ds.subsets_[si].num_repeats; ++r) ds.entries_.push_back({img.string(), caption, si});
    }
    if (ds.entries_.empty())
      fail(source, ": no images found (looked for ", ext_list(), " in this folder and its subfolders)");
    return ds;
  }

  const std::string ext = lower(src.extension().string());
  if (ext != ".toml")
    fail(source, ": not a directory or a .toml dataset config (give a folder of images with .txt captions, or a kohya-style dataset .toml)");

  std::ifstream f(src, std::ios::binary);
  if (!f) fail(source, ": cannot open for reading");
  const std::string text((std::istreambuf_iterator<char>(f)), {});
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    fail(source, ":", e.source().begin.line, ":", e.source().begin.column, ": invalid TOML: ", e.description());
  }

  TomlCtx c;
  c.file = source;
  const fs::path base = src.parent_path();
  SubsetSpec general;
  for (auto&& [k, v] : root) {
    if (k.str() == "general") {
      if (!v.is_table()) fail(where(c, v), ": [general] must be a table");
      apply_keys(c, *v.as_table(), general, "general", false);
    } else if (k.str() != "datasets") {
      c.unknown.push_back(str(k.str(), " (line ", k.source().begin.line, ")"));
    }
  }
  const toml::node* dnode = root.get("datasets");
  if (!dnode) fail(source, ": no [[datasets]] found (each needs at least one [[datasets.subsets]] with image_dir)");
  const toml::array* darr = dnode->as_array();
  if (!darr || !darr->is_array_of_tables()) fail(where(c, *dnode), ": datasets must be an array of tables ([[datasets]])");

  std::vector<std::string> empty_dirs;
  for (size_t di = 0; di < darr->size(); ++di) {
    const toml::table& dt = *darr->get(di)->as_table();
    const std::string dlevel = str("datasets[", di, "]");
    SubsetSpec dspec = general;
    apply_keys(c, dt, dspec, dlevel, false);
    const toml::node* snode = dt.get("subsets");
    if (!snode) fail(where(c, dt), ": ", dlevel, " has no [[datasets.subsets]] (each subset needs image_dir)");
    const toml::array* sarr = snode->as_array();
    if (!sarr || !sarr->is_array_of_tables()) fail(where(c, *snode), ": subsets must be an array of tables ([[datasets.subsets]])");
    for (size_t si = 0; si < sarr->size(); ++si) {
      const toml::table& st = *sarr->get(si)->as_table();
      const std::string slevel = str(dlevel, ".subsets[", si, "]");
      SubsetSpec spec = dspec;
      spec.has_image_dir = false;
      apply_keys(c, st, spec, slevel, true);
      if (!spec.has_image_dir) fail(where(c, st), ": ", slevel, " has no image_dir");
      fs::path dir = fs::path(spec.s.image_dir);
      if (dir.is_relative()) dir = base / dir;
      dir = dir.lexically_normal();
      if (!fs::is_directory(dir, ec))
        fail(where(c, st), ": ", slevel, ": image_dir ", dir.string(),
             fs::exists(dir, ec) ? " is not a directory" : " does not exist", " (relative paths are relative to the TOML file's folder)");
      spec.s.image_dir = dir.string();
      const int index = (int)ds.subsets_.size();
      ds.subsets_.push_back(spec.s);
      // kohya: a subset's images are the files directly in image_dir (no recursion).
      const auto images = list_images(dir, /*recursive=*/false);
      if (images.empty()) empty_dirs.push_back(dir.string());
      for (const fs::path& img : images) {
        std::string caption = read_caption(img, spec.s.caption_extension);
        if (caption.empty()) caption = spec.class_tokens;
        for (int r = 0; r < spec.s.num_repeats; ++r) ds.entries_.push_back({img.string(), caption, index});
      }
    }
  }
  if (!c.unknown.empty()) {
    std::string list;
    for (const auto& u : c.unknown) list += (list.empty() ? "" : ", ") + u;
    warn(str(source, ": ignoring unsupported keys: ", list));
  }
  if (ds.entries_.empty())
    fail(source, ": no images found in any subset's image_dir (looked for ", ext_list(), "; subfolders are not searched)");
  for (const auto& d : empty_dirs) warn(str(source, ": no images in ", d));
  return ds;
}

std::vector<std::string> Dataset::captions() const {
  // One caption per image (repeats not expanded): the text corpus for vocabulary training.
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const auto& e : entries_)
    if (seen.insert(e.image_path).second) out.push_back(e.caption);
  return out;
}

std::vector<std::string> Dataset::image_files() const {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const auto& e : entries_)
    if (seen.insert(e.image_path).second) out.push_back(e.image_path);
  return out;
}

bool Dataset::load(size_t i, int width, int height, uint64_t rng_seed, float* chw, std::string* caption) const {
  if (i >= entries_.size()) fail("Dataset::load: index ", i, " out of range (", entries_.size(), " entries)");
  if (width <= 0 || height <= 0) fail("Dataset::load: size ", width, "x", height, " must be positive");
  const DatasetEntry& e = entries_[i];
  const DatasetSubset& s = subsets_.at(e.subset);

  Image img;
  try {
    img = load_image(e.image_path);
  } catch (const std::exception& ex) {
    warn(str("skipping unreadable image: ", ex.what()));
    std::atomic_ref<size_t>(skipped_).fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  float cx = 0.5f, cy = 0.5f;
  if (rng_seed != 0) {
    cx = uniform_at(rng_seed, stream_of(kCrop, i), 0);
    cy = uniform_at(rng_seed, stream_of(kCrop, i), 1);
  }
  Image out = resize_cover_crop(img, width, height, cx, cy);
  if (s.flip_aug && uniform_at(rng_seed, stream_of(kFlip, i), 0) < 0.5f) {
    for (int y = 0; y < out.height; ++y) {
      uint8_t* row = out.rgb.data() + (size_t)y * out.width * 3;
      for (int a = 0, b = out.width - 1; a < b; ++a, --b)
        for (int ch = 0; ch < 3; ++ch) std::swap(row[3 * a + ch], row[3 * b + ch]);
    }
  }
  image_to_chw(out, chw);

  if (caption) {
    std::string cap = e.caption;
    if (s.caption_dropout_rate > 0.f && uniform_at(rng_seed, stream_of(kDrop, i), 0) < s.caption_dropout_rate) {
      cap.clear();
    } else if (s.shuffle_caption && !cap.empty()) {
      std::vector<std::string> tags;
      std::stringstream ss(cap);
      std::string t;
      while (std::getline(ss, t, ',')) {
        t = trim(t);
        if (!t.empty()) tags.push_back(t);
      }
      const size_t keep = std::min(tags.size(), (size_t)std::max(s.keep_tokens, 0));
      // Fisher-Yates on tags[keep..]: draw k picks from the remaining n-k tags.
      const size_t n = tags.size();
      for (size_t k = keep; k + 1 < n; ++k) {
        const float u = uniform_at(rng_seed, stream_of(kShuffle, i), k);
        size_t j = k + std::min((size_t)(u * (float)(n - k)), n - k - 1);
        std::swap(tags[k], tags[j]);
      }
      cap.clear();
      for (size_t k = 0; k < n; ++k) cap += (k ? ", " : "") + tags[k];
    }
    *caption = std::move(cap);
  }
  return true;
}

}  // namespace oboro
