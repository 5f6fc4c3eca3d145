// The MPI communicator (built when CMake finds MPI): CPU ranks, host buffers, Open MPI from Debian.
//
// ordered_sum is a chain, so that the arithmetic is the left fold of communicator.h whatever the world size:
//   rank 0: acc = its parts folded;  sends acc to rank 1
//   rank r: receives acc from rank r−1, adds its parts in order, sends acc to rank r+1
//   rank R−1: the total; broadcast to every rank.
// It moves 2 × n values per rank per call (as a ring all-reduce does) but its R hops are serial; the chunks of
// kChunk values pipeline along the chain (rank r works on chunk c+1 while rank r+1 adds chunk c).
//
// Every wait is a non-blocking op polled against a deadline (the communicator's timeout): a rank that died is
// also reported by mpirun, one that hangs is named here. The deadlines are staggered so the first to expire
// belongs to the rank right after the missing one in the chain (it knows whom it waits for): a receive
// waits timeout·(1 + r/(2R)), a broadcast or send 2·timeout. The message names that rank and the step, then
// MPI_Abort stops every rank (exit ≠ 0).
#include "core/error.h"
#include "dist/communicator.h"
#include <mpi.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace oboro::dist {

namespace {

constexpr size_t kChunk = size_t(1) << 22;  // values per message (16 MiB of F32): < INT_MAX, and pipelines
constexpr int kTag = 0x0B0;

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "mpi"; }

  void ordered_sum(const float* const* parts, int nparts, float* out, size_t n) override {
    chain_sum(parts, nparts, out, n);
  }
  void ordered_sum(const double* const* parts, int nparts, double* out, size_t n) override {
    chain_sum(parts, nparts, out, n);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    for (size_t off = 0; off < bytes; off += kChunk) {
      const int cnt = (int)std::min(kChunk, bytes - off);
      MPI_Request rq;
      MPI_Ibcast((char*)data + off, cnt, MPI_BYTE, root, MPI_COMM_WORLD, &rq);
      wait(rq, 2 * timeout(), root, "a broadcast");
    }
  }

  void barrier() override {
    MPI_Request rq;
    MPI_Ibarrier(MPI_COMM_WORLD, &rq);
    wait(rq, 2 * timeout(), -1, "a barrier");
  }

  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  template <class T>
  void chain_sum(const T* const* parts, int nparts, T* out, size_t n) {
    if (size_ == 1) return fold_parts(parts, nparts, out, n, false);
    std::vector<T>& acc = scratch<T>();
    acc.resize(std::min(n, kChunk));
    std::vector<const T*> chunk_parts(nparts);
    for (size_t off = 0; off < n; off += kChunk) {
      const size_t m = std::min(kChunk, n - off);
      const int cnt = (int)m;
      for (int p = 0; p < nparts; ++p) chunk_parts[p] = parts[p] + off;
      if (rank_ == 0) {
        fold_parts(chunk_parts.data(), nparts, acc.data(), m, false);
      } else {
        MPI_Request rq;
        MPI_Irecv(acc.data(), cnt, mpi_type<T>(), rank_ - 1, kTag, MPI_COMM_WORLD, &rq);
        wait(rq, timeout() * (1 + 0.5 * rank_ / size_), rank_ - 1, "the gradient sum");
        fold_parts(chunk_parts.data(), nparts, acc.data(), m, true);
      }
      if (rank_ < size_ - 1) {
        MPI_Request rq;
        MPI_Isend(acc.data(), cnt, mpi_type<T>(), rank_ + 1, kTag, MPI_COMM_WORLD, &rq);
        wait(rq, 2 * timeout(), rank_ + 1, "the gradient sum");
      }
      MPI_Request rq;
      MPI_Ibcast(acc.data(), cnt, mpi_type<T>(), size_ - 1, MPI_COMM_WORLD, &rq);
      wait(rq, 2 * timeout(), size_ - 1, "the gradient sum");
      std::memcpy(out + off, acc.data(), m * sizeof(T));
    }
  }

  template <class T>
  std::vector<T>& scratch() {
    if constexpr (std::is_same_v<T, float>) return scratch_f32_;
    else return scratch_f64_;
  }

  // Polls `rq` until it completes or `limit_s` seconds pass; then names `peer` (−1: unknown) and stops the job.
  void wait(MPI_Request& rq, double limit_s, int peer, const char* what) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(limit_s);
    auto nap = std::chrono::microseconds(10);
    for (;;) {
      int done = 0;
      MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
      if (done) return;
      if (clock::now() > deadline) {
        const std::string who = peer >= 0 ? str("rank ", peer) : std::string("a rank");
        abort(str("oboro train: ", who, " did not reach ", what, " of step ", step() + 1, " within collective_timeout = ",
                  timeout(), " s (it died or hung; seen by rank ", rank_, " of ", size_,
                  "): every rank stops; the last complete checkpoint is intact — resume with --resume latest"),
              3);
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }

  int rank_ = 0, size_ = 1;
  std::vector<float> scratch_f32_;
  std::vector<double> scratch_f64_;
};

}  // namespace

std::unique_ptr<Communicator> open_world(double timeout_s) {
  std::unique_ptr<Communicator> c;
  if (launched_with_mpi()) c = std::make_unique<MpiCommunicator>();
  else c = std::make_unique<SingleProcess>();
  c->set_timeout(timeout_s);
  return c;
}

}  // namespace oboro::dist
