// Quality tags from aesthetic scores, with the report's thresholds:
//   score ≥ 6 → "excellent score", 5.2 ≤ score < 6 → "good score", 4 ≤ score < 5.2 → "average score",
//   score < 4 → excluded (status removed, reason "score S < 4").
// Scores come from a file (CSV `key,score` or JSONL {"sha256"|"path"|"file": ..., "score": x}; key =
// the image's sha256 or its path) or from a scorer plug-in (QualityScorer). The tag is stored per
// image and added to the training caption as configured (manifest meta quality_tags: append,
// prepend or off), never written into the caption text itself, so re-scoring replaces it.
#pragma once
#include "data/manifest.h"
#include "io/image.h"

#include <functional>
#include <memory>
#include <string>

namespace oboro {

struct QualityThresholds {
  double excellent = 6.0, good = 5.2, average = 4.0;
  static QualityThresholds parse(const std::string& s);  // "6,5.2,4"
};

// "excellent score", "good score", "average score", or "" (below `average`: excluded).
std::string quality_tag(double score, const QualityThresholds& t = {});

// Plug-in seam for a learned aesthetic predictor.
class QualityScorer {
 public:
  virtual ~QualityScorer() = default;
  virtual std::string id() const = 0;
  virtual double score(const Image& img) const = 0;  // thread-safe
};
void register_scorer(const std::string& name, std::function<std::unique_ptr<QualityScorer>(const std::string&)> f);
std::unique_ptr<QualityScorer> make_scorer(const std::string& spec);  // "name[:arg]"; errors list the known ones

struct ScoreOptions {
  std::string file;                 // scores file; or
  std::string scorer;               // a registered scorer plug-in
  std::string name = "aesthetic";   // score name in the scores table
  QualityThresholds thresholds;
  std::string tags;                 // "", append, prepend, off: stored in the manifest when given
  bool progress = true;
};
struct ScoreReport {
  int64_t records = 0, matched_images = 0, unmatched = 0;
  int64_t excellent = 0, good = 0, average = 0, excluded = 0, restored = 0;
  std::vector<std::string> unmatched_keys;  // first 10
};
ScoreReport apply_scores(Manifest& m, const ScoreOptions& opt);

}  // namespace oboro
