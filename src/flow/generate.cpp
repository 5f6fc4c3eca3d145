#include "flow/generate.h"
#include "core/error.h"
#include "core/sha256.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "flow/sampler.h"
#include "io/safetensors.h"
#include "models/codec.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

namespace oboro {

namespace fs = std::filesystem;

std::vector<GeneratedImage> generate(const GenerateRequest& rq, bool progress) {
  if (rq.model.empty()) fail("no model given: pass --model FILE.safetensors");
  if (rq.steps < 1 || rq.steps > 1000) fail("--steps must be between 1 and 1000, got ", rq.steps);
  if (rq.batch_size < 1 || rq.n_iter < 1) fail("--batch-size and --n-iter must be at least 1");
  Backend& be = cpu_backend();
  auto wtype = [](const std::string& s, const char* opt) -> std::optional<WFormat> {
    if (s.empty()) return std::nullopt;
    return parse_wformat(s, opt);
  };
  auto dit = DiT::load(rq.model, be, wtype(rq.dit_type, "--type"));
  const DiTConfig& cfg = dit->config();
  const LatentCodec codec =
      LatentCodec::open(cfg.codec, codec_stride(cfg.codec, cfg.latent_channels), rq.vae, be, "--vae");
  if (codec.channels() != cfg.latent_channels)
    fail(rq.vae, ": the VAE has ", codec.channels(), " latent channels but the model ", rq.model, " expects ",
         cfg.latent_channels);
  auto src = TensorSource::open(rq.model);
  std::string te_path = rq.text_encoder;
  if (te_path.empty()) {
    auto it = src.metadata().find("oboro.text_encoder");
    if (it == src.metadata().end())
      fail(rq.model, ": the model names no text encoder (metadata 'oboro.text_encoder'): pass --text-encoder");
    te_path = (fs::path(rq.model).parent_path() / it->second).string();
  }
  auto te = TextEncoder::load(te_path, be, wtype(rq.te_type, "--te-type"));
  int W = rq.width, H = rq.height;
  if (W <= 0 || H <= 0) {
    W = H = 64;
    auto it = src.metadata().find("modelspec.resolution");
    int w2, h2;
    if (it != src.metadata().end() && std::sscanf(it->second.c_str(), "%dx%d", &w2, &h2) == 2) { W = w2; H = h2; }
  }
  const int m = codec.stride * cfg.patch_size;
  if (W % m || H % m) fail("size ", W, "x", H, " must be a multiple of ", m, " for this model");
  const int h = H / codec.stride, w = W / codec.stride;
  const std::string model_hash = sha256_file(rq.model).substr(0, 10);
  const std::string model_name = fs::path(rq.model).stem().string();
  const double shift = rq.shift ? resolution_shift((h / cfg.patch_size) * (w / cfg.patch_size)) : 1.0;
  uint64_t base_seed = rq.seed >= 0 ? (uint64_t)rq.seed : (std::random_device{}() & 0x7fffffff);

  std::vector<GeneratedImage> out;
  for (int it = 0; it < rq.n_iter; ++it) {
    std::vector<uint64_t> seeds;
    for (int i = 0; i < rq.batch_size; ++i) seeds.push_back(base_seed + (uint64_t)(it * rq.batch_size + i));
    TextBatch cond = te->encode(std::vector<std::string>(rq.batch_size, rq.prompt), false);
    TextBatch uncond;
    if (rq.cfg_scale != 1.f) uncond = te->encode(std::vector<std::string>(rq.batch_size, rq.negative_prompt), false);
    SamplerOptions so;
    so.steps = rq.steps;
    so.cfg_scale = rq.cfg_scale;
    so.shift = rq.shift;
    const bool tty = progress && isatty(2);
    if (progress)
      so.on_step = [&](int s, int total, const std::vector<float>&) {
        if (tty || s == total)
          std::fprintf(stderr, "%sbatch %d/%d step %d/%d%s", tty ? "\r" : "", it + 1, rq.n_iter, s, total,
                       s == total ? "\n" : "");
      };
    std::vector<float> lat = sample_euler(*dit, cond, uncond, h, w, seeds, so);
    const size_t per = (size_t)cfg.latent_channels * h * w;
    std::vector<float> img((size_t)3 * H * W);
    for (int i = 0; i < rq.batch_size; ++i) {
      codec.decode(lat.data() + i * per, H, W, img.data());
      GeneratedImage g;
      g.image = chw_to_image(img.data(), H, W);
      g.seed = seeds[i];
      g.infotext = format_infotext(rq.prompt, rq.negative_prompt,
                                   {{"Steps", std::to_string(rq.steps)},
                                    {"Sampler", "Euler"},
                                    {"CFG scale", py_float32(rq.cfg_scale)},
                                    {"Seed", std::to_string(g.seed)},
                                    {"Size", str(W, "x", H)},
                                    {"Model hash", model_hash},
                                    {"Model", model_name},
                                    {"Shift", py_float(std::round(shift * 1000) / 1000)},
                                    {"RNG", "Philox4x32-10 CPU"},
                                    {"Version", "oboro 0.1.0"}});
      nlohmann::json j = {{"prompt", rq.prompt}, {"negative_prompt", rq.negative_prompt}, {"width", W},
                          {"height", H}, {"steps", rq.steps}, {"cfg_scale", rq.cfg_scale}, {"seed", g.seed},
                          {"sampler_name", "Euler"}, {"shift", rq.shift}, {"model", model_name},
                          {"model_hash", model_hash}, {"rng", "philox4x32-10-cpu"}};
      g.request_json = j.dump();
      out.push_back(std::move(g));
    }
  }
  return out;
}

}  // namespace oboro
