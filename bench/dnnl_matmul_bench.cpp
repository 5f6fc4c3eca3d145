// oneDNN matmul on the DiT's Linear shapes, for comparison with oboro's own kernels (docs/formats.md).
// Not part of the build (oboro does not link oneDNN); compile and run by hand:
//   g++ -O2 -std=c++20 bench/dnnl_matmul_bench.cpp -ldnnl -o /tmp/dnnl_bench
//   OMP_NUM_THREADS=2 /tmp/dnnl_bench 2520 1536 4096
// y(M,N) = x(M,K)·Wᵀ with W stored (N,K) row-major as oboro stores it; f32 and bf16 (x and W in BF16, y in F32).
// Weights in the stored layout ("plain") and pre-reordered to oneDNN's preferred layout ("packed", a one-time
// load-time reorder), best of 5 after a warm-up.
#include <dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

using namespace dnnl;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double run(engine& eng, stream& s, memory::dim M, memory::dim N, memory::dim K, memory::data_type dt,
                  bool packed) {
  memory::desc src_md({M, K}, dt, memory::format_tag::ab);
  memory::desc w_plain({K, N}, dt, memory::format_tag::ba);  // (N,K) row-major = K×N column-major
  memory::desc w_any({K, N}, dt, memory::format_tag::any);
  memory::desc dst_md({M, N}, memory::data_type::f32, memory::format_tag::ab);
  matmul::primitive_desc pd(matmul::desc(src_md, packed ? w_any : w_plain, dst_md), eng);
  memory src(src_md, eng), w(w_plain, eng), dst(dst_md, eng);
  memory wk = w;
  if (packed && pd.weights_desc() != w_plain) {
    wk = memory(pd.weights_desc(), eng);
    reorder(w, wk).execute(s, w, wk);
  }
  // fill with small values (bytes are fine for timing; bf16/f32 patterns of 0x3c)
  std::fill((char*)src.get_data_handle(), (char*)src.get_data_handle() + src_md.get_size(), 0x3c);
  matmul mm(pd);
  double best = 1e30;
  for (int r = 0; r < 6; ++r) {
    double t0 = now();
    mm.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wk}, {DNNL_ARG_DST, dst}});
    s.wait();
    if (r) best = std::min(best, now() - t0);
  }
  return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s M N K\n", argv[0]);
    return 2;
  }
  memory::dim M = std::atol(argv[1]), N = std::atol(argv[2]), K = std::atol(argv[3]);
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  std::printf("oneDNN matmul M=%ld N=%ld K=%ld: f32 plain %.1f, f32 packed %.1f, bf16 plain %.1f, bf16 packed %.1f GFLOP/s\n",
              (long)M, (long)N, (long)K, run(eng, s, M, N, K, memory::data_type::f32, false),
              run(eng, s, M, N, K, memory::data_type::f32, true), run(eng, s, M, N, K, memory::data_type::bf16, false),
              run(eng, s, M, N, K, memory::data_type::bf16, true));
}
