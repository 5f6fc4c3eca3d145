// Resolution buckets for the two training stages of the report.
//   stage 1: square 256×256. The shorter side is scaled to 256 and a seeded random square window is
//            cut along the longer side (a pure function of the seed and the image's content hash).
//   stage 2: about 512² pixels, aspect ≤ 1.3, sides multiples of 64 (kohya-style list: for each width,
//            the tallest height that keeps the area ≤ 512²): 448×576, 512×512, 576×448. An image takes
//            the bucket nearest its aspect (in log space) and is scaled to cover it; the excess is
//            cropped — centred horizontally, and with a quarter of the excess above / three quarters
//            below vertically, so portraits lose more of the bottom than of the top (heads survive).
// Never upscale by default: an image smaller than its bucket gets the largest smaller bucket
// (multiples of 64, same aspect limit) that it covers, or none (too small, listed) below 64 px.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace oboro {

struct BucketOptions {
  int stage = 2;
  int stage1_size = 256;
  int64_t stage2_area = 512 * 512;
  double max_aspect = 1.3;
  int step = 64;
  bool upscale = false;
  uint64_t seed = 0;
};

struct Bucket {
  int width = 0, height = 0;                      // training size
  int crop_x = 0, crop_y = 0, crop_w = 0, crop_h = 0;  // source window resized to width×height
  std::string str() const;                        // "576x448 crop 12,0 1800x1400"
};

std::vector<std::pair<int, int>> stage2_buckets(int64_t area, double max_aspect, int step);
// nullopt with *why set when the image cannot be bucketed (too small without upscaling).
std::optional<Bucket> assign_bucket(int width, int height, const std::string& content_hash, const BucketOptions& o,
                                    std::string* why = nullptr);
// The crop window as resize_cover_crop() fractions (0..1) for the bucket's source window.
std::pair<float, float> crop_fractions(int width, int height, const Bucket& b);

// Buckets every active image of the manifest for o.stage. `line` (optional) receives
// "<path>\t<bucket>" for each image ("<path>\tnone: <why>" when it cannot be bucketed). Unless
// dry_run, the buckets table is updated in batched transactions. Returns counts per bucket size.
class Manifest;
struct BucketReport {
  int64_t images = 0, bucketed = 0, too_small = 0, changed = 0;
  std::map<std::string, int64_t> per_bucket;  // "576x448" → images
};
BucketReport assign_buckets(Manifest& m, const BucketOptions& o, bool dry_run,
                            const std::function<void(const std::string&)>& line = nullptr);

}  // namespace oboro
