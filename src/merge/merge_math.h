// The arithmetic of `oboro merge` (A1111 checkpoint-merger semantics), element by element, and per-block weights.
//
//   weighted-sum    (1 − M)·A + M·B      computed as A + M·(B − A) in double, rounded once to F32
//   add-difference  A + M·(B − C)        in double, rounded once
//   triple-sum      (1 − M − N)·A + M·B + N·C   (sd-webui-supermerger's "Triple", the A1111 extension that defines
//                   it; A1111's own merger has only the first two) computed as A + M·(B − A) + N·(C − A)
// Written as A plus differences so that equal inputs give A back bit for bit at every M: (1 − M)·a + M·a is not
// always a in floating point (e.g. M = 0.1), but a + M·(a − a) = a + 0 = a. M = 0 gives A exactly; M = 1 gives B
// (b − a of two F32 values is exact in double when their exponents differ by at most 29, and otherwise off by far
// less than half an F32 ulp of b).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace oboro::merge {

enum class Mode { WeightedSum, AddDifference, TripleSum, NoInterpolation, ExtractLora };
Mode parse_mode(const std::string& s);  // "weighted-sum", "add-difference", "triple-sum", "no-interpolation", "extract-lora"
const char* mode_name(Mode m);
int mode_inputs(Mode m);               // models A, B[, C] the mode takes

// out[i] ← the mode's formula over a, b, c (c unused for weighted-sum; b, c unused for no-interpolation).
void combine(Mode mode, const float* a, const float* b, const float* c, double m, double n, float* out, size_t count);

// --block-weights "embedders=0.2,00-03=0.5,07=1,blocks=0.8,final=0": the multiplier M per tensor group.
// Groups: embedders (t/bos/cap/x embedders), final (final_layer), blocks (every block), NN (block NN), NN-MM (blocks
// NN to MM inclusive). Later entries override earlier ones; tensors of no named group use the base M.
class BlockWeights {
 public:
  BlockWeights() = default;
  BlockWeights(const std::string& spec, int blocks);  // fails naming the bad entry; blocks = the model's block count
  bool empty() const { return spec_.empty(); }
  double multiplier(const std::string& tensor, double base) const;
  const std::string& spec() const { return spec_; }

 private:
  std::string spec_;
  bool has_emb_ = false, has_final_ = false;
  double emb_ = 0, final_ = 0;
  std::vector<int8_t> set_;   // per block: 1 when named
  std::vector<double> block_;
};

}  // namespace oboro::merge
