// Training from `oboro data cache`: the trainer streams pre-encoded latents (and, with a frozen
// text encoder, pre-encoded text states) instead of decoding and encoding images every step.
//
// The cache holds each image at its bucket's size (stage 1: 256², stage 2: ~512² buckets of several
// aspect ratios), so batches are formed per bucket, as kohya's bucketed loaders do: every epoch the
// items of each bucket are shuffled (seeded by the epoch), cut into batches of B (a bucket's last,
// short batch is filled by wrapping around its own shuffled list), and the batches of all buckets are
// shuffled together. A batch is therefore addressed by (epoch, index) alone, so resume is exact.
#pragma once
#include "data/cache.h"
#include "data/manifest.h"
#include "data/provenance.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

class CachedDataset {
 public:
  // Opens MANIFEST and the cache folder DIR, lists the active images of `stage` cached with `codec_id`
  // (codec_identity()). Fails with the fix when there are none (run `oboro data cache` first).
  static CachedDataset open(const std::string& manifest, const std::string& dir, int stage, const std::string& codec_id);

  struct Bucket {
    int width = 0, height = 0;    // pixels
    std::vector<uint32_t> items;  // indices into items()
  };
  const std::vector<CacheReader::Item>& items() const { return items_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  size_t size() const { return items_.size(); }
  std::vector<std::string> captions() const;

  // Batches of one epoch: each a bucket index and B item indices.
  struct Batch {
    uint32_t bucket = 0;
    std::vector<uint32_t> items;
  };
  std::vector<Batch> epoch_batches(int64_t epoch, int B, uint64_t seed) const;

  // Latent (C, h, w) of item i into dst (C·h·w floats); fails naming the image when the entry is missing or
  // its shape is not (channels, height/stride, width/stride).
  void latent(uint32_t i, int channels, int stride, float* dst);
  // Cached text states (tokens, dim) under `key`; empty when not cached.
  std::vector<float> text(const std::string& key, int dim, int* tokens);

  // Provenance of the images used, from the manifest rows (the same digest rule as manifest.jsonl folders:
  // sha256 of the sorted "<image sha256> <licence>" lines). Fails listing the images whose licence the
  // policy does not allow.
  DatasetSummary provenance(const LicensePolicy& policy);

 private:
  std::unique_ptr<Manifest> m_;
  std::unique_ptr<CacheReader> reader_;
  std::vector<CacheReader::Item> items_;
  std::vector<Bucket> buckets_;
  std::string manifest_path_;
};

}  // namespace oboro
