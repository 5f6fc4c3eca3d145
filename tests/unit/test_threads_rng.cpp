// Thread pool and counter-based RNG tests.
#include "core/rng.h"
#include "core/threads.h"
#include "op_test_util.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

using namespace oboro;
using namespace oboro::test;

namespace {

// ---------------------------------------------------------------------------------------------
// Philox

// Random123's published known-answer vectors for Philox4x32-10. Counter words (c0..c3) map to
// (index lo, index hi, stream lo, stream hi), key words to (seed lo, seed hi).
TEST(Philox, KnownAnswerVectors) {
  struct Kat { uint32_t c[4], k[2], out[4]; };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& kt : kats) {
    uint64_t index = kt.c[0] | (uint64_t)kt.c[1] << 32, stream = kt.c[2] | (uint64_t)kt.c[3] << 32;
    uint64_t seed = kt.k[0] | (uint64_t)kt.k[1] << 32;
    uint32_t w[4];
    Philox::block(seed, stream, index, w);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(w[i], kt.out[i]) << "word " << i;
  }
}

double correlation(const std::vector<float>& a, const std::vector<float>& b) {
  double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
  const double n = (double)a.size();
  for (size_t i = 0; i < a.size(); ++i) {
    sa += a[i]; sb += b[i]; sab += (double)a[i] * b[i]; saa += (double)a[i] * a[i]; sbb += (double)b[i] * b[i];
  }
  double cov = sab / n - sa / n * sb / n;
  return cov / std::sqrt((saa / n - sa / n * sa / n) * (sbb / n - sb / n * sb / n));
}

TEST(Rng, SeedsStreamsAndIndicesGiveDifferentSequences) {
  const int64_t n = 8192;
  auto draw = [&](uint64_t seed, uint64_t stream, uint64_t off) {
    std::vector<float> v(n);
    fill_normal(v.data(), n, seed, stream, off);
    return v;
  };
  const auto base = draw(1, 0, 0);
  const std::vector<std::vector<float>> others = {draw(2, 0, 0), draw(1, 1, 0), draw(1ull << 32, 0, 0),
                                                  draw(1, 1ull << 32, 0), draw(1, 0, 1ull << 34), draw(0, 0, 0)};
  for (size_t k = 0; k < others.size(); ++k) {
    int equal = 0;
    for (int64_t i = 0; i < n; ++i) equal += base[i] == others[k][i];
    EXPECT_LT(equal, 3) << "variant " << k;
    EXPECT_LT(std::fabs(correlation(base, others[k])), 0.06) << "variant " << k;
  }
  // Neighbouring elements within a block are not trivially related either.
  std::vector<float> even(n / 2), odd(n / 2);
  for (int64_t i = 0; i < n / 2; ++i) { even[i] = base[2 * i]; odd[i] = base[2 * i + 1]; }
  EXPECT_LT(std::fabs(correlation(even, odd)), 0.06);
}

TEST(Rng, NormalMoments) {
  const int64_t n = 1000000;
  std::vector<float> v(n);
  fill_normal(v.data(), n, 2024, 0);
  double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
  int64_t tail3 = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    double d = x;
    m1 += d; m2 += d * d; m3 += d * d * d; m4 += d * d * d * d;
    tail3 += std::fabs(d) > 3.0;
  }
  m1 /= n; m2 /= n; m3 /= n; m4 /= n;
  const double var = m2 - m1 * m1;
  EXPECT_LT(std::fabs(m1), 0.01);
  EXPECT_LT(std::fabs(var - 1.0), 0.01);
  EXPECT_LT(std::fabs(m3), 0.03);        // skewness (σ ≈ 0.0025)
  EXPECT_LT(std::fabs(m4 - 3.0), 0.06);  // kurtosis (σ ≈ 0.01)
  EXPECT_NEAR((double)tail3 / n, 0.0026998, 0.0005);
}

TEST(Rng, UniformStrictlyInsideUnitInterval) {
  const int64_t n = 1000000;
  std::vector<float> u(n);
  fill_uniform(u.data(), n, 77, 1);
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GT(u[i], 0.f) << i;
    ASSERT_LT(u[i], 1.f) << i;
    mean += u[i];
  }
  EXPECT_NEAR(mean / n, 0.5, 0.002);
}

// The extreme Philox words must also map strictly inside (0, 1). Words ≥ 2^32 − 128 occur once per
// ~3·10^7 draws, so a plain sample rarely sees them: search for one (≈ 10^7 blocks) and check it.
TEST(Rng, UniformAtExtremeWordsStaysBelowOne) {
  const uint64_t seed = 5, stream = 0;
  int64_t found = -1;
  uint32_t word = 0;
  for (uint64_t b = 0; b < (1ull << 27) && found < 0; ++b) {
    uint32_t w[4];
    Philox::block(seed, stream, b, w);
    for (int k = 0; k < 4; ++k)
      if (w[k] >= 0xFFFFFF80u) { found = (int64_t)(4 * b + k); word = w[k]; break; }
  }
  ASSERT_GE(found, 0) << "no extreme word found (search bound too small)";
  const float u = uniform_at(seed, stream, (uint64_t)found);
  EXPECT_GT(u, 0.f);
  EXPECT_LT(u, 1.f) << "uniform_at(" << seed << ", " << stream << ", " << found << ") == " << u
                    << " for Philox word 0x" << std::hex << word
                    << ": u01() in src/core/rng.cpp computes ((float)w + 0.5f) * 2^-32 in float, and (float)w "
                       "rounds to 2^32 for w >= 2^32 - 128, giving exactly 1.0f";
  float fu = -1.f;
  fill_uniform(&fu, 1, seed, stream, (uint64_t)found);
  EXPECT_LT(fu, 1.f);
  EXPECT_TRUE(std::isfinite(normal_at(seed, stream, (uint64_t)found)));
  // The smallest words are fine: (0 + 0.5)·2^-32 > 0.
}

// ---------------------------------------------------------------------------------------------
// parallel_for. The tests that resize the pool run last (suites are run in registration order),
// so that a regression of the respawn bug below cannot hide the results of the tests above.

// Runs fn on a helper thread; a deadlock becomes a test failure (and ends the process, since a
// hung thread cannot be joined).
void run_with_deadline(const std::function<void()>& fn, int seconds, const char* what) {
  auto fut = std::async(std::launch::async, fn);
  if (fut.wait_for(std::chrono::seconds(seconds)) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: %s did not finish within %d s (deadlock?)\n", what, seconds);
    std::fflush(stderr);
    std::_Exit(3);
  }
  fut.get();
}

TEST(ThreadPool, NestedParallelForRunsSeriallyWithoutDeadlock) {
  ThreadCount tc(2);
  run_with_deadline([] {
    const int64_t outer = 8, inner = 100;
    std::vector<std::atomic<int>> hits(outer * inner);
    for (auto& h : hits) h = 0;
    std::atomic<int> inner_calls{0}, bad{0};
    parallel_for(outer, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        const auto me = std::this_thread::get_id();
        parallel_for(inner, [&](int64_t b, int64_t e) {
          ++inner_calls;
          if (b != 0 || e != inner || std::this_thread::get_id() != me) ++bad;  // serial: one call, same thread
          for (int64_t i = b; i < e; ++i) ++hits[o * inner + i];
        }, 1);
      }
    }, 1);
    EXPECT_EQ(bad.load(), 0) << "nested parallel_for was split or moved to another thread";
    EXPECT_EQ(inner_calls.load(), outer);
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }, 30, "nested parallel_for");
}

TEST(ThreadPool, ConcurrentCallersFromOutsideThePool) {
  ThreadCount tc(2);
  run_with_deadline([] {
    auto worker = [](int seed) {
      int64_t errors = 0;
      for (int rep = 0; rep < 200; ++rep) {
        const int64_t n = 1000 + seed * 7 + rep;
        std::vector<int> out(n, 0);
        parallel_for(n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) out[i] += (int)i; }, 16);
        for (int64_t i = 0; i < n; ++i) errors += out[i] != (int)i;
      }
      return errors;
    };
    auto a = std::async(std::launch::async, worker, 1);
    auto b = std::async(std::launch::async, worker, 2);
    EXPECT_EQ(a.get(), 0);
    EXPECT_EQ(b.get(), 0);
  }, 60, "concurrent parallel_for callers");
}

// Resizing the pool after it has run work must not make the new workers run a stale job.
// Runs in a child process (death-test machinery) so that a crash fails only this test.
// Regression test for a fixed bug (Pool::resize/loop): new workers started with seen = 0 while
// gen_ was already > 0, so they woke at once, read fn_ (nullptr after the last run) and the
// stale chunks_, and called a null std::function → SIGSEGV. The sleep below makes that window certain.
TEST(ThreadPool, RespawnAfterWorkDoesNotRunStaleJob) {
#ifdef GTEST_FLAG_SET
  GTEST_FLAG_SET(death_test_style, "threadsafe");
#else
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
#endif
  EXPECT_EXIT(
      {
        set_num_threads(2);
        std::atomic<int64_t> sum{0};
        parallel_for(1000, [&](int64_t b, int64_t e) { sum += e - b; }, 1);
        set_num_threads(1);
        set_num_threads(2);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        parallel_for(1000, [&](int64_t b, int64_t e) { sum += e - b; }, 1);
        std::fprintf(stderr, "sum=%lld\n", (long long)sum.load());
        std::exit(sum.load() == 2000 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "")
      << "set_num_threads after earlier parallel work crashed or lost work: new pool workers pick up "
         "the previous (finished) job; see the comment above this test";
}

TEST(RngThreads, NormalAtEqualsFillNormalForAnyThreadCountAndOffset) {
  const uint64_t seed = 0x1234abcdULL, stream = 3;
  const int64_t n = 20011;
  std::vector<float> expect(n);
  for (int64_t i = 0; i < n; ++i) expect[i] = normal_at(seed, stream, (uint64_t)i);
  for (int threads : {1, 2}) {
    ThreadCount tc(threads);
    std::vector<float> got(n);
    fill_normal(got.data(), n, seed, stream, 0);
    EXPECT_TRUE(bitwise_equal(got, expect)) << "threads=" << threads;
    // A fill that starts at any offset (mid-block included) continues the same sequence.
    for (uint64_t off : {1ull, 2ull, 3ull, 5ull, 4097ull, 10000ull}) {
      const int64_t m = n - (int64_t)off;
      std::vector<float> part(m);
      fill_normal(part.data(), m, seed, stream, off);
      for (int64_t i = 0; i < m; ++i)
        ASSERT_EQ(part[i], expect[off + i]) << "offset " << off << " i " << i << " threads " << threads;
    }
    // Far offsets use the high counter word.
    const uint64_t far = (1ull << 33) + 3;
    std::vector<float> part(1000);
    fill_normal(part.data(), 1000, seed, stream, far);
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(part[i], normal_at(seed, stream, far + i)) << i;
    // mean/std are an affine map of the same draws.
    std::vector<float> ms(n);
    fill_normal(ms.data(), n, seed, stream, 0, 0.5f, 2.f);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(ms[i], 0.5f + 2.f * expect[i], 1e-5f * (1.f + std::fabs(ms[i]))) << i;
    // fill_uniform likewise.
    std::vector<float> u(n);
    fill_uniform(u.data(), n, seed, stream, 7);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(u[i], uniform_at(seed, stream, 7 + i)) << i;
  }
}

TEST(ThreadPoolSizes, ParallelForCoversRangeExactlyOnce) {
  const int64_t sizes[] = {1, 2, 3, 5, 7, 8, 16, 63, 64, 100, 1000, 4097};
  const int64_t grains[] = {1, 3, 64, 100000};
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadCount tc(threads);
    ASSERT_EQ(num_threads(), threads);
    for (int64_t n : sizes)
      for (int64_t grain : grains) {
        std::vector<std::atomic<int>> hits(n);
        for (auto& h : hits) h = 0;
        std::atomic<int> bad_range{0}, calls{0};
        parallel_for(n, [&](int64_t b, int64_t e) {
          ++calls;
          if (b < 0 || e > n || b >= e) ++bad_range;
          for (int64_t i = std::max<int64_t>(b, 0); i < std::min(e, n); ++i) ++hits[i];
        }, grain);
        EXPECT_EQ(bad_range.load(), 0) << "threads=" << threads << " n=" << n << " grain=" << grain;
        EXPECT_LE(calls.load(), threads) << "more chunks than threads";
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "index " << i << " threads=" << threads << " n=" << n << " grain=" << grain;
      }
    // Empty and negative ranges call nothing.
    std::atomic<int> calls{0};
    parallel_for(0, [&](int64_t, int64_t) { ++calls; });
    parallel_for(-5, [&](int64_t, int64_t) { ++calls; });
    EXPECT_EQ(calls.load(), 0);
  }
}

}  // namespace

// An exception thrown inside parallel_for (on any thread) reaches the caller, and the pool keeps working.
TEST(ThreadPoolSizes, ExceptionsPropagateToTheCaller) {
  for (int64_t bad : {0, 999}) {  // chunk 0 runs on the caller, the last chunk on a worker
    EXPECT_THROW(parallel_for(1000, [&](int64_t b, int64_t e) {
      if (bad >= b && bad < e) throw std::runtime_error("boom");
    }, 1), std::runtime_error);
  }
  std::atomic<int64_t> sum{0};
  parallel_for(1000, [&](int64_t b, int64_t e) { sum += e - b; }, 1);
  EXPECT_EQ(sum.load(), 1000);
}
