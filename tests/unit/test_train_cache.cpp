// Training from `oboro data cache`: ingest → bucket (two stage-2 buckets) → cache (pixels latents and a
// frozen T5's text states) → train. Checks that batches come from one bucket each and use the cached
// latents, that cached text states are used, that resume is bit-identical, that the model records the
// manifest's dataset digest, and that the errors name the fix. On both manifest backends (manifest_backends.h).
#include "manifest_backends.h"
#include "core/error.h"
#include "core/sha256.h"
#include "data/audit.h"
#include "data/buckets.h"
#include "data/cache.h"
#include "data/manifest.h"
#include "data/synth.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/text_encoder.h"
#include "models/tokenizer.h"
#include "ops/backend.h"
#include "train/cached_data.h"
#include "train/trainer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_train_cache_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

struct CachedFixture {
  fs::path root, cache, te;
  std::string db;  // the manifest: an SQLite file or a PostgreSQL connection string
  std::string digest;  // sha256 of the sorted "<sha256> <licence>" lines of the 6 images
};

// 4 images of 64×64 and 2 of 128×128 (stage 2 never upscales: buckets 64² and 128²) and one of 40×40
// (no bucket), captions, a frozen random T5, and a cache with pixels stride 8 latents and text states at 16 tokens.
const CachedFixture& fixture(const std::string& backend) {
  static std::map<std::string, CachedFixture> made;
  auto it = made.find(backend);
  if (it != made.end()) return it->second;
  CachedFixture& f = made[backend] = [&] {
    CachedFixture f;
    f.root = scratch("fixture-" + backend);
    fs::create_directories(f.root / "d");
    std::vector<std::string> corpus;
    for (int i = 0; i < 6; ++i) {
      const int side = i < 4 ? 64 : 128;
      save_png((f.root / "d" / str("img", i, ".png")).string(), synth::make_image(8 + i, (uint64_t)i, side, side));
      const std::string cap = str("a picture number ", i, i % 2 ? ", red" : ", blue");
      std::ofstream(f.root / "d" / str("img", i, ".txt")) << cap << "\n";
      corpus.push_back(cap);
    }
    // An active image too small for any stage-2 bucket: not cached, so not trained on.
    save_png((f.root / "d" / "small.png").string(), synth::make_image(99, 99, 40, 40));
    train_vocab(corpus, 30, (f.root / "voc").string());
    T5Config tc;
    tc.vocab_size = Tokenizer::load((f.root / "voc.model").string()).vocab_size();
    tc.d_model = 16, tc.d_kv = 8, tc.num_heads = 2, tc.d_ff = 32, tc.num_layers = 1;
    auto t5 = std::make_unique<T5Encoder>(tc, cpu_backend());
    t5->init_weights(5);
    f.te = f.root / "te.safetensors";
    TextEncoder(Tokenizer::load((f.root / "voc.model").string()), std::move(t5)).save(f.te.string());

    f.db = oboro::test::manifest_target(backend, f.root, "m");
    auto m = Manifest::open(f.db, true);
    IngestOptions io;
    io.source = (f.root / "d").string();
    io.default_license = "CC0-1.0";
    io.progress = false;
    ingest(*m, io);
    BucketOptions bo;
    bo.stage = 2;
    assign_buckets(*m, bo, false);
    CacheOptions co;
    co.out_dir = (f.cache = f.root / "cache").string();
    co.stage = 2;
    co.pixels_stride = 8;
    co.text_encoder = f.te.string();
    co.max_tokens = 16;
    co.progress = false;
    const CacheReport r = build_cache(cpu_backend(), *m, co);
    EXPECT_EQ(r.latents_written, 6);
    std::vector<std::string> lines;
    for (int i = 0; i < 6; ++i)
      lines.push_back(sha256_file((f.root / "d" / str("img", i, ".png")).string()) + " CC0-1.0\n");
    std::sort(lines.begin(), lines.end());
    std::string all;
    for (auto& l : lines) all += l;
    f.digest = "sha256:" + sha256_hex(all);
    return f;
  }();
  return f;
}

TrainConfig cached_config(const fs::path& out, const std::string& backend) {
  const CachedFixture& f = fixture(backend);
  TrainConfig c;
  c.manifest = f.db;
  c.cache_dir = f.cache.string();
  c.cache_stage = 2;
  c.text_encoder = f.te.string();
  c.max_token_length = 16;
  c.codec = "pixels";
  c.pixels_stride = 8;
  c.output_dir = out.string();
  c.output_name = "cached";
  c.width = c.height = 64;  // sample size; training sizes come from the buckets
  c.head_schedule = "uniform";
  c.hidden_size = 32;
  c.num_layers = 2;
  c.ffn_hidden_size = 48;
  c.patch_size = 2;
  c.train_batch_size = 3;
  c.max_train_steps = 6;
  c.learning_rate = 1e-3;
  c.ema_decay = 0.9f;
  c.caption_dropout_rate = 0.2f;
  c.save_every_n_steps = 2;
  c.progress = false;
  return c;
}

class TrainCache : public oboro::test::ManifestBackend {};

}  // namespace

TEST_P(TrainCache, EpochBatchesAreBucketedShuffledAndCoverEveryImage) {
  const CachedFixture& f = fixture(backend());
  CachedDataset d = CachedDataset::open(f.db, f.cache.string(), 2, codec_identity("pixels", 8));
  ASSERT_EQ(d.size(), 6u);
  ASSERT_EQ(d.buckets().size(), 2u);
  std::set<std::pair<int, int>> sizes;
  for (const auto& b : d.buckets()) sizes.insert({b.width, b.height});
  EXPECT_EQ(sizes, (std::set<std::pair<int, int>>{{64, 64}, {128, 128}}));
  for (int64_t e = 0; e < 3; ++e) {
    const auto batches = d.epoch_batches(e, 3, 7);
    EXPECT_EQ(batches.size(), 3u);  // 4 images → 2 batches (the last wraps), 2 images → 1 batch
    std::set<uint32_t> seen;
    for (const auto& bt : batches) {
      ASSERT_EQ(bt.items.size(), 3u);
      for (uint32_t i : bt.items) {
        const auto& bk = d.buckets()[bt.bucket];
        EXPECT_EQ(d.items()[i].width, bk.width);  // one bucket per batch
        EXPECT_EQ(d.items()[i].height, bk.height);
        seen.insert(i);
      }
    }
    EXPECT_EQ(seen.size(), 6u);
    // Deterministic in (epoch, seed).
    const auto again = d.epoch_batches(e, 3, 7);
    for (size_t k = 0; k < batches.size(); ++k) EXPECT_EQ(batches[k].items, again[k].items);
  }
  // A latent read back has the bucket's shape and equals the pixels codec of the image's crop.
  std::vector<float> lat((size_t)3 * 64 * 8 * 8);
  for (uint32_t i = 0; i < d.size(); ++i)
    if (d.items()[i].width == 64) {
      d.latent(i, 3 * 64, 8, lat.data());
      Image im = load_image(d.items()[i].path);  // 64×64 in a 64² bucket: no crop
      float maxd = 0;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 64; ++y)
          for (int x = 0; x < 64; ++x) {
            // pixels codec, stride 8: channel c·64 + (y%8)·8 + x%8 at (y/8, x/8), value 2·v/255 − 1
            const float want = im.rgb[((size_t)y * 64 + x) * 3 + c] / 127.5f - 1.f;
            const float got = lat[((size_t)(c * 64 + (y % 8) * 8 + x % 8) * 8 + y / 8) * 8 + x / 8];
            maxd = std::max(maxd, std::fabs(got - want));
          }
      EXPECT_LT(maxd, 2e-3f);  // float16 storage
    }
  EXPECT_THROW(d.latent(0, 3 * 16, 4, lat.data()), Error);  // another stride: clear error
}

TEST_P(TrainCache, TrainsFromTheCacheWithExactResumeAndProvenance) {
  fs::path a = scratch("straight-" + backend()), b = scratch("resumed-" + backend());
  TrainResult ra = train(cached_config(a, backend()), cpu_backend());
  EXPECT_EQ(ra.steps, 6);
  EXPECT_TRUE(std::isfinite(ra.final_loss));
  EXPECT_GT(ra.text_cache_hits, 0);  // the frozen encoder's states came from the cache
  EXPECT_GT(ra.text_cache_hits + ra.text_cache_misses, 6 * 3 - 1);
  train(cached_config(b, backend()), cpu_backend(), "", 3);
  TrainResult rb = train(cached_config(b, backend()), cpu_backend(), "latest");
  EXPECT_EQ(rb.steps, 6);
  auto fa = SafetensorsFile::open(ra.state_path), fb = SafetensorsFile::open(rb.state_path);
  for (const char* n : {"dit.params", "dit.adam_m", "dit.adam_v", "dit.ema"}) {
    Tensor ta = fa->tensor(n), tb = fb->tensor(n);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << n;
    EXPECT_EQ(0, std::memcmp(ta.raw(), tb.raw(), ta.nbytes())) << n << " differs after resume";
  }
  auto model = SafetensorsFile::open(ra.model_path);
  const auto ds = nlohmann::json::parse(model->metadata().at("oboro.dataset"));
  EXPECT_EQ(ds["digest"], fixture(backend()).digest);
  EXPECT_EQ(ds["images"], 6);
  EXPECT_EQ(ds["licenses"]["CC0-1.0"], 6);
  // register-model links it to exactly the cached images through the digest.
  auto m = Manifest::open(fixture(backend()).db, false);
  const RegisterReport reg = register_model(*m, ra.model_path, "");
  EXPECT_EQ(reg.linked_by.rfind("cache stage 2 ", 0), 0u) << reg.linked_by;
  EXPECT_EQ(reg.images, 6);
}

TEST_P(TrainCache, ErrorsNameTheFix) {
  auto msg = [](TrainConfig c) {
    try {
      train(c, cpu_backend());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const fs::path o = scratch("errors-" + backend());
  TrainConfig c = cached_config(o, backend());
  c.manifest.clear();
  EXPECT_NE(msg(c).find("cache_dir and manifest go together"), std::string::npos);
  c = cached_config(o, backend());
  c.train_data_dir = "x";
  EXPECT_NE(msg(c).find("exactly one of"), std::string::npos);
  c = cached_config(o, backend());
  c.pixels_stride = 4;  // nothing cached with this codec
  EXPECT_NE(msg(c).find("oboro data cache"), std::string::npos);
  c = cached_config(o, backend());
  c.license_allow = {"MIT"};
  EXPECT_NE(msg(c).find("licence the training policy does not allow"), std::string::npos);
}

OBORO_MANIFEST_BACKENDS(TrainCache);
