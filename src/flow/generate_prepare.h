// Generation, before any model is loaded: the request's paths resolved, the configs, sizes and prompt token counts
// read, and the memory plan made (generate.cpp runs it; plan_generation reports the plan alone).
#pragma once
#include "flow/generate.h"
#include "flow/inpaint.h"
#include "flow/memory_plan.h"
#include "flow/upscale.h"
#include "io/image.h"
#include "models/dit_config.h"
#include "models/vae.h"
#include "ops/weights.h"

#include <optional>
#include <string>

namespace oboro::generate_detail {

// Everything a run needs to know before loading a model: resolved paths, configs, sizes, token counts, plan.
struct Prepared {
  GenerateRequest rq;  // paths resolved
  DiTConfig cfg, hr_cfg;
  std::string te_path, hr_model;
  bool same_hr_model = true;
  int stride = 1, channels = 3;
  int W = 0, H = 0, h = 0, w = 0;         // first pass
  int W2 = 0, H2 = 0, h2 = 0, w2 = 0;     // refine pass (= first when no refine)
  bool hires = false, hr_latent = true;
  ResizeFilter hr_filter = ResizeFilter::Bilinear;
  std::string hr_upscaler_name;
  Image init;
  InpaintMask mask;                       // inpainting: empty latent = none
  int Lc = 1, Lu = 0;
  bool truncated = false;
  MemoryPlan plan;
  VaeRunOptions vae_opt;
};

// --type / --te-type: "" = as the file stores it.
std::optional<WFormat> weight_format(const std::string& s, const char* opt);

// Checks the request and resolves it into a Prepared run (fails with the fix on a bad request or a missing file).
Prepared prepare(const GenerateRequest& in);

}  // namespace oboro::generate_detail
