// Where the training batches come from: a folder (or dataset TOML) of images, decoded and encoded by the
// codec every step, or the pre-encoded latents (and text states) of `oboro data cache`. The training
// loop asks for the next micro-batch and its text states and does not know which it is.
//
// Both are pure functions of (seed, DataPosition, micro-step): what is drawn depends only on the
// position a checkpoint records and the step's random streams, so a resumed run reads the same data.
#pragma once
#include "flow/flow.h"
#include "models/text_encoder.h"
#include "train/train_state.h"
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

struct LatentCodec;
struct ProvenanceCheck;
struct TrainResult;

// One micro-batch of B samples (B = train_batch_size).
struct MicroBatch {
  int h = 0, w = 0;                   // latent grid: the batch's image size / codec stride
  std::vector<float> x1;              // (B, C, h, w) data latents, C = codec channels, on the host as read
                                      // (the loop uploads them)
  std::vector<std::string> captions;  // B, "" where caption dropout dropped it
  std::vector<std::string> files;     // B image paths (named when the loss is not finite)
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // Fills `out` with the B samples at `pos` and advances `pos` past them (to the next epoch at the end of
  // one); `rng` = the micro-step's streams (crop windows, caption dropout).
  virtual void next(DataPosition& pos, const StepRng& rng, MicroBatch& out) = 0;
  // Once the models exist (new or resumed run): the text encoder that text() uses, trained or frozen.
  virtual void set_text_encoder(TextEncoder& te, bool trained) = 0;
  // Text states of a batch's captions, on the backend: hidden (B, L, dim) and mask (B, L). A trained encoder
  // runs in training mode (its backward follows the DiT's).
  virtual TextBatch text(const std::vector<std::string>& captions) = 0;

  virtual size_t num_images() const = 0;           // repeats included (model metadata)
  virtual int64_t skipped_images() const = 0;      // unreadable images met so far
  virtual std::vector<std::string> captions() const = 0;  // to train a vocabulary on
  // After the run: counters for `res` and their summary line (the cache's text-state hits).
  virtual void report(TrainResult& res) const { (void)res; }
};

// The source the config names (cache_dir, else train_data_dir or dataset_config), its provenance checked
// (`prov`, printed by the caller). `codec` must outlive the source.
std::unique_ptr<BatchSource> open_batch_source(const TrainConfig& cfg, const LatentCodec& codec, ProvenanceCheck& prov);

}  // namespace oboro
