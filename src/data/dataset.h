// Training images with captions: a folder of images with sidecar captions (`img.png` + `img.txt`,
// folders named `N_name` repeat N times) or a kohya-style dataset TOML ([[datasets]] /
// [[datasets.subsets]]: image_dir, caption_extension, num_repeats, shuffle_caption, keep_tokens,
// caption_dropout_rate, flip_aug). Scanning reads no pixels; load() decodes one image.
//
// Folder mode searches subfolders (hidden ones skipped); the nearest enclosing `N_name` folder sets
// the repeats and forms a subset. TOML mode follows kohya: [general] < [[datasets]] < subset keys,
// image_dir relative to the TOML's folder, only the files directly in image_dir, `class_tokens` as
// the caption of images without a sidecar; bucketing keys (resolution, batch_size, enable_bucket,
// ...) are accepted for the trainer; other keys give one warning line. Entries are in sorted path
// order with each image's repeats consecutive.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct DatasetEntry {
  std::string image_path;
  std::string caption;            // sidecar text (first line trimmed), "" if none
  int subset = 0;                 // index into subsets()
};

struct DatasetSubset {
  std::string image_dir;
  std::string caption_extension = ".txt";
  int num_repeats = 1;
  bool shuffle_caption = false;   // shuffle comma-separated tags after the first keep_tokens
  int keep_tokens = 0;
  float caption_dropout_rate = 0.f;
  bool flip_aug = false;
};

class Dataset {
 public:
  // `source`: a directory or a .toml file. Errors name the path and the fix.
  static Dataset open(const std::string& source);

  const std::vector<DatasetEntry>& entries() const { return entries_; }  // repeats expanded
  const std::vector<DatasetSubset>& subsets() const { return subsets_; }
  size_t size() const { return entries_.size(); }
  std::vector<std::string> captions() const;  // for vocabulary training: one per image, repeats not expanded
  std::vector<std::string> image_files() const;  // distinct image paths, in entry order (for provenance checks)

  // Decode entry i, resize-cover + crop to width×height (crop window from `rng_seed`, centre when
  // rng_seed == 0), write (3, height, width) in [-1, 1] into chw and the caption after subset
  // augmentations (shuffle, flip flag applied to pixels) into caption. A corrupt or unreadable image
  // prints one warning line, is counted in skipped() and returns false; never throws for it.
  // Every random choice is uniform_at(rng_seed, (purpose << 56) ^ i, k): a pure function of
  // (rng_seed, i). Safe to call from several threads at once (caption may be null).
  bool load(size_t i, int width, int height, uint64_t rng_seed, float* chw, std::string* caption) const;
  size_t skipped() const { return skipped_; }

 private:
  std::vector<DatasetEntry> entries_;
  std::vector<DatasetSubset> subsets_;
  mutable size_t skipped_ = 0;
};

}  // namespace oboro
