// Evaluator for the shapes dataset: parses a prompt into expected objects, detects objects in an
// image (background from the border, colour unmixing against the palette, connected components,
// colour by nearest palette entry in CIELAB, shape by nearest prototype of the renderer's own
// anti-aliased shapes, size from area, relation from centroids) and scores them.
#pragma once
#include "data/shapes.h"
#include "io/image.h"

#include <string>
#include <vector>

namespace oboro::shapes {

struct ExpectedObject {
  int colour = -1, shape = -1, size = -1;  // -1 = not stated in the prompt
};
struct ParsedPrompt {
  std::vector<ExpectedObject> objects;
  int relation = -1;  // objects[0] <relation> objects[1]
  bool ok = false;    // 1 object, or 2 with a relation
  std::string error;  // why not ok
};
ParsedPrompt parse_prompt(const std::string& prompt);

// Prompt from an A1111 infotext (`parameters` chunk): the lines before "Negative prompt:" / "Steps:".
std::string prompt_from_infotext(const std::string& parameters);

struct Detection {
  int colour = -1, shape = -1, size = -1;
  float cx = 0, cy = 0;  // centroid (pixels)
  float side = 0;        // estimated bbox edge from area and shape
  float area = 0;        // soft area in pixels
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // bbox of the component (inclusive)
};
std::vector<Detection> detect_objects(const Image& img);

struct ImageScore {
  bool heldout = false;
  int objects = 0;               // expected
  int colour_ok = 0, shape_ok = 0;
  int size_ok = 0, size_n = 0;   // over objects whose size the prompt states
  int relation_ok = 0, relation_n = 0;
  bool count_ok = false;
  bool all_ok = false;
};
ImageScore score_image(const ParsedPrompt& p, const std::vector<Detection>& det);

// Running totals per attribute.
struct Tally {
  long images = 0, objects = 0;
  long colour = 0, shape = 0, size = 0, size_n = 0, relation = 0, relation_n = 0, count = 0, all = 0;
  void add(const ImageScore& s);
};

struct EvalOptions {
  std::string images_dir;
  std::string manifest;  // optional: holdout list from a dataset manifest.json
  std::string holdout;   // optional: explicit list, overrides the manifest
  bool per_image = false;  // include per-image results in the JSON
};
struct EvalResult {
  Tally all, seen, heldout;
  long skipped = 0;
  std::vector<std::string> holdout;   // combinations counted as held out
  std::string json;                   // full report as JSON
  std::string text;                   // human-readable table
};
EvalResult evaluate_dir(const EvalOptions& opt);

}  // namespace oboro::shapes
