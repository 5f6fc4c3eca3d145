// oboro data dedup: iterative DBSCAN over the manifest's active images (see dedup.h).
#include "core/dtype.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/dedup.h"
#include "data/features.h"
#include "data/manifest.h"
#include "data/progress.h"
#include "io/image.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <map>

namespace oboro {

ManifestDedupReport dedup_manifest(Manifest& m, const DedupOptions& opt, const std::string& extractor_spec) {
  const auto t0 = std::chrono::steady_clock::now();
  ManifestDedupReport rep;
  const std::unique_ptr<FeatureExtractor> ex = make_extractor(extractor_spec);
  const std::string ex_id = ex->id();
  const int dim = ex->dim();
  sql::Db& db = m.db();

  EmbeddingSet set;
  set.dim = dim;
  std::vector<int64_t> ids;
  std::vector<uint64_t> rank;
  std::vector<std::pair<size_t, std::string>> missing;  // (point, path) without an embedding
  {
    sql::Stmt s(db, "SELECT i.id, i.sha256, f.vec, i.path FROM images i LEFT JOIN features f ON f.image_id=i.id AND "
                    "f.extractor=? WHERE i.status='active' ORDER BY i.id");
    s.bind(1, ex_id);
    std::vector<float> v((size_t)dim);
    while (s.step()) {
      size_t n = 0;
      const void* p = s.is_null(2) ? nullptr : s.blob_ptr(2, &n);
      if (p && unpack_f16(p, n, dim, v.data())) {
        set.push_back(v.data());
      } else {
        std::fill(v.begin(), v.end(), 0.f);
        set.push_back(v.data());
        missing.push_back({ids.size(), s.text(3)});
      }
      ids.push_back(s.i64(0));
      rank.push_back(dedup_rank(opt.seed, s.text(1)));
    }
  }
  rep.images = (int64_t)ids.size();
  // Embeddings for images ingested with another extractor (or none): decode and store them.
  std::vector<char> usable(ids.size(), 1);
  if (!missing.empty()) {
    Progress prog("dedup: embedding with " + ex_id, (int64_t)missing.size(), opt.progress);
    sql::Stmt ins(db, "INSERT INTO features(image_id, extractor, vec) VALUES (?,?,?) ON CONFLICT(image_id, extractor) DO UPDATE SET vec=excluded.vec");
    for (size_t b = 0; b < missing.size(); b += 256) {
      const size_t e = std::min(missing.size(), b + 256);
      std::vector<std::string> packed(e - b);
      parallel_for((int64_t)(e - b), [&](int64_t lo, int64_t hi) {
        std::vector<float> v((size_t)dim);
        for (int64_t i = lo; i < hi; ++i) {
          try {
            ex->extract(load_image(missing[b + (size_t)i].second), v.data());
            packed[(size_t)i] = pack_f16(v.data(), dim);
          } catch (const std::exception& err) {
            std::fprintf(stderr, "oboro: warning: %s (left out of dedup; re-run ingest to record it)\n", err.what());
          }
        }
      });
      sql::Transaction tx(db);
      for (size_t i = b; i < e; ++i) {
        const size_t pt = missing[i].first;
        const std::string& pk = packed[i - b];
        if (pk.empty()) {
          usable[pt] = 0;
          ++rep.unreadable;
          continue;
        }
        std::vector<float> v((size_t)dim);
        unpack_f16(pk.data(), pk.size(), dim, v.data());
        for (int k = 0; k < dim; ++k) set.data[pt * dim + (size_t)k] = f32_to_f16(v[(size_t)k]);
        ins.bind(1, ids[pt]).bind(2, ex_id).bind_blob(3, pk.data(), pk.size()).run();
        ++rep.embedded;
      }
      tx.commit();
      prog.add((int64_t)(e - b));
    }
  }
  if (rep.unreadable) {  // drop unusable points
    EmbeddingSet s2;
    s2.dim = dim;
    std::vector<int64_t> ids2;
    std::vector<uint64_t> rank2;
    for (size_t i = 0; i < ids.size(); ++i)
      if (usable[i]) {
        s2.data.insert(s2.data.end(), set.row((int64_t)i), set.row((int64_t)i) + dim);
        ids2.push_back(ids[i]);
        rank2.push_back(rank[i]);
      }
    set = std::move(s2);
    ids.swap(ids2);
    rank.swap(rank2);
  }

  sql::Stmt sha_of(db, "SELECT sha256 FROM images WHERE id=?");
  auto sha = [&](int64_t id) {
    sha_of.bind(1, id);
    std::string s = sha_of.step() ? sha_of.text(0) : "";
    sha_of.reset();
    return s;
  };
  sql::Stmt mark(db, "UPDATE images SET status='removed', reason=?, reason_kind='duplicate', updated_at=? WHERE id=?");
  std::map<int64_t, int64_t> recorded;  // point → keeper recorded in its reason
  DedupOptions o = opt;
  const DedupResult res = iterative_dedup(set, rank, o, [&](const DedupRound&, const std::vector<std::pair<int64_t, int64_t>>& removed) {
    sql::Transaction tx(db);
    const int64_t t = now_unix();
    for (const auto& [pt, keeper] : removed) {
      mark.bind(1, "duplicate of " + sha(ids[(size_t)keeper])).bind(2, t).bind(3, ids[(size_t)pt]).run();
      recorded[pt] = keeper;
    }
    tx.commit();
  });
  // Reasons point at the image finally kept (a keeper of round 1 may be removed in round 2).
  {
    sql::Transaction tx(db);
    const int64_t t = now_unix();
    for (const auto& [pt, keeper] : recorded) {
      const int64_t fin = res.duplicate_of[(size_t)pt];
      if (fin >= 0 && fin != keeper) mark.bind(1, "duplicate of " + sha(ids[(size_t)fin])).bind(2, t).bind(3, ids[(size_t)pt]).run();
    }
    nlohmann::json j = {{"eps", opt.eps},           {"min_samples", opt.min_samples}, {"subset_size", opt.subset_size},
                        {"split", opt.split},       {"index", opt.index},             {"seed", opt.seed},
                        {"extractor", ex_id},       {"images", rep.images},           {"removed", res.removed()},
                        {"rounds", res.rounds.size()}, {"at", now_unix()}};
    m.set_meta("last_dedup", j.dump());
    tx.commit();
  }
  rep.removed = res.removed();
  rep.rounds = res.rounds;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace oboro
