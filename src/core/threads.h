// A small persistent thread pool. parallel_for splits [0, n) into contiguous chunks;
// results must not depend on the split (each index is computed independently), which is
// what makes outputs identical for any thread count.
#pragma once
#include <cstdint>
#include <functional>

namespace oboro {

int num_threads();                // current pool size (default: hardware concurrency or OBORO_THREADS)
void set_num_threads(int n);      // also sets OpenBLAS's thread count

// fn(begin, end) is called on disjoint ranges covering [0, n). `grain` is the minimum chunk.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

}  // namespace oboro
