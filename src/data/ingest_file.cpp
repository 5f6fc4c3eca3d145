// Ingest, one candidate file at a time: read, hash, decode and embed, captions and licence (see ingest_file.h).
#include "data/ingest_file.h"

#include "core/error.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "data/manifest.h"
#include "io/image.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace oboro::ingest_file {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A text file's contents, a UTF-8 BOM dropped; *ok false when it cannot be opened.
std::string read_text(const fs::path& p, bool* ok) {
  std::ifstream f(p, std::ios::binary);
  *ok = (bool)f;
  std::string t((std::istreambuf_iterator<char>(f)), {});
  if (t.compare(0, 3, "\xef\xbb\xbf") == 0) t.erase(0, 3);
  return t;
}

// A file's bytes (even while it grows); *ok false when it cannot be read.
std::string read_bytes(const std::string& p, bool* ok) {
  std::string out;
  *ok = false;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return out;
  struct stat st;
  if (::fstat(fileno(f), &st) == 0 && st.st_size > 0) out.resize((size_t)st.st_size);
  size_t got = out.empty() ? 0 : std::fread(out.data(), 1, out.size(), f);
  out.resize(got);
  char buf[65536];  // anything beyond the size at open time (a file still being written)
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  *ok = !std::ferror(f);
  std::fclose(f);
  return out;
}

// The lines of text, trimmed, empty ones dropped.
std::vector<std::string> nonempty_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream ss(text);
  for (std::string l; std::getline(ss, l);)
    if (!(l = trim_copy(l)).empty()) out.push_back(l);
  return out;
}

// Reads, hashes, decodes and embeds w's image; a failure goes to w.error. feat: scratch of extractor.dim() floats.
void read_image(Work& w, const FeatureExtractor& extractor, std::vector<float>& feat) {
  bool ok = false;
  const std::string bytes = read_bytes(w.c.path, &ok);
  if (!ok) {
    w.error = "unreadable: check the file's permissions";
    w.sha256 = sha256_hex("");
    return;
  }
  w.size = (int64_t)bytes.size();
  w.sha256 = sha256_hex(bytes);
  try {
    Image img = decode_image(bytes, w.c.path);
    w.width = img.width;
    w.height = img.height;
    extractor.extract(img, feat.data());
    w.features = pack_f16(feat.data(), extractor.dim());
  } catch (const std::exception& ex) {
    w.error = ex.what();
  }
}

// Takes source, original, attribution, licence and extra captions from w's manifest.jsonl record, and checks
// the file against the record's sha256.
void apply_jsonl_record(Work& w) {
  const json j = json::parse(w.jsonl_record);
  auto s = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  w.source = s("source");
  w.original = j.contains("original") && j["original"].is_object() ? j["original"].dump() : s("original");
  w.attribution = s("attribution");
  w.license = s("license");
  if (!w.license.empty()) w.license_from = "manifest.jsonl";
  if (j.contains("captions"))
    for (const auto& c : j["captions"])
      if (c.is_string()) {
        const std::string t = trim_copy(c.get<std::string>());
        bool dup = t.empty();
        for (const auto& [o, x] : w.captions) dup = dup || x == t;
        if (!dup) w.captions.push_back({"manifest.jsonl", t});
      }
  const std::string want = s("sha256");
  if (!want.empty() && w.error.empty() && want != w.sha256)
    w.error = "mismatch: content differs from manifest.jsonl (sha256 " + want.substr(0, 12) + "... expected, the file has " +
              w.sha256.substr(0, 12) + "...): fix the record or restore the file";
}

// Takes the licence (and attribution, if none yet) from w's sidecar .license file, when it has one.
void apply_sidecar_licence(Work& w) {
  const std::string lp = licence_path(w.c.path);
  if (lp.empty()) return;
  bool lok = false;
  const std::vector<std::string> lines = nonempty_lines(read_text(lp, &lok));
  std::string lic, attr;
  for (const auto& l : lines) {
    if (l.rfind("SPDX-License-Identifier:", 0) == 0) lic = trim_copy(l.substr(24));
    else if (l.rfind("SPDX-FileCopyrightText:", 0) == 0) attr = trim_copy(l.substr(23));
  }
  if (lic.empty() && !lines.empty()) {
    lic = lines[0];
    if (lines.size() > 1) attr = lines[1];
  }
  if (!lic.empty()) {
    w.license = lic;
    w.license_from = "sidecar";
    if (w.attribution.empty()) w.attribution = attr;
  }
}

// Everything about one file that needs no DB: image, captions, licence.
void process_file(Work& w, const FeatureExtractor& extractor, std::vector<float>& feat,
                  const std::string& default_license) {
  read_image(w, extractor, feat);
  // Captions: every non-empty line of the sidecar, then manifest.jsonl captions, then the TOML's class tokens.
  bool cok = false;
  const std::string cap = read_text(caption_path(w.c.path, w.c.caption_ext), &cok);
  if (cok)
    for (auto& l : nonempty_lines(cap)) w.captions.push_back({"sidecar", l});
  // Licence: manifest.jsonl record, else sidecar .license, else --license.
  if (!w.jsonl_record.empty()) apply_jsonl_record(w);
  if (w.license.empty()) apply_sidecar_licence(w);
  if (w.license.empty() && !default_license.empty()) {
    w.license = default_license;
    w.license_from = "--license";
  }
  if (w.captions.empty() && !w.c.fallback_caption.empty()) w.captions.push_back({"toml", w.c.fallback_caption});
}

}  // namespace

std::string caption_path(const std::string& image, const std::string& ext) {
  fs::path p(image);
  p.replace_extension(ext);
  return p.string();
}

std::string licence_path(const std::string& image) {
  std::error_code ec;
  const std::string a = image + ".license";
  if (fs::exists(a, ec)) return a;
  fs::path b(image);
  b.replace_extension(".license");
  return fs::exists(b, ec) ? b.string() : "";
}

void decode_batch(std::vector<Work>& batch, const FeatureExtractor& extractor, const std::string& default_license) {
  parallel_for((int64_t)batch.size(), [&](int64_t b, int64_t e) {
    std::vector<float> feat((size_t)extractor.dim());
    for (int64_t i = b; i < e; ++i) process_file(batch[(size_t)i], extractor, feat, default_license);
  });
}

}  // namespace oboro::ingest_file
