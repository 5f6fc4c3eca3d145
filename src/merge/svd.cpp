#include "merge/svd.h"
#include "core/error.h"
#include <algorithm>
#include <cstddef>

// LAPACK (Fortran ABI, as exported by libopenblas): divide-and-conquer SVD. The trailing size_t is gfortran's hidden
// length of the CHARACTER argument jobz.
extern "C" void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
                        const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork,
                        int* info, size_t jobz_len);

namespace oboro::merge {

LowRank truncated_svd(const std::vector<double>& D, int64_t N, int64_t K, int r) {
  if ((int64_t)D.size() != N * K || N < 1 || K < 1) fail("internal error: truncated_svd of a ", N, "x", K, " matrix");
  // Row-major D (N,K) is column-major X = Dᵀ (K×N): X = U S Vᵀ ⇒ D = V S Uᵀ.
  const int m = (int)K, n = (int)N, q = (int)std::min(N, K);
  std::vector<double> a(D), s((size_t)q), u((size_t)m * q), vt((size_t)q * n);
  std::vector<int> iwork((size_t)8 * q);
  int info = 0, lwork = -1;
  double wq = 0;
  const char jobz = 'S';
  dgesdd_(&jobz, &m, &n, a.data(), &m, s.data(), u.data(), &m, vt.data(), &q, &wq, &lwork, iwork.data(), &info, 1);
  if (info != 0) fail("LAPACK dgesdd workspace query failed (info ", info, ")");
  lwork = (int)wq;
  std::vector<double> work((size_t)std::max(1, lwork));
  dgesdd_(&jobz, &m, &n, a.data(), &m, s.data(), u.data(), &m, vt.data(), &q, work.data(), &lwork, iwork.data(), &info,
          1);
  if (info != 0) fail("LAPACK dgesdd did not converge on a ", N, "x", K, " weight difference (info ", info, ")");

  LowRank out;
  out.rank = std::max(1, std::min(r, q));
  const int R = out.rank;
  for (int j = 0; j < q; ++j) out.energy_total += s[j] * s[j];
  for (int j = 0; j < R; ++j) out.energy_kept += s[j] * s[j];
  out.up.resize((size_t)N * R);
  out.down.resize((size_t)R * K);
  // D's left singular vectors are the rows of vt (V = vtᵀ, column-major q×n: vt[j + q·i]); its right ones are U's.
  for (int64_t i = 0; i < N; ++i)
    for (int j = 0; j < R; ++j) out.up[(size_t)(i * R + j)] = (float)(vt[(size_t)j + (size_t)q * i] * s[j]);
  for (int j = 0; j < R; ++j)
    for (int64_t k = 0; k < K; ++k) out.down[(size_t)(j * K + k)] = (float)u[(size_t)k + (size_t)m * j];
  return out;
}

}  // namespace oboro::merge
