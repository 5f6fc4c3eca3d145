// Provenance of training images: the `manifest.jsonl` that scripts/get-data writes (one JSON object
// per image: file, sha256, source, original, license, attribution, captions), a licence allow-list,
// and the dataset summary recorded in trained models as the `oboro.dataset` metadata key.
//
// Which manifest covers an image: the nearest `manifest.jsonl` in the image's folder or one of its
// parent folders; its "file" entries are relative to the manifest's folder ('/' separators).
// When any image of a dataset is covered by a manifest, every image must be listed (with the
// sha256 of its bytes and an allowed licence), otherwise training refuses before it starts.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace oboro {

struct ProvenanceEntry {
  std::string file;                  // relative to the manifest's folder, '/'-separated
  std::string sha256;                // lowercase hex of the image file's bytes
  std::string source;                // e.g. "npm:emoji-datasource-twitter@16.0.0"
  std::string original;              // file inside the package, or a JSON object (dumped) for generated images
  std::string license;               // SPDX id
  std::string attribution;
  std::vector<std::string> captions;
  int line = 0;                      // 1-based line in manifest.jsonl
};

class LicenseManifest {  // one manifest.jsonl
 public:
  // Parses manifest.jsonl. Errors name "path:line", the problem and the fix.
  static LicenseManifest load(const std::string& path);
  const std::string& path() const { return path_; }
  const std::string& folder() const { return folder_; }  // absolute, normalised
  const std::vector<ProvenanceEntry>& entries() const { return entries_; }
  const ProvenanceEntry* find(const std::string& rel) const;  // by relative '/'-path; null if absent

 private:
  std::string path_, folder_;
  std::vector<ProvenanceEntry> entries_;
  std::unordered_map<std::string, size_t> by_file_;
};

// Licence allow-list (SPDX ids, compared case-insensitively).
struct LicensePolicy {
  std::vector<std::string> allow = default_allow();
  static std::vector<std::string> default_allow();  // CC0-1.0, CC-BY-4.0, CC-BY-SA-4.0, Apache-2.0, MIT
  bool allowed(const std::string& spdx) const;
  std::string list() const;  // ["CC0-1.0", "CC-BY-4.0", ...] as TOML
};

// What a model was trained on, for the `oboro.dataset` metadata key (a JSON string).
struct DatasetSummary {
  std::string digest;                          // "sha256:" + sha256 of the sorted "<image sha256> <license>\n" lines
  size_t images = 0;                           // distinct image files
  std::map<std::string, size_t> licenses;      // SPDX id → images
  std::map<std::string, size_t> sources;       // source → images
  std::vector<std::string> attribution;        // distinct attribution strings, sorted

  std::string to_json() const;  // {"digest","images","licenses","sources","attribution"}
  static DatasetSummary from_json(const std::string& text);  // throws on a malformed value
};

// Summary of the images actually used (order independent; each entry counts once per pointer).
DatasetSummary summarize(const std::vector<const ProvenanceEntry*>& used);

// The result of checking a dataset's images against their manifests.
struct ProvenanceCheck {
  bool has_manifest = false;              // some image is covered by a manifest.jsonl
  std::vector<std::string> manifests;     // the manifests used
  DatasetSummary summary;                 // valid when has_manifest
};

// Checks distinct image files (paths as scanned). With a manifest present, every image must be
// listed in its nearest manifest, its bytes must hash to the listed sha256 (read now, in parallel)
// and its licence must be allowed; `require_license` also refuses images no manifest covers.
// Throws one error naming up to 5 offending files, their licence and the fix.
ProvenanceCheck check_provenance(const std::vector<std::string>& images, const LicensePolicy& policy,
                                 bool require_license);

}  // namespace oboro
