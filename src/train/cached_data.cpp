#include "train/cached_data.h"

#include "core/error.h"
#include "core/rng.h"

#include <algorithm>
#include <filesystem>
#include <map>

namespace oboro {

namespace fs = std::filesystem;

CachedDataset CachedDataset::open(const std::string& manifest, const std::string& dir, int stage,
                                  const std::string& codec_id) {
  std::error_code ec;
  if (!sql::is_postgres_target(manifest) && !fs::is_regular_file(manifest, ec))
    fail("manifest = \"", manifest, "\": no such file — create it with `oboro data ingest DIR --manifest ", manifest, "`");
  if (!fs::is_directory(dir, ec))
    fail("cache_dir = \"", dir, "\": no such folder — fill it with `oboro data cache --manifest ", manifest, " --out ", dir,
         " --stage ", stage, "`");
  CachedDataset d;
  d.m_ = Manifest::open(manifest, false);
  d.manifest_path_ = d.m_->path();  // a PostgreSQL password is not shown
  d.reader_ = std::make_unique<CacheReader>(*d.m_, dir);
  d.items_ = d.reader_->items(stage, codec_id);
  if (d.items_.empty())
    fail(d.manifest_path_, ": no active image has a stage-", stage, " latent for codec ", codec_id, " in ", dir,
         " — run `oboro data bucket --manifest ", manifest, " --stage ", stage, "` and `oboro data cache --manifest ",
         manifest, " --out ", dir, " --stage ", stage, "` with the codec this config trains with");
  std::map<std::pair<int, int>, uint32_t> index;
  for (uint32_t i = 0; i < d.items_.size(); ++i) {
    auto key = std::make_pair(d.items_[i].width, d.items_[i].height);
    auto [it, fresh] = index.emplace(key, (uint32_t)d.buckets_.size());
    if (fresh) d.buckets_.push_back(Bucket{key.first, key.second, {}});
    d.buckets_[it->second].items.push_back(i);
  }
  return d;
}

std::vector<std::string> CachedDataset::captions() const {
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const auto& it : items_) out.push_back(it.caption);
  return out;
}

namespace {
// Seeded Fisher–Yates; `stream` separates the shuffles of one epoch.
template <class T>
void shuffle(std::vector<T>& v, uint64_t seed, uint64_t stream) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = (size_t)(uniform_at(seed, stream, i) * (double)i);
    std::swap(v[i - 1], v[std::min(j, i - 1)]);
  }
}
}  // namespace

std::vector<CachedDataset::Batch> CachedDataset::epoch_batches(int64_t epoch, int B, uint64_t seed) const {
  std::vector<Batch> out;
  for (uint32_t b = 0; b < buckets_.size(); ++b) {
    std::vector<uint32_t> order = buckets_[b].items;
    shuffle(order, seed, 0xB0C4E7000000ull + (uint64_t)epoch * 4096 + b);
    for (size_t start = 0; start < order.size(); start += (size_t)B) {
      Batch bt;
      bt.bucket = b;
      for (int k = 0; k < B; ++k) bt.items.push_back(order[(start + (size_t)k) % order.size()]);
      out.push_back(std::move(bt));
    }
  }
  shuffle(out, seed, 0xBA7C4000000ull + (uint64_t)epoch);
  return out;
}

void CachedDataset::latent(uint32_t i, int channels, int stride, float* dst) {
  const CacheReader::Item& it = items_.at(i);
  std::optional<Tensor> t = reader_->latent(it.latent_key);
  if (!t) fail(it.path, ": its latent is no longer in the cache — re-run `oboro data cache`");
  const int64_t h = it.height / stride, w = it.width / stride;
  if (t->ndim() != 3 || t->dim(0) != channels || t->dim(1) != h || t->dim(2) != w)
    fail(it.path, ": cached latent has shape ", shape_str(t->shape()), " but this training config expects (", channels,
         ", ", h, ", ", w, ") — the cache was built with another codec or stride; rebuild it with `oboro data cache`");
  std::copy(t->f32(), t->f32() + t->numel(), dst);
}

std::vector<float> CachedDataset::text(const std::string& key, int dim, int* tokens) {
  *tokens = 0;
  std::optional<Tensor> t = reader_->text(key);
  if (!t) return {};
  if (t->ndim() != 2 || t->dim(1) != dim)
    fail("text cache entry ", key, " has shape ", shape_str(t->shape()), ", expected (tokens, ", dim,
         ") — rebuild the text cache with this text encoder");
  *tokens = (int)t->dim(0);
  return std::vector<float>(t->f32(), t->f32() + t->numel());
}

DatasetSummary CachedDataset::provenance(const LicensePolicy& policy) {
  std::vector<ProvenanceEntry> entries;
  std::map<int64_t, bool> seen;
  std::string refused;
  int n_refused = 0;
  for (const auto& it : items_) {
    if (seen.count(it.image_id)) continue;
    seen[it.image_id] = true;
    std::optional<ImageRow> row = m_->image_by_id(it.image_id);
    if (!row) fail(manifest_path_, ": image id ", it.image_id, " vanished while reading the cache");
    if (row->license.empty() || !policy.allowed(row->license)) {
      if (++n_refused <= 10)
        refused += str("\n  ", row->path, " (", row->license.empty() ? "no licence" : row->license, ")");
      continue;
    }
    ProvenanceEntry e;
    e.file = row->relpath;
    e.sha256 = row->sha256;
    e.source = row->source;
    e.original = row->original;
    e.license = row->license;
    e.attribution = row->attribution;
    entries.push_back(std::move(e));
  }
  if (n_refused)
    fail(n_refused, " cached image(s) have a licence the training policy does not allow (", policy.list(), "):",
         refused, n_refused > 10 ? "\n  ..." : "",
         "\nremove them (`oboro data remove --manifest ", manifest_path_,
         " --hash H --reason ...`) or add their licence to license_allow");
  std::vector<const ProvenanceEntry*> used;
  for (const auto& e : entries) used.push_back(&e);
  return summarize(used);
}

}  // namespace oboro
