// Latent and text-encoder caches: every image encoded once into sharded safetensors files.
//
// Keys (sha256 hex):
//   latent: "latent|<image sha256>|<bucket WxH>|<crop x,y,w,h>|<codec identity>"
//   text:   "text|<encoder identity>|<max tokens>|<training caption>"
// so a change to the pixels, the bucket/crop, the codec (name, stride, version), the text encoder
// file, the token limit or the caption (including its quality tag) gives a new key, and the old
// entry is simply no longer referenced. Tensor names inside a shard are the keys; the manifest's
// cache_entries table maps key → shard file, and image_cache maps (image, stage, codec) → keys.
// Shards are written atomically and then committed, so a crash loses at most the shard in flight,
// and a re-run skips every key already present.
#pragma once
#include "core/tensor.h"
#include "data/manifest.h"
#include "io/safetensors.h"

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace oboro {

class Backend;

struct CacheOptions {
  std::string out_dir;
  int stage = 2;
  std::string codec = "pixels";   // pixels | flux-vae
  int pixels_stride = 1;
  std::string vae;                // the FLUX.1 VAE file for flux-vae
  std::string text_encoder;       // T5 file/dir; empty → text cache skipped
  int max_tokens = 64;
  int64_t shard_bytes = 256ll << 20;
  ShardSpec shard;
  bool progress = true;
};

struct CacheReport {
  int64_t images = 0, latents_written = 0, latents_present = 0, no_bucket = 0, failed = 0;
  int64_t texts_written = 0, texts_present = 0, shards = 0, other_shard = 0;
  std::string text_note, codec_id;
  int shards_taken_over = 0;  // PostgreSQL: --shard parts of crashed workers this process did (work_claims.h)
};

// "pixels/stride=2/v1", or "flux-vae/<first 16 hex of the VAE file's sha256>/v1" (reads the file).
std::string codec_identity(const std::string& codec, int pixels_stride, const std::string& vae = "");
std::string latent_cache_key(const std::string& image_sha256, int bucket_w, int bucket_h, int cx, int cy, int cw, int ch,
                             const std::string& codec_id);
// "t5:<first 16 hex of the file's sha256>:dim=D" (a folder: its absolute path): what text entries are keyed by.
std::string text_encoder_identity(const std::string& path, int dim);
std::string text_cache_key(const std::string& encoder_id, int max_tokens, const std::string& caption);

// The VAE and the text encoder run on `be` (the command line's --backend).
CacheReport build_cache(Backend& be, Manifest& m, const CacheOptions& opt);

// Reads a cache for training: the active images of a stage with their current entries.
class CacheReader {
 public:
  CacheReader(Manifest& m, std::string dir) : m_(m), dir_(std::move(dir)) {}
  struct Item {
    int64_t image_id = 0;
    std::string path, caption, latent_key, text_key;
    int width = 0, height = 0;  // bucket size in pixels
  };
  // Active images of `stage` whose latent entry for `codec_id` exists (stale entries are skipped).
  std::vector<Item> items(int stage, const std::string& codec_id);
  // Latent (C, H/stride, W/stride) as F32; nullopt when the key is not in the cache.
  std::optional<Tensor> latent(const std::string& key);
  // Text hidden states (tokens, dim) as F32 (valid tokens only; pad them with a zero mask).
  std::optional<Tensor> text(const std::string& key);

 private:
  std::optional<Tensor> get(const std::string& key);
  Manifest& m_;
  std::string dir_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> open_;
};

}  // namespace oboro
