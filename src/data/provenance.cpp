// manifest.jsonl parsing, the licence allow-list, the dataset summary and digest, and the check
// that every training image is listed with its sha256 and an allowed licence.
#include "data/provenance.h"

#include "core/error.h"
#include "core/sha256.h"
#include "core/threads.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

namespace oboro {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit((unsigned char)c)) return false;
  return true;
}

fs::path absolute_normal(const fs::path& p) {
  std::error_code ec;
  fs::path a = fs::absolute(p, ec);
  return (ec ? p : a).lexically_normal();
}

const char* const kFields = "file, sha256, source, original, license, attribution, captions";

// "a.png, b.png, c.png and 4 more"
std::string list_some(const std::vector<std::string>& items, size_t max = 5) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > max) s += str(" and ", items.size() - max, " more");
  return s;
}

std::string plural(size_t n, const char* one, const char* many) { return str(n, " ", n == 1 ? one : many); }

}  // namespace

// ---------------------------------------------------------------- LicenseManifest

LicenseManifest LicenseManifest::load(const std::string& path) {
  using nlohmann::json;
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open the manifest for reading");
  LicenseManifest m;
  m.path_ = path;
  m.folder_ = absolute_normal(fs::path(path)).parent_path().string();
  std::string line;
  int ln = 0;
  while (std::getline(f, line)) {
    ++ln;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (ln == 1 && line.compare(0, 3, "\xef\xbb\xbf") == 0) line.erase(0, 3);
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string at = str(path, ":", ln, ": ");
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      fail(at, "not valid JSON — each line must be one JSON object with ", kFields,
           " (rewrite the manifest with scripts/get-data, or fix this line)");
    if (!j.is_object()) fail(at, "expected a JSON object with ", kFields, ", got ", j.type_name());
    auto need_string = [&](const char* k, bool nonempty) -> std::string {
      auto it = j.find(k);
      if (it == j.end()) fail(at, "missing field \"", k, "\" (every line needs ", kFields, ")");
      if (!it->is_string()) fail(at, "field \"", k, "\" must be a string, got ", it->type_name());
      std::string v = it->get<std::string>();
      if (nonempty && v.empty()) fail(at, "field \"", k, "\" is empty");
      return v;
    };
    ProvenanceEntry e;
    e.line = ln;
    e.file = need_string("file", true);
    std::replace(e.file.begin(), e.file.end(), '\\', '/');
    const fs::path fp(e.file);
    if (fp.is_absolute() || e.file[0] == '/')
      fail(at, "\"file\": ", e.file, " is absolute; it must be relative to the manifest's folder ", m.folder_);
    const std::string norm = fp.lexically_normal().generic_string();
    if (norm == ".." || norm.rfind("../", 0) == 0)
      fail(at, "\"file\": ", e.file, " points outside the manifest's folder ", m.folder_);
    e.file = norm;
    e.sha256 = lower(need_string("sha256", true));
    if (!is_hex64(e.sha256))
      fail(at, "\"sha256\" must be the 64 hex digits of the image file's SHA-256 (sha256sum FILE), got \"", e.sha256, "\"");
    e.source = need_string("source", true);
    e.license = need_string("license", true);
    e.attribution = need_string("attribution", false);
    auto orig = j.find("original");
    if (orig == j.end()) fail(at, "missing field \"original\" (every line needs ", kFields, ")");
    e.original = orig->is_string() ? orig->get<std::string>() : orig->dump();
    auto caps = j.find("captions");
    if (caps == j.end()) fail(at, "missing field \"captions\" (every line needs ", kFields, ")");
    if (!caps->is_array()) fail(at, "field \"captions\" must be an array of strings, got ", caps->type_name());
    for (const auto& c : *caps) {
      if (!c.is_string()) fail(at, "field \"captions\" must be an array of strings; it holds a ", c.type_name());
      e.captions.push_back(c.get<std::string>());
    }
    auto [it, inserted] = m.by_file_.emplace(e.file, m.entries_.size());
    if (!inserted)
      fail(at, "\"file\": ", e.file, " is listed twice (also on line ", m.entries_[it->second].line,
           "): keep one line per image");
    m.entries_.push_back(std::move(e));
  }
  return m;
}

const ProvenanceEntry* LicenseManifest::find(const std::string& rel) const {
  auto it = by_file_.find(rel);
  return it == by_file_.end() ? nullptr : &entries_[it->second];
}

// ---------------------------------------------------------------- LicensePolicy

std::vector<std::string> LicensePolicy::default_allow() {
  return {"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "Apache-2.0", "MIT"};
}

bool LicensePolicy::allowed(const std::string& spdx) const {
  const std::string l = lower(spdx);
  for (const auto& a : allow)
    if (lower(a) == l) return true;
  return false;
}

std::string LicensePolicy::list() const {
  std::string s = "[";
  for (size_t i = 0; i < allow.size(); ++i) s += str(i ? ", " : "", "\"", allow[i], "\"");
  return s + "]";
}

// ---------------------------------------------------------------- DatasetSummary

DatasetSummary summarize(const std::vector<const ProvenanceEntry*>& used) {
  DatasetSummary s;
  std::vector<std::string> lines;
  std::set<std::string> attrib;
  lines.reserve(used.size());
  for (const ProvenanceEntry* e : used) {
    lines.push_back(str(e->sha256, " ", e->license, "\n"));
    s.licenses[e->license]++;
    s.sources[e->source]++;
    if (!e->attribution.empty()) attrib.insert(e->attribution);
  }
  std::sort(lines.begin(), lines.end());
  Sha256 h;
  for (const auto& l : lines) h.update(l.data(), l.size());
  s.digest = "sha256:" + h.hex();
  s.images = used.size();
  s.attribution.assign(attrib.begin(), attrib.end());
  return s;
}

std::string DatasetSummary::to_json() const {
  nlohmann::ordered_json j;
  j["digest"] = digest;
  j["images"] = images;
  j["licenses"] = nlohmann::ordered_json::object();
  for (const auto& [k, n] : licenses) j["licenses"][k] = n;
  j["sources"] = nlohmann::ordered_json::object();
  for (const auto& [k, n] : sources) j["sources"][k] = n;
  j["attribution"] = attribution;
  return j.dump();
}

DatasetSummary DatasetSummary::from_json(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail("oboro.dataset is not a JSON object");
  DatasetSummary s;
  // Counts must be non-negative integers: a float such as 1e300 would otherwise be cast to size_t (undefined
  // behaviour) and a negative one would wrap.
  auto shown = [](const nlohmann::json& v) { return v.dump().substr(0, 60); };
  auto count = [&](const nlohmann::json& v, const std::string& what) -> size_t {
    if (!v.is_number_unsigned()) fail("oboro.dataset: ", what, " must be a non-negative integer, got ", shown(v));
    return v.get<size_t>();
  };
  try {
    s.digest = j.at("digest").get<std::string>();
    s.images = count(j.at("images"), "\"images\"");
    for (const char* key : {"licenses", "sources"})
      if (!j.at(key).is_object()) fail("oboro.dataset: \"", key, "\" must be an object of counts, got ", shown(j.at(key)));
    for (const auto& [k, v] : j.at("licenses").items()) s.licenses[k] = count(v, "the count of licence " + k);
    for (const auto& [k, v] : j.at("sources").items()) s.sources[k] = count(v, "the count of source " + k);
    s.attribution = j.at("attribution").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail("oboro.dataset: ", e.what());
  }
  return s;
}

// ---------------------------------------------------------------- the check

ProvenanceCheck check_provenance(const std::vector<std::string>& images, const LicensePolicy& policy,
                                 bool require_license) {
  ProvenanceCheck out;
  // The nearest manifest.jsonl of each folder (the folder itself or a parent), cached.
  std::map<std::string, std::unique_ptr<LicenseManifest>> loaded;   // by manifest path
  std::map<std::string, const LicenseManifest*> of_dir;
  std::function<const LicenseManifest*(const fs::path&)> nearest = [&](const fs::path& dir) -> const LicenseManifest* {
    auto it = of_dir.find(dir.string());
    if (it != of_dir.end()) return it->second;
    const LicenseManifest* m = nullptr;
    std::error_code ec;
    const fs::path cand = dir / "manifest.jsonl";
    if (fs::is_regular_file(cand, ec)) {
      auto& slot = loaded[cand.string()];
      if (!slot) slot = std::make_unique<LicenseManifest>(LicenseManifest::load(cand.string()));
      m = slot.get();
    } else if (dir.has_parent_path() && dir.parent_path() != dir) {
      m = nearest(dir.parent_path());
    }
    of_dir[dir.string()] = m;
    return m;
  };

  struct Item {
    std::string shown;                 // path for messages (relative to its manifest when it has one)
    const LicenseManifest* manifest = nullptr;
    const ProvenanceEntry* entry = nullptr;
  };
  std::vector<Item> items(images.size());
  std::vector<std::string> uncovered, unlisted;
  for (size_t i = 0; i < images.size(); ++i) {
    const fs::path p = absolute_normal(images[i]);
    Item& it = items[i];
    it.shown = images[i];
    it.manifest = nearest(p.parent_path());
    if (!it.manifest) {
      uncovered.push_back(images[i]);
      continue;
    }
    const std::string rel = p.lexically_relative(it.manifest->folder()).generic_string();
    it.shown = rel;
    it.entry = it.manifest->find(rel);
    if (!it.entry) unlisted.push_back(str(rel, " (not in ", it.manifest->path(), ")"));
  }
  for (const auto& [path, m] : loaded) out.manifests.push_back(path);
  out.has_manifest = !loaded.empty();

  if (!out.has_manifest) {
    if (require_license && !images.empty())
      fail("training data: require_license = true but no manifest.jsonl covers the dataset (looked beside ",
           images[0], " and in its parent folders) — add a manifest.jsonl with the licence of every image "
           "(scripts/get-data writes one for the data it downloads), or set require_license = false");
    return out;
  }
  for (const auto& u : uncovered)
    unlisted.push_back(str(u, " (no manifest.jsonl in its folder or a parent folder)"));
  if (!unlisted.empty())
    fail("training data: ", plural(unlisted.size(), "image is", "images are"),
         " not listed in a manifest.jsonl although the dataset has one (", list_some(out.manifests, 2), "): ",
         list_some(unlisted), " — every image of a dataset with a manifest needs a line (", kFields,
         "): remove these images from the dataset, or add them to the manifest");

  // The bytes must be the ones the manifest describes (read now, in parallel; a few MB/s-bound
  // pass over the images before training starts).
  std::vector<std::string> bad(items.size());
  parallel_for((int64_t)items.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        if (sha256_file(images[(size_t)i]) != items[(size_t)i].entry->sha256)
          bad[(size_t)i] = str(items[(size_t)i].shown, " (", items[(size_t)i].manifest->path(), ":", items[(size_t)i].entry->line, ")");
      } catch (const std::exception& ex) {
        bad[(size_t)i] = str(items[(size_t)i].shown, " (unreadable: ", ex.what(), ")");
      }
    }
  });
  std::vector<std::string> changed;
  for (auto& s : bad)
    if (!s.empty()) changed.push_back(s);
  if (!changed.empty())
    fail("training data: ", plural(changed.size(), "image does", "images do"),
         " not match the sha256 in the manifest: ", list_some(changed),
         " — the file changed after the manifest was written: restore it (rerun scripts/get-data) "
         "or update its sha256 in the manifest");

  std::vector<std::string> refused;
  std::set<std::string> refused_licenses;
  for (const Item& it : items)
    if (!policy.allowed(it.entry->license)) {
      refused.push_back(str(it.shown, " (", it.entry->license, ", ", it.manifest->path(), ":", it.entry->line, ")"));
      refused_licenses.insert(it.entry->license);
    }
  if (!refused.empty()) {
    LicensePolicy extended = policy;
    for (const auto& l : refused_licenses) extended.allow.push_back(l);
    fail("training data: ", plural(refused.size(), "image has a licence", "images have licences"),
         " outside license_allow = ", policy.list(), ": ", list_some(refused),
         " — remove these images from the dataset, or, if you may train on them, extend the list in the "
         "training TOML: [data] license_allow = ", extended.list());
  }

  std::vector<const ProvenanceEntry*> used;
  used.reserve(items.size());
  for (const Item& it : items) used.push_back(it.entry);
  out.summary = summarize(used);
  return out;
}

}  // namespace oboro
