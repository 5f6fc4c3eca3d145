// Sample previews during training: every sample_every_n_steps (and at the last step) the prompts of the
// sample_prompts file (kohya prompt lines: --w --h --s --l --d --n) are generated with the EMA weights when
// the run keeps an EMA, as one grid: output_dir/samples/step-NNNNNNNN.png.
#pragma once
#include "train/train_state.h"

namespace oboro {

struct LatentCodec;

// The grid of sample images for state.step (nothing when the prompt file has no prompt lines).
void write_samples(TrainState& state, const LatentCodec& codec, const TrainConfig& cfg);

}  // namespace oboro
