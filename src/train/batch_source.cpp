#include "train/batch_source.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/cache.h"
#include "data/dataset.h"
#include "data/provenance.h"
#include "data/sql_db.h"
#include "models/codec.h"
#include "train/cached_data.h"
#include "train/trainer.h"
#include <algorithm>
#include <cstdio>

namespace oboro {

namespace {

// Caption dropout of sample b: the same draw for both sources.
bool drop_caption(const TrainConfig& cfg, const StepRng& rng, int b) {
  return uniform_at(cfg.seed, rng.stream(kSlotDropout), (uint64_t)b) < cfg.caption_dropout_rate;
}

// A data position read from a training state must lie inside this dataset's epoch (`n` images or batches):
// a checkpoint of another dataset, or a damaged one, is an error, not an out-of-range read.
void check_position(const DataPosition& pos, size_t n, const char* what) {
  if (pos.epoch < 0 || pos.index < 0 || (uint64_t)pos.index >= n)
    fail("the training state's data position (epoch ", pos.epoch, ", ", what, " index ", pos.index,
         ") is outside this dataset's epoch of ", n, " ", what, ": the checkpoint was made with other data or is "
         "damaged; resume with the data it was trained on, from another checkpoint, or start a new run");
}

// ---------------------------------------------------------------- a folder of images

// Position: index = the next image of the epoch's permutation of the dataset's entries.
class FolderBatches final : public BatchSource {
 public:
  FolderBatches(const TrainConfig& cfg, const LatentCodec& codec, Dataset data)
      : cfg_(cfg), codec_(codec), data_(std::move(data)) {}

  void next(DataPosition& pos, const StepRng& rng, MicroBatch& out) override {
    const int B = cfg_.train_batch_size, W = cfg_.width, H = cfg_.height;
    out.h = H / codec_.stride, out.w = W / codec_.stride;
    const int64_t per = (int64_t)codec_.channels() * out.h * out.w;
    out.x1.resize((size_t)B * per);
    out.captions.resize(B), out.files.resize(B);
    img_.resize((size_t)3 * H * W);
    // B images, skipping unreadable ones (the dataset counts them and prints a warning for each).
    size_t misses = 0;
    for (int b = 0; b < B;) {
      const size_t e = next_entry(pos);
      const uint64_t crop_seed = 1 + rng.stream(kSlotCrop) * 1000003ull + (uint64_t)b;
      if (!data_.load(e, W, H, crop_seed, img_.data(), &out.captions[b])) {
        if (++misses > data_.size()) fail("no image of the dataset could be read: see the warnings above");
        continue;
      }
      codec_.encode(img_.data(), H, W, out.x1.data() + (size_t)b * per);
      if (drop_caption(cfg_, rng, b)) out.captions[b].clear();
      out.files[b] = data_.entries()[e].image_path;
      ++b;
    }
  }

  void set_text_encoder(TextEncoder& te, bool trained) override { te_ = &te, train_te_ = trained; }
  TextBatch text(const std::vector<std::string>& captions) override {
    return te_->encode(captions, train_te_, cfg_.max_token_length);
  }

  size_t num_images() const override { return data_.size(); }
  int64_t skipped_images() const override { return (int64_t)data_.skipped(); }
  std::vector<std::string> captions() const override { return data_.captions(); }

 private:
  // Fisher-Yates permutation of the n entries, seeded by the epoch.
  static std::vector<uint32_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch) {
    std::vector<uint32_t> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = (uint32_t)i;
    for (size_t i = n; i > 1; --i) {
      size_t j = (size_t)(uniform_at(seed, 0x5EED0000ull + (uint64_t)epoch, i) * i);
      std::swap(p[i - 1], p[std::min(j, i - 1)]);
    }
    return p;
  }

  size_t next_entry(DataPosition& pos) {
    check_position(pos, data_.size(), "images");
    if (perm_epoch_ != pos.epoch) perm_ = epoch_permutation(data_.size(), cfg_.seed, pos.epoch), perm_epoch_ = pos.epoch;
    const size_t e = perm_[(size_t)pos.index];
    if (++pos.index >= (int64_t)data_.size()) pos.index = 0, ++pos.epoch;
    return e;
  }

  const TrainConfig& cfg_;
  const LatentCodec& codec_;
  Dataset data_;
  TextEncoder* te_ = nullptr;
  bool train_te_ = false;
  std::vector<uint32_t> perm_;  // entries of epoch perm_epoch_, in the order they are drawn
  int64_t perm_epoch_ = -1;
  std::vector<float> img_;      // (3, H, W) decoded image in [-1, 1]
};

// ---------------------------------------------------------------- `oboro data cache`

// Position: index = the next batch of the epoch's bucketed batch list (train/cached_data.h).
class CachedBatches final : public BatchSource {
 public:
  CachedBatches(const TrainConfig& cfg, const LatentCodec& codec, CachedDataset data)
      : cfg_(cfg), codec_(codec), data_(std::move(data)) {}

  void next(DataPosition& pos, const StepRng& rng, MicroBatch& out) override {
    const int B = cfg_.train_batch_size, s = codec_.stride;
    if (pos.epoch < 0) check_position(pos, 1, "batches");
    if (batches_epoch_ != pos.epoch) {
      batches_ = data_.epoch_batches(pos.epoch, B, cfg_.seed);
      batches_epoch_ = pos.epoch;
    }
    check_position(pos, batches_.size(), "batches");
    const CachedDataset::Batch bt = batches_[(size_t)pos.index];
    if (++pos.index >= (int64_t)batches_.size()) pos.index = 0, ++pos.epoch;
    // B latents of one bucket, at the bucket's size.
    const CachedDataset::Bucket& bk = data_.buckets()[bt.bucket];
    out.h = bk.height / s, out.w = bk.width / s;
    const int64_t per = (int64_t)codec_.channels() * out.h * out.w;
    out.x1.resize((size_t)B * per);
    out.captions.resize(B), out.files.resize(B);
    for (int b = 0; b < B; ++b) {
      const uint32_t i = bt.items[(size_t)b];
      data_.latent(i, codec_.channels(), s, out.x1.data() + (size_t)b * per);
      out.captions[b] = data_.items()[i].caption;
      if (drop_caption(cfg_, rng, b)) out.captions[b].clear();
      out.files[b] = data_.items()[i].path;
    }
  }

  void set_text_encoder(TextEncoder& te, bool trained) override {
    te_ = &te, train_te_ = trained;
    if (!trained && !cfg_.text_encoder.empty()) text_cache_id_ = text_encoder_identity(cfg_.text_encoder, te.dim());
  }

  // A frozen encoder's cached states where present, the rest (e.g. dropped, empty captions) encoded now.
  // A jointly trained T5 always encodes live.
  TextBatch text(const std::vector<std::string>& caps) override {
    if (text_cache_id_.empty() || train_te_) return te_->encode(caps, train_te_, cfg_.max_token_length);
    const int dim = te_->dim(), B = (int)caps.size();
    std::vector<std::vector<float>> rows(B);  // (tokens, dim) per caption
    std::vector<int> len(B, 0);               // tokens
    std::vector<std::string> missing;
    std::vector<int> missing_at;
    for (int b = 0; b < B; ++b) {
      rows[b] = data_.text(text_cache_key(text_cache_id_, cfg_.max_token_length, caps[b]), dim, &len[b]);
      if (len[b] == 0) missing.push_back(caps[b]), missing_at.push_back(b);
    }
    hits_ += B - (int64_t)missing.size();
    misses_ += (int64_t)missing.size();
    if (!missing.empty()) {
      TextBatch live = te_->encode(missing, false, cfg_.max_token_length);
      for (size_t k = 0; k < missing.size(); ++k) {
        const int b = missing_at[k];
        len[b] = live.lengths[k];
        rows[b] = download_row(live, (int)k);
      }
    }
    // Padded to the longest caption, assembled on the host and uploaded once.
    const int L = std::max(1, *std::max_element(len.begin(), len.end()));
    std::vector<float> hidden((size_t)B * L * dim, 0.f);
    for (int b = 0; b < B; ++b)
      std::copy(rows[b].begin(), rows[b].end(), hidden.begin() + (ptrdiff_t)((size_t)b * L * dim));
    Backend& be = te_->t5().backend();
    TextBatch tb = alloc_text_batch(be, B, L, dim, len);
    be.upload(tb.hidden.f32(), hidden.data(), hidden.size());
    return tb;
  }

  size_t num_images() const override { return data_.size(); }
  int64_t skipped_images() const override { return 0; }
  std::vector<std::string> captions() const override { return data_.captions(); }

  void report(TrainResult& res) const override {
    res.text_cache_hits = hits_;
    res.text_cache_misses = misses_;
    if (text_cache_id_.empty()) return;
    std::fprintf(stderr, "text cache: %lld captions read from the cache, %lld encoded now%s\n", (long long)hits_,
                 (long long)misses_,
                 hits_ == 0 ? " (none cached for this text encoder and max_token_length: run `oboro data cache "
                              "--text-encoder ...` with --max-tokens equal to max_token_length)"
                            : "");
  }

 private:
  const TrainConfig& cfg_;
  const LatentCodec& codec_;
  CachedDataset data_;
  TextEncoder* te_ = nullptr;
  bool train_te_ = false;
  std::string text_cache_id_;  // the frozen text encoder's cache identity ("" = encode live)
  int64_t hits_ = 0, misses_ = 0;
  std::vector<CachedDataset::Batch> batches_;  // the batches of epoch batches_epoch_
  int64_t batches_epoch_ = -1;
};

}  // namespace

std::unique_ptr<BatchSource> open_batch_source(const TrainConfig& cfg, const LatentCodec& codec,
                                               ProvenanceCheck& prov) {
  LicensePolicy policy;
  if (!cfg.license_allow.empty()) policy.allow = cfg.license_allow;
  if (!cfg.cache_dir.empty()) {
    // Pre-encoded latents: the manifest is the provenance (licences were checked at ingest; the training
    // policy is applied again here).
    CachedDataset data = CachedDataset::open(cfg.manifest, cfg.cache_dir, cfg.cache_stage,
                                             codec_identity(cfg.codec, cfg.pixels_stride, cfg.vae));
    std::string bk;
    for (const auto& b : data.buckets()) bk += str(bk.empty() ? "" : ", ", b.width, "x", b.height, " ", b.items.size());
    std::fprintf(stderr, "dataset: %zu cached stage-%d images from %s (buckets %s)\n", data.size(), cfg.cache_stage,
                 cfg.cache_dir.c_str(), bk.c_str());
    prov.has_manifest = true;
    prov.summary = data.provenance(policy);
    prov.manifests.push_back(sql::display_name(cfg.manifest));  // no PostgreSQL password in the model's metadata
    return std::make_unique<CachedBatches>(cfg, codec, std::move(data));
  }
  Dataset data = Dataset::open(cfg.train_data_dir.empty() ? cfg.dataset_config : cfg.train_data_dir);
  std::fprintf(stderr, "dataset: %zu images (repeats included)\n", data.size());
  // Provenance before anything else runs: every image listed in its manifest.jsonl, unchanged, with an
  // allowed licence (the files are hashed now).
  prov = check_provenance(data.image_files(), policy, cfg.require_license);
  return std::make_unique<FolderBatches>(cfg, codec, std::move(data));
}

}  // namespace oboro
