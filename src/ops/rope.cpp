#include "ops/rope.h"
#include "core/error.h"
#include <cmath>

namespace oboro {
void rope2d_tables(std::vector<float>& cs, std::vector<float>& sn, const std::vector<int>& rows,
                   const std::vector<int>& cols, int dh, float theta) {
  if (dh % 4) fail("RoPE2D needs a head dim divisible by 4, got ", dh);
  size_t S = rows.size();
  int half = dh / 2, quarter = dh / 4;
  cs.assign(S * half, 0.f);
  sn.assign(S * half, 0.f);
  for (size_t s = 0; s < S; ++s)
    for (int p = 0; p < half; ++p) {
      int k = p < quarter ? p : p - quarter;
      double omega = std::pow((double)theta, -4.0 * k / dh);
      double ang = (p < quarter ? rows[s] : cols[s]) * omega;
      cs[s * half + p] = (float)std::cos(ang);
      sn[s * half + p] = (float)std::sin(ang);
    }
}
}  // namespace oboro
