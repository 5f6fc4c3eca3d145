// Text → images with a trained model: load DiT + text encoder, CFG Euler sampling, decode, and the
// A1111 infotext + request JSON for each image. Shared by `oboro generate` and (later) the server.
#pragma once
#include "io/image.h"
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct GenerateRequest {
  std::string prompt, negative_prompt;
  int width = 0, height = 0;         // 0 = the model's training resolution (modelspec.resolution) or 64
  int steps = 30;
  float cfg_scale = 5.f;
  long long seed = -1;               // -1 = random
  int batch_size = 1;                // images per batch (one batched forward)
  int n_iter = 1;                    // batches
  bool shift = true;
  std::string model, text_encoder;   // text_encoder "" = the model's `oboro.text_encoder` beside it
  std::string vae;                   // FLUX.1 VAE file, needed by models with the flux-vae codec
  std::string dit_type, te_type;     // weight formats to load the DiT / text encoder in ("" = as stored; formats.md)
};

struct GeneratedImage {
  Image image;
  uint64_t seed;
  std::string infotext, request_json;
};

std::vector<GeneratedImage> generate(const GenerateRequest& req, bool progress = true);

}  // namespace oboro
