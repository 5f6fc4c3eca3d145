#include "train/samples.h"
#include "core/error.h"
#include "flow/infotext.h"
#include "flow/sampler.h"
#include "io/image.h"
#include "models/codec.h"
#include "train/checkpoint.h"
#include <algorithm>
#include <filesystem>
#include <fstream>

namespace oboro {

namespace fs = std::filesystem;

void write_samples(TrainState& state, const LatentCodec& codec, const TrainConfig& cfg) {
  std::ifstream f(cfg.sample_prompts);
  if (!f) fail("cannot read sample_prompts file ", cfg.sample_prompts);
  std::vector<PromptLine> lines;
  for (std::string l; std::getline(f, l);)
    if (!l.empty() && l[0] != '#') lines.push_back(parse_prompt_line(l));
  if (lines.empty()) return;
  std::vector<Image> imgs;
  {
    EmaWeightsInModels ema(state);  // sample with the EMA weights
    for (size_t i = 0; i < lines.size(); ++i) {
      const PromptLine& p = lines[i];
      const int W = p.width > 0 ? p.width : cfg.width, H = p.height > 0 ? p.height : cfg.height;
      const int s = codec.stride;
      SamplerOptions so;
      so.steps = p.steps > 0 ? p.steps : cfg.sample_steps;
      so.cfg_scale = p.cfg >= 0 ? p.cfg : cfg.sample_cfg;
      const uint64_t seed = p.seed >= 0 ? (uint64_t)p.seed : cfg.seed + i;
      TextBatch c = state.te->encode({p.prompt}, false, cfg.max_token_length);
      TextBatch u = state.te->encode({p.negative}, false, cfg.max_token_length);
      std::vector<float> lat = sample_euler(*state.dit, c, u, H / s, W / s, {seed}, so);  // (C, H/s, W/s)
      std::vector<float> img((size_t)3 * H * W);                                         // (3, H, W)
      codec.decode(lat.data(), H, W, img.data());
      imgs.push_back(chw_to_image(img.data(), H, W));
    }
  }
  fs::create_directories(fs::path(cfg.output_dir) / "samples");
  save_png((fs::path(cfg.output_dir) / "samples" / (step_name(state.step) + ".png")).string(),
           make_grid(imgs, std::min<int>(8, (int)imgs.size())));
}

}  // namespace oboro
