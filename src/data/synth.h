// Synthetic photo-like images with planted near-duplicates, for testing and measuring the data
// pipeline (ingest throughput, dedup recall/precision) at any scale without downloading anything.
// An image is a pure function of (seed, index, size): a two-colour gradient, soft colour blobs,
// flat shapes, a stripe texture and pixel noise. A planted duplicate is a copy of an earlier
// original passed through one perturbation: downscale, JPEG re-encode, slight crop (≤ 5% per
// side), small colour jitter, or two of them combined.
#pragma once
#include "io/image.h"

#include <cstdint>
#include <string>

namespace oboro::synth {

enum class Perturb { Resize, Jpeg, Crop, Jitter, CropJpeg, ResizeJitter, kCount };
const char* perturb_name(Perturb p);

Image make_image(uint64_t seed, uint64_t index, int width, int height);
// The perturbed copy; JPEG kinds return the decoded JPEG pixels and, if `jpeg` is non-null, the
// encoded bytes (to be written as a .jpg file).
Image perturb(const Image& src, Perturb kind, uint64_t seed, uint64_t index, std::string* jpeg = nullptr);
std::string encode_jpeg(const Image& img, int quality);

struct Options {
  std::string out_dir;
  int64_t count = 1000;          // images in all (originals + planted duplicates)
  int size = 64;                 // side of the originals
  double dup_fraction = 0.1;     // share of planted near-duplicates
  uint64_t seed = 1;
  int per_folder = 1000;         // files per subfolder (000/, 001/, ...)
  std::string license = "CC0-1.0";
  bool manifest_jsonl = true;    // write manifest.jsonl (licence, source, sha256, captions)
  bool force = false;
};
struct Summary {
  int64_t originals = 0, duplicates = 0;
};
// Writes DIR/NNN/IIIIIIII.png (+ .txt caption; JPEG duplicates as .jpg), DIR/manifest.jsonl and
// DIR/duplicates.tsv ("duplicate<TAB>original<TAB>perturbation", relative paths): the ground truth.
Summary write_dataset(const Options& opt);

}  // namespace oboro::synth
