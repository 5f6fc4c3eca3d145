// `oboro generate`: prompt → PNG files with A1111 infotext. Accepts the report's own flags
// (--prompts, --image_size '[H,W]', --cfg_scale, --model_path, --output_dir) unchanged.
#include "cli/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "flow/generate.h"
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>

namespace oboro::cli {

namespace fs = std::filesystem;

static int next_index(const fs::path& dir) {
  int best = -1;
  if (fs::is_directory(dir))
    for (auto& e : fs::directory_iterator(dir)) {
      int n;
      if (std::sscanf(e.path().filename().string().c_str(), "%d-", &n) == 1) best = std::max(best, n);
    }
  return best + 1;
}

void register_generate(CLI::App& app) {
  struct Opts {
    GenerateRequest rq;
    std::string prompt_pos, image_size, size, output_dir;
    bool no_metadata = false, no_shift = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("generate", "Generate images from a prompt");
  c->add_option("prompt", o->prompt_pos, "the prompt");
  c->add_option("--prompt,--prompts", o->rq.prompt, "the prompt (same as the positional argument)");
  c->add_option("--negative-prompt,--negative_prompt,-n", o->rq.negative_prompt, "negative prompt");
  c->add_option("--model,--model_path,-m", o->rq.model, "model file (.safetensors)");
  c->add_option("--text-encoder", o->rq.text_encoder, "text encoder file (default: the one named by the model)");
  c->add_option("--width,-W", o->rq.width, "width in pixels");
  c->add_option("--height,-H", o->rq.height, "height in pixels");
  c->add_option("--size", o->size, "WxH, e.g. 64x64");
  c->add_option("--image_size", o->image_size, "'[H,W]' as in the oboro report");
  c->add_option("--steps", o->rq.steps, "sampling steps")->capture_default_str();
  c->add_option("--cfg-scale,--cfg_scale", o->rq.cfg_scale, "classifier-free guidance scale")->capture_default_str();
  c->add_option("--seed", o->rq.seed, "seed (-1 = random); image i uses seed + i")->capture_default_str();
  c->add_option("--batch-size,--batch_size", o->rq.batch_size, "images per batch")->capture_default_str();
  c->add_option("--n-iter,--n_iter", o->rq.n_iter, "number of batches")->capture_default_str();
  c->add_option("--output-dir,--output_dir,-o", o->output_dir, "output folder (default outputs/YYYY-MM-DD)");
  c->add_flag("--no-metadata", o->no_metadata, "do not embed infotext / request JSON in the PNG");
  c->add_flag("--no-shift", o->no_shift, "disable the resolution-dependent timestep shift");
  c->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  c->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    GenerateRequest rq = o->rq;
    if (!o->prompt_pos.empty()) {
      if (!rq.prompt.empty()) fail("give the prompt once: either as the argument or with --prompt");
      rq.prompt = o->prompt_pos;
    }
    rq.shift = !o->no_shift;
    if (!o->size.empty() && std::sscanf(o->size.c_str(), "%dx%d", &rq.width, &rq.height) != 2)
      fail("--size must look like WxH (e.g. 64x64), got '", o->size, "'");
    if (!o->image_size.empty() && std::sscanf(o->image_size.c_str(), " [ %d , %d ]", &rq.height, &rq.width) != 2)
      fail("--image_size must look like '[H,W]' (e.g. '[416,736]'), got '", o->image_size, "'");
    fs::path dir = o->output_dir;
    if (dir.empty()) {
      std::time_t now = std::time(nullptr);
      char day[16];
      std::strftime(day, sizeof day, "%Y-%m-%d", std::localtime(&now));
      dir = fs::path("outputs") / day;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto images = generate(rq);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fs::create_directories(dir);
    int idx = next_index(dir);
    for (auto& g : images) {
      char name[64];
      std::snprintf(name, sizeof name, "%05d-%llu.png", idx++, (unsigned long long)g.seed);
      TextChunks text;
      if (!o->no_metadata) text = {{"parameters", g.infotext}, {"oboro_request", g.request_json}};
      fs::path p = dir / name;
      save_png(p.string(), g.image, text);
      std::printf("%s\n", p.string().c_str());
    }
    std::fprintf(stderr, "%zu image(s) in %.2f s\n", images.size(), dt);
  });
}

}  // namespace oboro::cli
