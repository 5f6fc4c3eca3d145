// Truncated SVD of a weight difference for `oboro merge --mode extract-lora`, by LAPACK's dgesdd (the LAPACK that
// Debian's OpenBLAS exports; oboro links it already for BLAS), in double precision.
#pragma once
#include <cstdint>
#include <vector>

namespace oboro::merge {

// The best rank-r approximation of D (N,K) row-major: D ≈ up · down with up (N,r) = U_r·diag(S_r), down (r,K) = V_rᵀ
// (kohya's extract_lora_from_models.py folds the singular values into up the same way). r is clamped to min(N, K).
struct LowRank {
  int rank = 0;
  std::vector<float> up, down;  // (N,r), (r,K) row-major
  double energy_total = 0;      // Σ σ_i² = ‖D‖_F²
  double energy_kept = 0;       // Σ_{i<r} σ_i²
  double retained() const { return energy_total > 0 ? energy_kept / energy_total : 1.0; }
};
LowRank truncated_svd(const std::vector<double>& D, int64_t N, int64_t K, int r);

}  // namespace oboro::merge
