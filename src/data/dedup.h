// Near-duplicate removal as the report describes it: an embedding for every image, the set split
// into subsets, DBSCAN with cosine distance in every subset, one random member kept per cluster plus
// every noise point, the kept sets merged, and the whole repeated until the kept set stops changing.
//
// Neighbour search (the ε-range queries DBSCAN needs) has two engines:
//   exact — blocked all-pairs dot products with SGEMM (OpenBLAS) tiles: O(m²·d) per subset;
//   lsh   — random-hyperplane (SimHash) tables with 1-bit multi-probe, every candidate verified with
//           an exact dot product, so it never reports a false pair; recall is measured (docs/data.md).
// Subsets come from one of two splits:
//   graph  — (default) the ε-pairs of the whole active set are found with LSH first, and subsets
//            are packed from whole connected components, so no duplicate pair is ever cut apart by the
//            split; DBSCAN then runs per subset on the subset's pairs. Memory per subset is bounded
//            by its size; a component larger than the subset size becomes its own subset.
//   random — the report's literal split: a seeded random partition into subsets of `subset_size`,
//            re-drawn every round; pairs split apart meet again only by chance in a later round.
// The kept member of a cluster is the one with the smallest seeded random rank (a pure function of
// the seed and the image's content hash), so the choice does not depend on order or thread count,
// and a removed image always points at a lower-ranked kept one (no cycles across subsets/rounds).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace oboro {

// Embeddings stored as IEEE half floats, row-major (n × dim), L2-normalised.
struct EmbeddingSet {
  int dim = 0;
  std::vector<uint16_t> data;
  int64_t size() const { return dim ? (int64_t)(data.size() / dim) : 0; }
  const uint16_t* row(int64_t i) const { return data.data() + i * dim; }
  void push_back(const float* v);
};

float dot_f16(const uint16_t* a, const uint16_t* b, int n);

using Pair = std::pair<uint32_t, uint32_t>;  // (i, j), i < j, indices into the EmbeddingSet

struct NeighbourStats {
  int64_t candidates = 0;  // dot products evaluated
  int64_t pairs = 0;       // pairs with similarity ≥ min_sim
  double seconds = 0;
};

// All pairs among `points` (indices into `set`) with dot ≥ min_sim, sorted, unique.
std::vector<Pair> neighbour_pairs_exact(const EmbeddingSet& set, const std::vector<uint32_t>& points, float min_sim,
                                        NeighbourStats* stats = nullptr);
struct LshParams {
  int tables = 16;
  int bits = 0;  // 0: auto from the number of points (about 4 points per bucket), 8..30
  uint64_t seed = 0;
};
int lsh_auto_bits(int64_t n);
std::vector<Pair> neighbour_pairs_lsh(const EmbeddingSet& set, const std::vector<uint32_t>& points, float min_sim,
                                      const LshParams& p, NeighbourStats* stats = nullptr);

// DBSCAN on a precomputed ε-neighbour graph over n points (edges as local indices): label per
// point, -1 = noise. A point is core when it has ≥ min_samples − 1 neighbours (itself counts).
std::vector<int> dbscan(int64_t n, const std::vector<Pair>& edges, int min_samples);

struct DedupOptions {
  float eps = 0.1f;                 // cosine distance; neighbours have similarity ≥ 1 − eps
  int min_samples = 2;
  int64_t subset_size = 1000000;
  std::string split = "graph";      // graph | random
  std::string index = "lsh";        // lsh | exact (for the random split; graph always uses lsh)
  int lsh_tables = 16;
  int lsh_bits = 0;
  uint64_t seed = 0;
  int max_rounds = 100;
  bool progress = false;            // progress lines on stderr
};

struct DedupRound {
  int round = 0;
  int64_t input = 0, kept = 0, removed = 0, clusters = 0, subsets = 0, pairs = 0, candidates = 0;
  int64_t largest_subset = 0;
  double seconds = 0;
};

struct DedupResult {
  std::vector<int64_t> duplicate_of;  // per point: -1 kept, else the index of the kept representative
  std::vector<DedupRound> rounds;
  int64_t removed() const;
};

// rank[i]: the seeded random rank of point i (smaller = kept). on_round (optional) is called after
// each round with that round's removals as (point, representative at that time) pairs, so callers
// can commit progress.
DedupResult iterative_dedup(const EmbeddingSet& set, const std::vector<uint64_t>& rank, const DedupOptions& opt,
                            const std::function<void(const DedupRound&, const std::vector<std::pair<int64_t, int64_t>>&)>&
                                on_round = nullptr);

// Seeded rank from a content hash (hex); stable across runs and machines.
uint64_t dedup_rank(uint64_t seed, const std::string& content_hash);

// The manifest step: embeddings of every active image (computed and stored for those that lack one
// for `extractor`), iterative_dedup, and each round's removals committed as status removed with
// reason "duplicate of <kept image's sha256>" — so an interrupted run resumes from the kept set.
class Manifest;
struct ManifestDedupReport {
  int64_t images = 0, embedded = 0, unreadable = 0, removed = 0;
  std::vector<DedupRound> rounds;
  double seconds = 0;
};
ManifestDedupReport dedup_manifest(Manifest& m, const DedupOptions& opt, const std::string& extractor = "dct-colour");

}  // namespace oboro
