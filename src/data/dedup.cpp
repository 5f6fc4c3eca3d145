#include "data/dedup.h"

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <numeric>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define OBORO_DEDUP_SIMD 1
#endif

namespace oboro {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void to_f32(const uint16_t* h, int n, float* out) {
  int i = 0;
#ifdef OBORO_DEDUP_SIMD
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + i))));
#endif
  for (; i < n; ++i) out[i] = f16_to_f32(h[i]);
}

// Gathers rows `points` into a dense f32 matrix (m × dim).
std::vector<float> gather_f32(const EmbeddingSet& set, const std::vector<uint32_t>& points) {
  std::vector<float> m(points.size() * (size_t)set.dim);
  parallel_for((int64_t)points.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) to_f32(set.row(points[(size_t)i]), set.dim, &m[(size_t)i * set.dim]);
  }, 1024);
  return m;
}

void sort_unique(std::vector<Pair>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

struct UnionFind {
  std::vector<uint32_t> p;
  explicit UnionFind(size_t n) : p(n) { std::iota(p.begin(), p.end(), 0u); }
  uint32_t find(uint32_t x) {
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
  }
  void unite(uint32_t a, uint32_t b) {
    a = find(a), b = find(b);
    if (a != b) p[std::max(a, b)] = std::min(a, b);
  }
};

}  // namespace

void EmbeddingSet::push_back(const float* v) {
  for (int i = 0; i < dim; ++i) data.push_back(f32_to_f16(v[i]));
}

float dot_f16(const uint16_t* a, const uint16_t* b, int n) {
  int i = 0;
  float s = 0;
#ifdef OBORO_DEDUP_SIMD
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i))),
                           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(b + i))), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i + 8))),
                           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(b + i + 8))), acc1);
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i))),
                           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(b + i))), acc0);
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
  s = _mm_cvtss_f32(q);
#endif
  for (; i < n; ++i) s += f16_to_f32(a[i]) * f16_to_f32(b[i]);
  return s;
}

uint64_t dedup_rank(uint64_t seed, const std::string& content_hash) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then mixed with the seed
  for (unsigned char c : content_hash) h = (h ^ c) * 0x100000001b3ull;
  return mix64(h ^ mix64(seed));
}

// ---- exact: SGEMM tiles over the upper triangle ----

std::vector<Pair> neighbour_pairs_exact(const EmbeddingSet& set, const std::vector<uint32_t>& points, float min_sim,
                                        NeighbourStats* stats) {
  const double t0 = now_s();
  const int64_t m = (int64_t)points.size();
  const int d = set.dim;
  std::vector<Pair> out;
  if (m >= 2) {
    const std::vector<float> X = gather_f32(set, points);
    constexpr int64_t R = 256, C = 2048;
    std::vector<std::pair<int64_t, int64_t>> tiles;  // (row block start, col block start), col ≥ row block
    for (int64_t r = 0; r < m; r += R)
      for (int64_t c = r; c < m; c += C) tiles.push_back({r, c});
    std::mutex mu;
    parallel_for((int64_t)tiles.size(), [&](int64_t b, int64_t e) {
      std::vector<float> S((size_t)R * C);
      std::vector<Pair> local;
      for (int64_t t = b; t < e; ++t) {
        const auto [r0, c0] = tiles[(size_t)t];
        const int64_t rn = std::min(R, m - r0), cn = std::min(C, m - c0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, (int)cn, d, 1.f, &X[(size_t)r0 * d], d,
                    &X[(size_t)c0 * d], d, 0.f, S.data(), (int)cn);
        for (int64_t i = 0; i < rn; ++i) {
          const float* row = &S[(size_t)i * cn];
          const int64_t gi = r0 + i;
          for (int64_t j = std::max<int64_t>(0, gi + 1 - c0); j < cn; ++j)
            if (row[j] >= min_sim) {
              uint32_t a = points[(size_t)gi], bb = points[(size_t)(c0 + j)];
              local.push_back({std::min(a, bb), std::max(a, bb)});
            }
        }
      }
      std::lock_guard<std::mutex> lk(mu);
      out.insert(out.end(), local.begin(), local.end());
    });
    sort_unique(out);
  }
  if (stats) {
    stats->candidates += m * (m - 1) / 2;
    stats->pairs += (int64_t)out.size();
    stats->seconds += now_s() - t0;
  }
  return out;
}

// ---- LSH: random hyperplanes, one table at a time, 1-bit multi-probe, exact verification ----

int lsh_auto_bits(int64_t n) {
  int b = 0;
  while (b < 30 && ((int64_t)1 << b) * 4 < n) ++b;
  return std::clamp(b, 8, 30);
}

std::vector<Pair> neighbour_pairs_lsh(const EmbeddingSet& set, const std::vector<uint32_t>& points, float min_sim,
                                      const LshParams& p, NeighbourStats* stats) {
  const double t0 = now_s();
  const int64_t m = (int64_t)points.size();
  const int d = set.dim;
  const int k = p.bits > 0 ? std::clamp(p.bits, 1, 30) : lsh_auto_bits(m);
  std::vector<Pair> out;
  int64_t candidates = 0;
  if (m >= 2) {
    std::vector<uint64_t> keyed((size_t)m);  // (code << 32) | local index, sorted per table
    std::vector<float> planes((size_t)k * d);
    std::mutex mu;
    for (int t = 0; t < p.tables; ++t) {
      for (size_t i = 0; i < planes.size(); ++i) planes[i] = normal_at(p.seed, 0x15000000ull + (uint64_t)t, i);
      // Codes: sign of the projection on each hyperplane, in blocks of rows through SGEMM.
      constexpr int64_t B = 1024;
      parallel_for((m + B - 1) / B, [&](int64_t b, int64_t e) {
        std::vector<float> X((size_t)B * d), P((size_t)B * k);
        for (int64_t blk = b; blk < e; ++blk) {
          const int64_t r0 = blk * B, rn = std::min(B, m - r0);
          for (int64_t i = 0; i < rn; ++i) to_f32(set.row(points[(size_t)(r0 + i)]), d, &X[(size_t)i * d]);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, k, d, 1.f, X.data(), d, planes.data(), d, 0.f,
                      P.data(), k);
          for (int64_t i = 0; i < rn; ++i) {
            uint64_t code = 0;
            for (int j = 0; j < k; ++j) code |= (uint64_t)(P[(size_t)i * k + j] > 0.f) << j;
            keyed[(size_t)(r0 + i)] = (code << 32) | (uint64_t)(r0 + i);
          }
        }
      });
      std::sort(keyed.begin(), keyed.end());
      // Buckets: [start[b], start[b+1]) share code codes[b].
      std::vector<uint64_t> codes;
      std::vector<int64_t> start;
      for (int64_t i = 0; i < m; ++i)
        if (i == 0 || (keyed[(size_t)i] >> 32) != (keyed[(size_t)i - 1] >> 32)) {
          codes.push_back(keyed[(size_t)i] >> 32);
          start.push_back(i);
        }
      start.push_back(m);
      const int64_t nb = (int64_t)codes.size();
      parallel_for(nb, [&](int64_t b, int64_t e) {
        std::vector<Pair> local;
        int64_t cand = 0;
        auto check = [&](int64_t i, int64_t j) {
          const uint32_t a = points[(size_t)(keyed[(size_t)i] & 0xffffffffu)];
          const uint32_t c = points[(size_t)(keyed[(size_t)j] & 0xffffffffu)];
          ++cand;
          if (dot_f16(set.row(a), set.row(c), d) >= min_sim) local.push_back({std::min(a, c), std::max(a, c)});
        };
        for (int64_t bk = b; bk < e; ++bk) {
          const int64_t s0 = start[(size_t)bk], s1 = start[(size_t)bk + 1];
          for (int64_t i = s0; i < s1; ++i)
            for (int64_t j = i + 1; j < s1; ++j) check(i, j);
          for (int bit = 0; bit < k; ++bit) {
            const uint64_t other = codes[(size_t)bk] ^ (1ull << bit);
            if (other < codes[(size_t)bk]) continue;  // each neighbouring bucket pair once
            auto it = std::lower_bound(codes.begin() + bk, codes.end(), other);
            if (it == codes.end() || *it != other) continue;
            const int64_t ob = it - codes.begin();
            for (int64_t i = s0; i < s1; ++i)
              for (int64_t j = start[(size_t)ob]; j < start[(size_t)ob + 1]; ++j) check(i, j);
          }
        }
        std::lock_guard<std::mutex> lk(mu);
        out.insert(out.end(), local.begin(), local.end());
        candidates += cand;
      }, 64);
      sort_unique(out);  // keeps memory at the number of distinct pairs
    }
  }
  if (stats) {
    stats->candidates += candidates;
    stats->pairs += (int64_t)out.size();
    stats->seconds += now_s() - t0;
  }
  return out;
}

// ---- DBSCAN on a neighbour graph ----

std::vector<int> dbscan(int64_t n, const std::vector<Pair>& edges, int min_samples) {
  std::vector<int64_t> off((size_t)n + 1, 0);
  for (const auto& [a, b] : edges) {
    OBORO_ASSERT((int64_t)a < n && (int64_t)b < n);
    ++off[a + 1];
    ++off[b + 1];
  }
  for (int64_t i = 0; i < n; ++i) off[(size_t)i + 1] += off[(size_t)i];
  std::vector<uint32_t> adj((size_t)off[(size_t)n]);
  {
    std::vector<int64_t> pos(off.begin(), off.end() - 1);
    for (const auto& [a, b] : edges) {
      adj[(size_t)pos[a]++] = b;
      adj[(size_t)pos[b]++] = a;
    }
  }
  auto core = [&](int64_t i) { return off[(size_t)i + 1] - off[(size_t)i] + 1 >= min_samples; };
  std::vector<int> label((size_t)n, -1);
  int next = 0;
  std::vector<uint32_t> queue;
  for (int64_t s = 0; s < n; ++s) {
    if (label[(size_t)s] != -1 || !core(s)) continue;
    const int c = next++;
    label[(size_t)s] = c;
    queue.assign(1, (uint32_t)s);
    while (!queue.empty()) {
      const uint32_t q = queue.back();
      queue.pop_back();
      if (!core(q)) continue;  // border points join but do not expand
      for (int64_t e = off[q]; e < off[q + 1]; ++e) {
        const uint32_t r = adj[(size_t)e];
        if (label[r] == -1) {
          label[r] = c;
          queue.push_back(r);
        }
      }
    }
  }
  return label;
}

// ---- the iterative procedure ----

int64_t DedupResult::removed() const {
  return std::count_if(duplicate_of.begin(), duplicate_of.end(), [](int64_t v) { return v >= 0; });
}

DedupResult iterative_dedup(const EmbeddingSet& set, const std::vector<uint64_t>& rank, const DedupOptions& opt,
                            const std::function<void(const DedupRound&, const std::vector<std::pair<int64_t, int64_t>>&)>&
                                on_round) {
  const int64_t n = set.size();
  if ((int64_t)rank.size() != n) fail("dedup: ", rank.size(), " ranks for ", n, " embeddings");
  if (n > (int64_t)UINT32_MAX) fail("dedup: ", n, " images exceed one run's limit of 2^32; split the manifest");
  if (!(opt.eps > 0 && opt.eps < 2)) fail("dedup: --eps ", opt.eps, " must be in (0, 2) (cosine distance)");
  if (opt.min_samples < 2) fail("dedup: --min-samples must be at least 2");
  if (opt.subset_size < 2) fail("dedup: --subset-size must be at least 2");
  if (opt.split != "graph" && opt.split != "random") fail("dedup: --split must be graph or random");
  if (opt.index != "lsh" && opt.index != "exact") fail("dedup: --index must be lsh or exact");
  const float min_sim = 1.f - opt.eps;
  DedupResult res;
  res.duplicate_of.assign((size_t)n, -1);
  std::vector<uint32_t> active((size_t)n);
  std::iota(active.begin(), active.end(), 0u);
  auto better = [&](uint32_t a, uint32_t b) { return rank[a] != rank[b] ? rank[a] < rank[b] : a < b; };

  for (int round = 1; round <= opt.max_rounds; ++round) {
    const double t0 = now_s();
    DedupRound st;
    st.round = round;
    st.input = (int64_t)active.size();
    const uint64_t round_seed = mix64(opt.seed ^ mix64(0xded0000ull + (uint64_t)round));
    // Subsets as lists of points plus their ε-pairs.
    std::vector<std::vector<uint32_t>> subsets;
    std::vector<std::vector<Pair>> subset_pairs;
    NeighbourStats ns;
    if (opt.split == "graph") {
      LshParams lp{opt.lsh_tables, opt.lsh_bits, round_seed};
      std::vector<Pair> pairs = neighbour_pairs_lsh(set, active, min_sim, lp, &ns);
      // Components over the global indices (only points with a pair matter; the others are noise).
      std::vector<uint32_t> touched;
      for (const auto& [a, b] : pairs) touched.push_back(a), touched.push_back(b);
      std::sort(touched.begin(), touched.end());
      touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
      auto local = [&](uint32_t g) { return (uint32_t)(std::lower_bound(touched.begin(), touched.end(), g) - touched.begin()); };
      UnionFind uf(touched.size());
      for (const auto& [a, b] : pairs) uf.unite(local(a), local(b));
      // Component of each touched point (root = smallest local index, so order is deterministic).
      std::vector<uint32_t> comp_of(touched.size());
      std::vector<std::vector<uint32_t>> comps;
      std::vector<int64_t> comp_index(touched.size(), -1);
      for (uint32_t i = 0; i < touched.size(); ++i) {
        const uint32_t r = uf.find(i);
        if (comp_index[r] < 0) {
          comp_index[r] = (int64_t)comps.size();
          comps.emplace_back();
        }
        comp_of[i] = (uint32_t)comp_index[r];
        comps[(size_t)comp_index[r]].push_back(touched[i]);
      }
      // Pack whole components into subsets of at most subset_size points.
      std::vector<int64_t> subset_of_comp(comps.size());
      for (size_t c = 0; c < comps.size(); ++c) {
        if (subsets.empty() || (int64_t)(subsets.back().size() + comps[c].size()) > opt.subset_size) {
          subsets.emplace_back();
          subset_pairs.emplace_back();
        }
        subset_of_comp[c] = (int64_t)subsets.size() - 1;
        subsets.back().insert(subsets.back().end(), comps[c].begin(), comps[c].end());
      }
      for (const auto& pr : pairs) subset_pairs[(size_t)subset_of_comp[comp_of[local(pr.first)]]].push_back(pr);
      st.subsets = (int64_t)subsets.size() + (touched.size() < active.size() ? 1 : 0);  // + the noise-only rest
    } else {
      std::vector<std::pair<uint64_t, uint32_t>> order;
      order.reserve(active.size());
      for (uint32_t g : active) order.push_back({mix64(round_seed ^ rank[g]), g});
      std::sort(order.begin(), order.end());
      for (size_t i = 0; i < order.size(); i += (size_t)opt.subset_size) {
        subsets.emplace_back();
        for (size_t j = i; j < std::min(order.size(), i + (size_t)opt.subset_size); ++j) subsets.back().push_back(order[j].second);
        std::sort(subsets.back().begin(), subsets.back().end());
        if (opt.index == "exact")
          subset_pairs.push_back(neighbour_pairs_exact(set, subsets.back(), min_sim, &ns));
        else
          subset_pairs.push_back(neighbour_pairs_lsh(set, subsets.back(), min_sim,
                                                     LshParams{opt.lsh_tables, opt.lsh_bits, round_seed + i}, &ns));
      }
      st.subsets = (int64_t)subsets.size();
    }
    // DBSCAN per subset; keep the lowest-ranked member of each cluster, and every noise point.
    std::vector<std::pair<int64_t, int64_t>> removed;
    for (size_t s = 0; s < subsets.size(); ++s) {
      std::vector<uint32_t>& pts = subsets[s];
      std::sort(pts.begin(), pts.end());
      st.largest_subset = std::max<int64_t>(st.largest_subset, (int64_t)pts.size());
      std::vector<Pair> edges;
      edges.reserve(subset_pairs[s].size());
      auto loc = [&](uint32_t g) { return (uint32_t)(std::lower_bound(pts.begin(), pts.end(), g) - pts.begin()); };
      for (const auto& [a, b] : subset_pairs[s]) edges.push_back({loc(a), loc(b)});
      std::vector<Pair>().swap(subset_pairs[s]);
      const std::vector<int> label = dbscan((int64_t)pts.size(), edges, opt.min_samples);
      const int nc = label.empty() ? 0 : *std::max_element(label.begin(), label.end()) + 1;
      st.clusters += nc;
      std::vector<int64_t> keeper((size_t)nc, -1);
      for (size_t i = 0; i < pts.size(); ++i)
        if (label[i] >= 0 && (keeper[(size_t)label[i]] < 0 || better(pts[i], (uint32_t)keeper[(size_t)label[i]])))
          keeper[(size_t)label[i]] = pts[i];
      for (size_t i = 0; i < pts.size(); ++i)
        if (label[i] >= 0 && keeper[(size_t)label[i]] != (int64_t)pts[i]) removed.push_back({pts[i], keeper[(size_t)label[i]]});
    }
    for (const auto& [i, k] : removed) res.duplicate_of[(size_t)i] = k;
    std::vector<uint32_t> next;
    next.reserve(active.size() - removed.size());
    for (uint32_t g : active)
      if (res.duplicate_of[g] < 0) next.push_back(g);
    active.swap(next);
    st.removed = (int64_t)removed.size();
    st.kept = (int64_t)active.size();
    st.pairs = ns.pairs;
    st.candidates = ns.candidates;
    st.seconds = now_s() - t0;
    res.rounds.push_back(st);
    if (opt.progress)
      std::fprintf(stderr, "dedup round %d: %lld images in %lld subsets (largest %lld), %lld pairs from %lld candidates, "
                   "%lld clusters, %lld removed, %lld kept (%.1f s)\n",
                   round, (long long)st.input, (long long)st.subsets, (long long)st.largest_subset, (long long)st.pairs,
                   (long long)st.candidates, (long long)st.clusters, (long long)st.removed, (long long)st.kept, st.seconds);
    if (on_round) on_round(st, removed);
    if (removed.empty()) break;  // the kept set stopped changing
  }
  // Point every removed image at the kept image its chain ends in (ranks strictly decrease along it).
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = res.duplicate_of[(size_t)i];
    if (k < 0) continue;
    while (res.duplicate_of[(size_t)k] >= 0) k = res.duplicate_of[(size_t)k];
    res.duplicate_of[(size_t)i] = k;
  }
  return res;
}

}  // namespace oboro
