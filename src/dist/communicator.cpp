#include "dist/communicator.h"
#include "core/error.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace oboro::dist {

namespace {

template <class T>
void fold(const T* const* parts, int nparts, T* out, size_t n, bool add_to_out) {
  int first = 0;
  if (!add_to_out) {
    OBORO_ASSERT(nparts >= 1);
    if (out != parts[0]) std::memcpy(out, parts[0], n * sizeof(T));
    first = 1;
  }
  for (int p = first; p < nparts; ++p) {
    const T* src = parts[p];
    for (size_t i = 0; i < n; ++i) out[i] += src[i];
  }
}

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : 0;
}

}  // namespace

void fold_parts(const float* const* parts, int nparts, float* out, size_t n, bool add_to_out) {
  fold(parts, nparts, out, n, add_to_out);
}
void fold_parts(const double* const* parts, int nparts, double* out, size_t n, bool add_to_out) {
  fold(parts, nparts, out, n, add_to_out);
}

void SingleProcess::ordered_sum(const float* const* parts, int nparts, float* out, size_t n) {
  fold(parts, nparts, out, n, false);
}
void SingleProcess::ordered_sum(const double* const* parts, int nparts, double* out, size_t n) {
  fold(parts, nparts, out, n, false);
}

void SingleProcess::abort(const std::string& message, int code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

bool launched_with_mpi() {
  // Open MPI's mpirun/mpiexec, PMIx (Open MPI ≥ 4, srun --mpi=pmix), PMI-1/2 (srun, MPICH-style launchers).
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (env_int(v) > 1) return true;
  // PMIx exports no size variable in every version: its rank and namespace mark a launched process; the size
  // is then asked from MPI itself (a 1-rank world stays a 1-rank world).
  return std::getenv("PMIX_RANK") && std::getenv("PMIX_NAMESPACE") && env_int("OMPI_COMM_WORLD_SIZE") != 1;
}

#if !OBORO_HAVE_MPI
std::unique_ptr<Communicator> open_world(double timeout_s) {
  if (launched_with_mpi())
    fail("this process was started by an MPI launcher with several ranks, but this oboro was built without MPI: "
         "install libopenmpi-dev (scripts/setup.sh) and rebuild (scripts/build.sh), or run one process");
  auto c = std::make_unique<SingleProcess>();
  c->set_timeout(timeout_s);
  return c;
}
#endif

}  // namespace oboro::dist
