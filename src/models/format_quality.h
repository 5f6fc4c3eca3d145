// Quality guard for low-precision weights (docs/formats.md): the DiT velocity of a model converted to each format
// against the F32 model on the same inputs.
#pragma once
#include "models/dit.h"
#include <vector>

namespace oboro {

struct FormatQuality {
  WFormat fmt = WFormat::F32;
  double rel_err = 0;       // ‖v_fmt − v_f32‖ / ‖v_f32‖ over the whole batch
  double max_abs_err = 0;
  double rel_err_weights_only = -1;  // the same with the dequantised weights run in F32 (-1: not measured): the part
                                     // of rel_err due to weight storage alone (the rest: activation rounding)
  double seconds = 0;       // one forward (after a warm-up forward of the same shape)
  size_t weight_bytes = 0;  // model weights in memory
};

// `ref` must hold F32 weights. Inputs: x ~ N(0,1) (B, C, h, w), t = 0.3 + 0.4·b/B, txt ~ N(0,1) (B, L, text_dim), all
// text valid; deterministic in `seed`. The first entry is F32 itself (rel_err 0) with its time. Each converted model
// lives only while it is measured.
std::vector<FormatQuality> dit_format_quality(DiT& ref, const std::vector<WFormat>& fmts, int B, int L, int h, int w,
                                              uint64_t seed = 1, bool time_it = true, bool weights_only = false);

}  // namespace oboro
