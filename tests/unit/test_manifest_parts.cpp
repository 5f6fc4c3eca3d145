// Data pipeline building blocks: licence policy and SPDX, dataset digest, shards, embeddings,
// neighbour search (exact vs LSH), DBSCAN, iterative dedup on planted near-duplicates, buckets,
// quality thresholds.
#include "test_util.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "data/buckets.h"
#include "data/dedup.h"
#include "data/features.h"
#include "data/manifest.h"
#include "data/quality.h"
#include "data/synth.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

using namespace oboro;

namespace {

using oboro::test::error_of;

// A planted set: `originals` synthetic images, then `dups` near-duplicates of random originals,
// each through one perturbation (cycling over all kinds). family[i] = the original of i.
struct Planted {
  EmbeddingSet set;
  std::vector<int64_t> family;
  std::vector<uint64_t> rank;
  int64_t dups = 0;
};

Planted make_planted(int originals, int dups, int size, uint64_t seed) {
  Planted p;
  const int n = originals + dups;
  p.set.dim = DctColourExtractor::kDim;
  p.set.data.resize((size_t)n * p.set.dim);
  p.family.resize((size_t)n);
  p.dups = dups;
  for (int i = 0; i < n; ++i)
    p.family[(size_t)i] = i < originals ? i : std::min(originals - 1, (int)(uniform_at(seed, 77, (uint64_t)i) * originals));
  DctColourExtractor ex;
  parallel_for(n, [&](int64_t b, int64_t e) {
    std::vector<float> f((size_t)p.set.dim);
    for (int64_t i = b; i < e; ++i) {
      Image im = synth::make_image(seed, (uint64_t)p.family[(size_t)i], size, size);
      if (i >= originals) im = synth::perturb(im, (synth::Perturb)(i % (int)synth::Perturb::kCount), seed, (uint64_t)i);
      ex.extract(im, f.data());
      for (int k = 0; k < p.set.dim; ++k) p.set.data[(size_t)i * p.set.dim + (size_t)k] = f32_to_f16(f[(size_t)k]);
    }
  });
  for (int i = 0; i < n; ++i) p.rank.push_back(dedup_rank(seed, std::to_string(i)));
  return p;
}

const Planted& planted() {
  static const Planted p = make_planted(600, 200, 40, 11);
  return p;
}

}  // namespace

TEST(ManifestParts, LicencePolicyAndSpdx) {
  const LicencePolicy d = LicencePolicy::defaults();
  EXPECT_EQ(d.str(), "CC0-1.0,CC-BY-4.0,CC-BY-SA-4.0,Apache-2.0,MIT");
  EXPECT_TRUE(d.allows("CC0-1.0"));
  EXPECT_TRUE(d.allows("cc-by-4.0"));
  EXPECT_FALSE(d.allows("CC-BY-NC-4.0"));
  EXPECT_FALSE(d.allows(""));
  EXPECT_TRUE(d.allows("CC-BY-NC-4.0 OR MIT"));
  EXPECT_FALSE(d.allows("CC-BY-NC-4.0 AND MIT"));
  EXPECT_TRUE(d.allows("MIT AND Apache-2.0"));
  EXPECT_FALSE(d.allows("GPL-2.0-only WITH Classpath-exception-2.0"));
  EXPECT_EQ(normalise_spdx("  cc0-1.0 ", "x"), "CC0-1.0");
  EXPECT_EQ(normalise_spdx("mit or apache-2.0", "x"), "MIT OR Apache-2.0");
  EXPECT_EQ(normalise_spdx("LicenseRef-mine", "x"), "LicenseRef-mine");
  EXPECT_NE(error_of([] { normalise_spdx("CC BY/NC", "img.png.license"); }).find("img.png.license"), std::string::npos);
  const LicencePolicy p = LicencePolicy::parse("mit, CC0-1.0,MIT");
  EXPECT_EQ(p.str(), "MIT,CC0-1.0");
  EXPECT_NE(error_of([] { LicencePolicy::parse(" , "); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([] { LicencePolicy::parse("MIT OR CC0-1.0"); }).find("expression"), std::string::npos);
}

TEST(ManifestParts, DatasetDigestIsOrderIndependentSha256OfSortedLines) {
  const std::string a = std::string(64, 'a') + " CC0-1.0\n", b = std::string(64, 'b') + " MIT\n";
  EXPECT_EQ(dataset_digest({b, a}), "sha256:" + sha256_hex(a + b));
  EXPECT_EQ(dataset_digest({a, b}), dataset_digest({b, a}));
  EXPECT_EQ(dataset_digest({}), "sha256:" + sha256_hex(""));
}

TEST(ManifestParts, ShardsPartitionTheKeys) {
  EXPECT_EQ(ShardSpec::parse("").count, 1);
  const ShardSpec s = ShardSpec::parse("2/3");
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 3);
  for (const char* bad : {"3/3", "1", "-1/2", "a/b", "1/0", "1/2x"})
    EXPECT_NE(error_of([&] { ShardSpec::parse(bad); }).find("--shard"), std::string::npos) << bad;
  for (int k = 0; k < 200; ++k) {
    const std::string key = "dir/" + std::to_string(k) + ".png";
    int owners = 0;
    for (int i = 0; i < 3; ++i) owners += ShardSpec{i, 3}.mine(key);
    EXPECT_EQ(owners, 1);
  }
  ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  const ShardSpec m = ShardSpec::parse("mpi");
  EXPECT_EQ(m.index, 1);
  EXPECT_EQ(m.count, 4);
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
}

TEST(ManifestParts, EmbeddingsAreUnitAndSeparateDuplicatesFromDistinctImages) {
  DctColourExtractor ex;
  std::vector<std::vector<float>> f(40, std::vector<float>(DctColourExtractor::kDim));
  for (int i = 0; i < 40; ++i) {
    ex.extract(synth::make_image(3, (uint64_t)i, 64, 64), f[(size_t)i].data());
    EXPECT_NEAR(dot(f[(size_t)i].data(), f[(size_t)i].data(), ex.dim()), 1.0, 1e-5);
  }
  for (int i = 0; i < 40; ++i)
    for (int j = i + 1; j < 40; ++j) EXPECT_LT(dot(f[(size_t)i].data(), f[(size_t)j].data(), ex.dim()), 0.9f);
  std::vector<float> g((size_t)ex.dim());
  for (int k = 0; k < (int)synth::Perturb::kCount; ++k)
    for (int i = 0; i < 10; ++i) {
      ex.extract(synth::perturb(synth::make_image(3, (uint64_t)i, 64, 64), (synth::Perturb)k, 5, (uint64_t)i), g.data());
      EXPECT_GE(dot(f[(size_t)i].data(), g.data(), ex.dim()), 0.9f) << synth::perturb_name((synth::Perturb)k) << " " << i;
    }
  // A flat image is not noise: a re-encoded flat image stays a duplicate of itself.
  Image flat;
  flat.width = flat.height = 32;
  flat.rgb.assign(32 * 32 * 3, 200);
  ex.extract(flat, f[0].data());
  ex.extract(decode_image(synth::encode_jpeg(flat, 50), "flat"), g.data());
  EXPECT_GE(dot(f[0].data(), g.data(), ex.dim()), 0.99f);
  // f16 round trip and the extractor registry.
  const std::string packed = pack_f16(f[1].data(), ex.dim());
  EXPECT_EQ(packed.size(), (size_t)ex.dim() * 2);
  EXPECT_TRUE(unpack_f16(packed.data(), packed.size(), ex.dim(), g.data()));
  for (int k = 0; k < ex.dim(); ++k) EXPECT_NEAR(g[(size_t)k], f[1][(size_t)k], 1e-3);
  EXPECT_FALSE(unpack_f16(packed.data(), packed.size() - 2, ex.dim(), g.data()));
  EXPECT_EQ(make_extractor("dct-colour")->id(), "dct-colour-v3");
  EXPECT_NE(error_of([] { make_extractor("clip"); }).find("dct-colour"), std::string::npos);
}

TEST(ManifestParts, DbscanOnAGraph) {
  // 0-1-2 chain, 3-4 pair, 5 alone, 6-7-8 star around 7.
  const std::vector<Pair> e = {{0, 1}, {1, 2}, {3, 4}, {6, 7}, {7, 8}};
  std::vector<int> l = dbscan(9, e, 2);
  EXPECT_EQ(l[0], l[1]);
  EXPECT_EQ(l[1], l[2]);
  EXPECT_EQ(l[3], l[4]);
  EXPECT_NE(l[0], l[3]);
  EXPECT_EQ(l[5], -1);
  EXPECT_EQ(l[6], l[8]);
  // min_samples 3: only 1 and 7 are core; 0, 2 are border of 1's cluster; 3, 4 and 5 are noise.
  l = dbscan(9, e, 3);
  EXPECT_GE(l[1], 0);
  EXPECT_EQ(l[0], l[1]);
  EXPECT_EQ(l[2], l[1]);
  EXPECT_EQ(l[3], -1);
  EXPECT_EQ(l[4], -1);
  EXPECT_EQ(l[5], -1);
  EXPECT_EQ(l[6], l[7]);
  EXPECT_NE(l[6], l[1]);
}

TEST(ManifestParts, LshFindsTheExactPairsAndNothingElse) {
  const Planted& p = planted();
  std::vector<uint32_t> all((size_t)p.set.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = (uint32_t)i;
  const std::vector<Pair> exact = neighbour_pairs_exact(p.set, all, 0.9f);
  NeighbourStats st;
  const std::vector<Pair> lsh = neighbour_pairs_lsh(p.set, all, 0.9f, LshParams{16, 0, 3}, &st);
  ASSERT_GE(exact.size(), (size_t)p.dups);
  std::set<Pair> ex(exact.begin(), exact.end());
  for (const auto& pr : lsh) EXPECT_TRUE(ex.count(pr)) << pr.first << " " << pr.second;  // verified: no false pairs
  EXPECT_GE((double)lsh.size(), 0.99 * (double)exact.size());
  // Fewer candidates than all pairs even at this size (the saving grows with n: docs/data.md).
  EXPECT_LT(st.candidates, (int64_t)all.size() * ((int64_t)all.size() - 1) / 2);
  // Exact pairs agree with a direct computation.
  for (const auto& [a, b] : exact) EXPECT_GE(dot_f16(p.set.row(a), p.set.row(b), p.set.dim), 0.9f);
}

TEST(ManifestParts, IterativeDedupFindsPlantedDuplicatesAndNeverMergesDistinctImages) {
  const Planted& p = planted();
  DedupResult graph_result;
  for (const std::string split : {"graph", "random"}) {
    DedupOptions o;
    o.split = split;
    o.index = "exact";
    o.subset_size = split == "graph" ? 1000000 : 400;
    const DedupResult r = iterative_dedup(p.set, p.rank, o);
    auto rep = [&](int64_t i) { return r.duplicate_of[(size_t)i] >= 0 ? r.duplicate_of[(size_t)i] : i; };
    int64_t found = 0, wrong = 0;
    for (int64_t i = 0; i < p.set.size(); ++i) {
      if (p.family[(size_t)i] != i) found += rep(i) == rep(p.family[(size_t)i]);
      if (r.duplicate_of[(size_t)i] >= 0) {
        wrong += p.family[(size_t)i] != p.family[(size_t)rep(i)];
        EXPECT_LT(r.duplicate_of[(size_t)rep(i)], 0);  // representatives are kept
      }
    }
    std::printf("dedup (%s split): %lld planted near-duplicates, %lld found (%.1f%%), %lld distinct images merged\n",
                split.c_str(), (long long)p.dups, (long long)found, 100.0 * found / p.dups, (long long)wrong);
    EXPECT_EQ(wrong, 0) << split;  // distinct images never merged
    if (split == "graph") EXPECT_GE((double)found, 0.99 * (double)p.dups);  // ≥ 99% found
    else EXPECT_GT(found, 0);
    EXPECT_GE(r.rounds.size(), 2u);
    EXPECT_EQ(r.rounds.back().removed, 0);  // stopped because the kept set stopped changing
    // One member per family is kept.
    std::set<int64_t> kept_families;
    int64_t kept = 0;
    for (int64_t i = 0; i < p.set.size(); ++i)
      if (r.duplicate_of[(size_t)i] < 0) ++kept, kept_families.insert(p.family[(size_t)i]);
    if (split == "graph") {
      EXPECT_LE(kept, (int64_t)kept_families.size() + p.dups / 100);
    }
    if (split == "graph") graph_result = r;
  }
  // Same seed → same result; the kept member is the lowest rank of its cluster.
  DedupOptions o;
  o.subset_size = 1000000;
  const DedupResult& a = graph_result;
  EXPECT_EQ(iterative_dedup(p.set, p.rank, o).duplicate_of, a.duplicate_of);
  for (int64_t i = 0; i < p.set.size(); ++i)
    if (a.duplicate_of[(size_t)i] >= 0) {
      EXPECT_LT(p.rank[(size_t)a.duplicate_of[(size_t)i]], p.rank[(size_t)i]);
    }
  EXPECT_NE(error_of([&] { DedupOptions bad; bad.eps = 0; iterative_dedup(p.set, p.rank, bad); }).find("--eps"), std::string::npos);
}

TEST(ManifestParts, Buckets) {
  const auto list = stage2_buckets(512 * 512, 1.3, 64);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0], std::make_pair(448, 576));
  EXPECT_EQ(list[1], std::make_pair(512, 512));
  EXPECT_EQ(list[2], std::make_pair(576, 448));
  BucketOptions o;
  // Landscape photo: 576×448, scaled to cover, centred horizontally.
  auto b = assign_bucket(4000, 3000, "h", o);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->width, 576);
  EXPECT_EQ(b->height, 448);
  EXPECT_EQ(b->crop_h, 3000);
  EXPECT_NEAR(b->crop_w, 3857, 1);
  EXPECT_NEAR(b->crop_x, (4000 - b->crop_w) / 2, 1);
  // Tall portrait (aspect 1.5): 448×576, a quarter of the excess cut at the top.
  b = assign_bucket(2000, 3000, "h", o);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->width, 448);
  EXPECT_EQ(b->height, 576);
  EXPECT_EQ(b->crop_w, 2000);
  EXPECT_NEAR(b->crop_y, (3000 - b->crop_h) / 4, 1);
  EXPECT_EQ(b->str(), "448x576 crop 0," + std::to_string(b->crop_y) + " 2000x" + std::to_string(b->crop_h));
  // Small images are never upscaled: the largest bucket they cover.
  b = assign_bucket(300, 300, "h", o);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->width, 256);
  EXPECT_EQ(b->height, 256);
  b = assign_bucket(500, 300, "h", o);
  ASSERT_TRUE(b);
  EXPECT_LE(b->width, 500);
  EXPECT_LE(b->height, 300);
  EXPECT_EQ(b->width % 64 + b->height % 64, 0);
  EXPECT_LE((double)std::max(b->width, b->height) / std::min(b->width, b->height), 1.3);
  std::string why;
  EXPECT_FALSE(assign_bucket(50, 40, "h", o, &why));
  EXPECT_NE(why.find("too small"), std::string::npos);
  o.upscale = true;
  b = assign_bucket(300, 300, "h", o);
  EXPECT_EQ(b->width, 512);
  // Stage 1: 256 squares, a seeded random window along the longer side.
  BucketOptions s1;
  s1.stage = 1;
  b = assign_bucket(1000, 500, "abc", s1);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->width, 256);
  EXPECT_EQ(b->crop_w, 500);
  EXPECT_EQ(b->crop_h, 500);
  EXPECT_EQ(b->crop_y, 0);
  EXPECT_EQ(assign_bucket(1000, 500, "abc", s1)->crop_x, b->crop_x);  // deterministic
  std::set<int> xs;
  for (int k = 0; k < 20; ++k) xs.insert(assign_bucket(1000, 500, "img" + std::to_string(k), s1)->crop_x);
  EXPECT_GT(xs.size(), 10u);  // and random across images
  EXPECT_EQ(assign_bucket(100, 120, "x", s1)->width, 64);
  EXPECT_FALSE(assign_bucket(60, 60, "x", s1));
  const auto [fx, fy] = crop_fractions(1000, 500, *b);
  EXPECT_NEAR(fx * 500, b->crop_x, 1);
  EXPECT_EQ(fy, 0.5f);
}

TEST(ManifestParts, QualityThresholds) {
  EXPECT_EQ(quality_tag(7.5), "excellent score");
  EXPECT_EQ(quality_tag(6.0), "excellent score");
  EXPECT_EQ(quality_tag(5.99), "good score");
  EXPECT_EQ(quality_tag(5.2), "good score");
  EXPECT_EQ(quality_tag(5.19), "average score");
  EXPECT_EQ(quality_tag(4.0), "average score");
  EXPECT_EQ(quality_tag(3.99), "");
  const QualityThresholds t = QualityThresholds::parse("7,6,5");
  EXPECT_EQ(quality_tag(5.5, t), "average score");
  EXPECT_NE(error_of([] { QualityThresholds::parse("4,5,6"); }).find("decreasing"), std::string::npos);
  EXPECT_NE(error_of([] { make_scorer("laion"); }).find("--scores"), std::string::npos);
}
