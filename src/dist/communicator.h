// The processes of a data-parallel run and the collectives between them, behind one interface:
//   SingleProcess  — one rank, no MPI at all (every collective is local arithmetic);
//   MpiCommunicator (mpi_communicator.cpp, built when CMake finds MPI: OBORO_HAVE_MPI) — CPU ranks under
//                    `mpirun` / `srun`, host buffers, non-blocking MPI ops polled against a deadline.
// The NCCL seam (not built: there is no CUDA backend yet; docs/distributed.md): an NcclCommunicator would
// implement the same interface for device buffers of GPU ranks; its ncclUniqueId is made by rank 0 and sent
// to every rank with the MPI communicator's broadcast() (MPI stays the launcher and the control channel).
// The trainer reaches gradients only through dist/grad_sync.h, which crosses the Backend seam with
// download/upload for host communicators; a device communicator would take the Buffers' device pointers there.
//
// Determinism: ordered_sum() adds every rank's contributions in one fixed order, (rank 0 part 0) + (rank 0 part
// 1) + … + (rank 1 part 0) + …, a left fold, whatever the timing or the transport. So the result is the same
// bits as one process adding the same parts in the same order (train: N ranks × accumulation A ≡ 1 rank ×
// accumulation N·A, bitwise).
//
// Faults: every collective waits at most `timeout` seconds; a rank that does not arrive (died or hung) stops
// the whole job: one line naming the rank (as far as it can be known) and the step, and every rank exits ≠ 0.
#pragma once
#include "core/error.h"
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace oboro::dist {

// An error every rank raises alike (decided from values all ranks share, e.g. a summed loss): the CLI prints it
// on rank 0 only and every rank exits ≠ 0 without aborting the others.
struct CollectiveError : Error {
  CollectiveError(const std::string& what, int rank) : Error(what), rank(rank) {}
  int rank;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* name() const = 0;  // "single" | "mpi"

  // Every rank passes its `nparts` contributions (the same nparts on every rank), each of n values; every rank
  // receives in `out` (n values, may alias nothing) the left fold over all ranks' parts in (rank, part) order:
  //   out = ((p[0][0] + p[0][1]) + … + p[1][0]) + …   (the first part copied, not added to 0)
  virtual void ordered_sum(const float* const* parts, int nparts, float* out, size_t n) = 0;
  virtual void ordered_sum(const double* const* parts, int nparts, double* out, size_t n) = 0;
  // `bytes` bytes of `data` from rank `root` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Stops the whole job (all ranks exit ≠ 0) after printing `message` (one line) on this rank.
  [[noreturn]] virtual void abort(const std::string& message, int code) = 0;

  // The rank-order sum of one buffer per rank, in place (ordered_sum with one part).
  void allreduce_sum(float* buf, size_t n) { ordered_sum(&buf, 1, buf, n); }
  void allreduce_sum(double* buf, size_t n) { ordered_sum(&buf, 1, buf, n); }

  // Collective deadline in seconds (config collective_timeout) and the training step named in fault messages.
  void set_timeout(double seconds) { timeout_ = seconds; }
  double timeout() const { return timeout_; }
  void set_step(int64_t step) { step_ = step; }
  int64_t step() const { return step_; }

 private:
  double timeout_ = 600;
  int64_t step_ = 0;
};

// One process: rank 0 of 1, every collective local.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* name() const override { return "single"; }
  void ordered_sum(const float* const* parts, int nparts, float* out, size_t n) override;
  void ordered_sum(const double* const* parts, int nparts, double* out, size_t n) override;
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(const std::string& message, int code) override;
};

// The left fold of `nparts` local parts into `out` (out may alias parts[0]): the arithmetic every
// communicator's ordered_sum does for the parts of one rank.
void fold_parts(const float* const* parts, int nparts, float* out, size_t n, bool add_to_out);
void fold_parts(const double* const* parts, int nparts, double* out, size_t n, bool add_to_out);

// True when this process was started by an MPI launcher with more than one rank (mpirun, mpiexec, srun with
// PMI/PMIx): read from the launcher's environment, before MPI is initialised.
bool launched_with_mpi();
// The world of this process: MpiCommunicator when launched_with_mpi() (MPI initialised here, finalised when
// the communicator is destroyed), else SingleProcess. Fails with the fix when the run was launched with
// several ranks but this build has no MPI.
std::unique_ptr<Communicator> open_world(double timeout_s);

}  // namespace oboro::dist
