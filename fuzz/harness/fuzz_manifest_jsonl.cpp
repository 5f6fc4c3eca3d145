// manifest.jsonl as training reads it (data/provenance.h): LicenseManifest::load (one JSON object per
// line: file, sha256, source, original, license, attribution, captions; relative paths that must stay
// inside the folder; duplicates), then check_provenance of the folder's two images against it (lookup,
// sha256, licence allow-list, the dataset summary and its JSON). Each line is also read as the
// `oboro.dataset` metadata JSON of a model (DatasetSummary::from_json, what `oboro data audit` reads
// from a downloaded model file).
#include "data/provenance.h"
#include "fuzz_util.h"

#include <sstream>

using namespace oboro;

namespace {
const fuzz::fs::path& dir() { return fuzz::ScratchDir::get("manifest-jsonl"); }
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  fuzz::write_file(dir() / "a.png", fuzz::kTinyPng);  // make_corpus.sh lists its sha256
  fuzz::fs::create_directories(dir() / "sub");
  fuzz::write_file(dir() / "sub" / "b.png", "");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string path = (dir() / "manifest.jsonl").string();
  fuzz::write_file(path, text);
  fuzz::accept_errors([&] {
    LicenseManifest m = LicenseManifest::load(path);
    for (const ProvenanceEntry& e : m.entries())
      if (m.find(e.file) != &e) std::abort();
  });
  fuzz::accept_errors([&] {
    LicensePolicy policy;
    ProvenanceCheck c = check_provenance({(dir() / "a.png").string(), (dir() / "sub" / "b.png").string()}, policy, true);
    if (c.has_manifest) (void)DatasetSummary::from_json(c.summary.to_json());
  });
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    fuzz::accept_errors([&] {
      DatasetSummary s = DatasetSummary::from_json(line);
      (void)s.to_json();
    });
  return 0;
}
