// 2D RoPE tables (spec §3): θ = theta; ω_k = θ^(−4k/dh), k < dh/4; pair p < dh/4 rotates by
// row·ω_p, pair p ≥ dh/4 by col·ω_(p−dh/4). Tables are (S, dh/2), built on the host in double.
#pragma once
#include <vector>

namespace oboro {
void rope2d_tables(std::vector<float>& cos_out, std::vector<float>& sin_out, const std::vector<int>& rows,
                   const std::vector<int>& cols, int dh, float theta);
}  // namespace oboro
