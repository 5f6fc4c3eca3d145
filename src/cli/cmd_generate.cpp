// `oboro generate`: prompt → PNG files with A1111 infotext. Accepts the report's own flags
// (--prompts, --image_size '[H,W]', --cfg_scale, --model_path, --output_dir) unchanged.
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/threads.h"
#include "flow/generate.h"
#include "flow/infotext.h"
#include "flow/request_check.h"
#include "io/atomic_file.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <vector>

namespace oboro::cli {

namespace fs = std::filesystem;

// The bundled default model (models/default/, trained on licensed data: see its README), found
// beside the binary (build/oboro → ../models), in the source tree it was built from, or where
// $OBORO_DEFAULT_MODEL points.
std::string default_model() {
  const char* kRel = "models/default/oboro-default.safetensors";
  std::vector<fs::path> tried;
  if (const char* e = std::getenv("OBORO_DEFAULT_MODEL")) tried.emplace_back(e);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    tried.push_back(exe.parent_path().parent_path() / kRel);
    tried.push_back(exe.parent_path().parent_path() / "share/oboro" / kRel);
  }
  tried.push_back(fs::path(OBORO_SOURCE_DIR) / kRel);
  std::string list;
  for (const auto& p : tried) {
    if (fs::is_regular_file(p)) return p.string();
    const std::string line = "\n  " + fs::weakly_canonical(p, ec).string();
    if (list.find(line) == std::string::npos) list += line;
  }
  fail("no --model given and the bundled default model was not found; looked in:", list,
       "\npass --model FILE (an oboro .safetensors model), or set OBORO_DEFAULT_MODEL");
}

static int next_index(const fs::path& dir) {
  int best = -1;
  if (fs::is_directory(dir))
    for (auto& e : fs::directory_iterator(dir)) {
      int n;
      if (std::sscanf(e.path().filename().string().c_str(), "%d-", &n) == 1) best = std::max(best, n);
    }
  return best + 1;
}

// --grid: a new file, or (with --force) a file to replace — but never one this run reads (the model, the text
// encoder, the VAE, the init image, the prompt file), compared by file-system identity (links, "./a" vs "a").
static void check_grid_path(const std::string& grid, bool force, const GenerateRequest& rq, const std::string& from_file) {
  std::error_code ec;
  if (!fs::exists(grid, ec)) return;
  if (fs::is_directory(grid, ec)) fail("--grid ", grid, ": is a folder: give a file name, e.g. ", (fs::path(grid) / "grid.png").string());
  for (const std::string* in : {&rq.model, &rq.text_encoder, &rq.vae, &rq.init_image, &rq.hr_model, &from_file})
    if (!in->empty() && fs::exists(*in, ec) && fs::equivalent(grid, *in, ec))
      fail("--grid ", grid, ": is an input of this run (", *in, "): choose another file name for the grid");
  if (!force) fail("--grid ", grid, ": the file exists: choose a new name, or pass --force to replace it");
  char sig[8] = {};
  std::ifstream f(grid, std::ios::binary);
  f.read(sig, 8);
  if (f.gcount() != 8 || std::memcmp(sig, "\x89PNG\r\n\x1a\n", 8) != 0)
    fail("--grid ", grid, ": the file exists and is not a PNG image: --force replaces only an earlier grid; choose "
         "another file name");
}

void register_generate(CLI::App& app) {
  struct Opts {
    GenerateRequest rq;
    std::string prompt_pos, image_size, size, output_dir, from_file, grid, max_memory;
    std::vector<std::string> loras;
    int grid_columns = 0;
    bool force = false;
    bool no_metadata = false, no_shift = false, memory_plan = false, no_memory_check = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("generate", "Generate images from a prompt");
  c->add_option("prompt", o->prompt_pos, "the prompt");
  c->add_option("--prompt,--prompts", o->rq.prompt, "the prompt (same as the positional argument)");
  c->add_option("--negative-prompt,--negative_prompt,-n", o->rq.negative_prompt, "negative prompt");
  c->add_option("--model,--model_path,-m", o->rq.model, "model file (.safetensors)");
  c->add_option("--t5,--text-encoder", o->rq.text_encoder,
                "T5 v1.1 text encoder: a .safetensors file, or an HF folder (sharded safetensors + index) with "
                "spiece.model beside it or in ../tokenizer_2 (default: the one named by the model)");
  c->add_option("--vae", o->rq.vae,
                "FLUX.1 VAE (ae.safetensors or diffusers layout) for flux-vae models (default: DIR/vae/ae.safetensors)");
  c->add_option("--models-dir", o->rq.models_dir,
                "ComfyUI-style models folder: bare names given to --model/--t5/--vae/--hr-model are looked up in "
                "DIR/diffusion_models, DIR/text_encoders, DIR/vae (default: $OBORO_MODELS_DIR)");
  c->add_option("--init-img,--init_img,-i", o->rq.init_image,
                "img2img: start from this image (resized to cover --size and centre-cropped; without --size its own "
                "size, cropped to a multiple of 16)");
  c->add_option("--strength,--denoising-strength,--denoising_strength", o->rq.strength,
                "img2img: fraction of noise added to the init image (0 keeps it, 1 ignores it); steps*strength steps run")
      ->capture_default_str()->check(real_in(0, 1));
  c->add_option("--hr-scale,--hr_scale", o->rq.hr_scale, "refine pass (hires fix): upscale the first pass by this factor")
      ->check(real_in(0, kMaxHrScale, true));
  c->add_option("--hr-resize-x,--hr_resize_x", o->rq.hr_resize_x, "refine pass: target width (instead of --hr-scale)")
      ->check(int_in(1, kMaxImageSide));
  c->add_option("--hr-resize-y,--hr_resize_y", o->rq.hr_resize_y, "refine pass: target height (instead of --hr-scale)")
      ->check(int_in(1, kMaxImageSide));
  c->add_option("--mask", o->rq.mask_image,
                "inpainting (with --init-img): white = repaint, black = keep (resized like the init image); the kept "
                "pixels come back unchanged outside the blurred edge");
  c->add_option("--mask-blur,--mask_blur", o->rq.mask_blur, "inpainting: Gaussian blur of the mask edge in pixels")
      ->capture_default_str()->check(int_in(0, 256));
  c->add_flag("--invert-mask,--inpainting_mask_invert", o->rq.invert_mask, "inpainting: repaint the black part instead");
  c->add_option("--hr-upscaler,--hr_upscaler", o->rq.hr_upscaler,
                "refine pass upscaler: Latent (bilinear on latents), \"Latent (nearest)\", Lanczos or Nearest "
                "(decoded pixels, then encoded again)")->capture_default_str();
  c->add_option("--hr-steps,--hr_second_pass_steps", o->rq.hr_steps,
                "refine pass steps before strength (0 = --steps); hr-steps*hr-strength steps run")->capture_default_str()
      ->check(int_in(0, kMaxSteps));
  c->add_option("--hr-strength,--hr-denoising-strength", o->rq.hr_strength,
                "refine pass: fraction of noise added to the upscaled first pass")->capture_default_str()
      ->check(real_in(0, 1, true));
  c->add_option("--hr-model,--hr-checkpoint", o->rq.hr_model,
                "refine pass: a separate refiner DiT (same text encoder and codec); default the --model");
  c->add_option("--max-memory", o->max_memory,
                "memory budget, e.g. 6G (default: MemAvailable); the run is refused before loading when the plan exceeds it");
  c->add_flag("--memory-plan,--dry-run", o->memory_plan, "print the memory plan and exit without loading the models");
  c->add_flag("--no-memory-check", o->no_memory_check, "run even when the memory plan exceeds the budget");
  c->add_flag("--vae-tiling", o->rq.vae_tiling, "always decode/encode in tiles (default: only above 3 GiB of activations)");
  c->add_option("--vae-tile", o->rq.vae_tile, "VAE tile side in latent pixels (x8 image pixels)")->capture_default_str()
      ->check(int_in(8, 4096));
  c->add_option("--vae-type", o->rq.vae_type, "VAE conv weight format: f32, bf16, f16 (default f32; converted while loading)");
  c->add_option("--type", o->rq.dit_type, "DiT weight format: f32, bf16, f16, f8, q8_0 (default: as the file stores it)");
  c->add_option("--te-type", o->rq.te_type, "text-encoder weight format: f32, bf16, f16, f8, q8_0 (default: as stored)");
  c->add_option("--width,-W", o->rq.width, "width in pixels")->check(int_in(1, kMaxImageSide));
  c->add_option("--height,-H", o->rq.height, "height in pixels")->check(int_in(1, kMaxImageSide));
  c->add_option("--size", o->size, "WxH, e.g. 64x64");
  c->add_option("--image_size", o->image_size, "'[H,W]' as in the oboro report");
  c->add_option("--steps", o->rq.steps, "sampling steps")->capture_default_str()->check(int_in(1, kMaxSteps));
  c->add_option("--cfg-scale,--cfg_scale", o->rq.cfg_scale, "classifier-free guidance scale")->capture_default_str()
      ->check(real_in(0, kMaxCfgScale));
  c->add_option("--seed", o->rq.seed, "seed (-1 = random, else 0 to 4294967295); image i uses seed + i")
      ->capture_default_str()->check(int_in(-1, kMaxSeed));
  c->add_option("--batch-size,--batch_size", o->rq.batch_size, "images per batch")->capture_default_str()
      ->check(int_in(1, kMaxBatch));
  c->add_option("--n-iter,--n_iter", o->rq.n_iter, "number of batches")->capture_default_str()
      ->check(int_in(1, kMaxNIter));
  c->add_option("--output-dir,--output_dir,-o", o->output_dir, "output folder (default outputs/YYYY-MM-DD)");
  c->add_flag("--no-metadata", o->no_metadata, "do not embed infotext / request JSON in the PNG");
  c->add_flag("--no-shift", o->no_shift, "disable the resolution-dependent timestep shift");
  c->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(int_in(1, 4096));
  c->add_option("--from-file", o->from_file,
                "one prompt per line, kohya sample syntax: 'a cat --n blurry --w 64 --h 64 --d 42 --s 20 --l 5' "
                "(flags given here are the defaults)");
  c->add_option("--grid", o->grid, "also write every image of this run into one grid PNG (a new file: see --force)");
  c->add_option("--grid-columns", o->grid_columns, "grid columns (default: images per prompt, or 8)")
      ->check(int_in(1, 4096));
  c->add_flag("--force,--overwrite", o->force, "let --grid replace an existing file (never one of this run's inputs)");
  c->add_option("--lora", o->loras,
                "apply a LoRA: FILE[:WEIGHT] (repeatable; weights stack and may be negative); the prompt may also "
                "name LoRAs as <lora:NAME:WEIGHT>");
  c->add_option("--lora-dir", o->rq.lora_dir,
                "folder of the LoRAs a prompt names with <lora:NAME:WEIGHT> (default MODELS_DIR/loras when it "
                "exists, else models/loras)");
  c->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    GenerateRequest rq = o->rq;
    for (const std::string& a : o->loras) rq.loras.push_back(parse_lora_arg(a));
    if (!o->prompt_pos.empty()) {
      if (!rq.prompt.empty()) fail("give the prompt once: either as the argument or with --prompt");
      rq.prompt = o->prompt_pos;
    }
    rq.shift = !o->no_shift;
    if (!o->max_memory.empty()) rq.max_memory = parse_bytes(o->max_memory, "--max-memory");
    rq.check_memory = !o->no_memory_check;
    if (rq.model.empty()) {
      rq.model = default_model();
      std::fprintf(stderr, "model: %s (the bundled default; --model to choose another)\n", rq.model.c_str());
    }
    if (!o->size.empty()) parse_size(o->size, "--size", rq.width, rq.height);
    if (!o->image_size.empty()) {
      int n = 0;
      if (std::sscanf(o->image_size.c_str(), " [ %d , %d ] %n", &rq.height, &rq.width, &n) != 2 ||
          n != (int)o->image_size.size() || rq.width < 1 || rq.height < 1 || rq.width > kMaxImageSide ||
          rq.height > kMaxImageSide)
        fail("--image_size must look like '[H,W]' with H and W whole numbers from 1 to ", kMaxImageSide,
             " (e.g. '[416,736]'), got '", o->image_size, "'");
    }
    fs::path dir = o->output_dir;
    if (dir.empty()) {
      std::time_t now = std::time(nullptr);
      char day[16];
      std::strftime(day, sizeof day, "%Y-%m-%d", std::localtime(&now));
      dir = fs::path("outputs") / day;
    }
    std::vector<GenerateRequest> rqs;
    if (!o->from_file.empty()) {
      std::ifstream in(o->from_file);
      if (!in) fail(o->from_file, ": cannot read the prompt file (--from-file): check the path");
      std::string line;
      while (std::getline(in, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos || line[line.find_first_not_of(" \t")] == '#')
          continue;
        PromptLine pl = parse_prompt_line(line);
        GenerateRequest r = rq;
        r.prompt = pl.prompt;
        if (!pl.negative.empty()) r.negative_prompt = pl.negative;
        if (pl.width > 0) r.width = pl.width;
        if (pl.height > 0) r.height = pl.height;
        if (pl.steps > 0) r.steps = pl.steps;
        if (pl.seed >= 0) r.seed = pl.seed;
        if (pl.cfg >= 0) r.cfg_scale = pl.cfg;
        rqs.push_back(r);
      }
      if (rqs.empty()) fail(o->from_file, ": no prompts in the file (one per line)");
    } else {
      rqs.push_back(rq);
    }
    if (!o->grid.empty()) check_grid_path(o->grid, o->force, rq, o->from_file);
    for (const auto& r : rqs) check_request(r);  // before any model is loaded (generate() checks again)
    if (o->memory_plan) {
      for (const auto& r : rqs) {
        MemoryPlan plan = plan_generation(r);
        std::printf("%s", plan.format().c_str());
        if (!plan.fits()) std::printf("%s\n", plan.refusal().c_str());
      }
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    std::vector<GeneratedImage> images;
    for (const auto& r : rqs) {
      auto part = generate(cli::backend(), r);
      for (auto& g : part) images.push_back(std::move(g));
    }
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fs::create_directories(dir);
    remove_stale_temps(dir.string());  // images of a run killed while saving them (io/atomic_file.h)
    int idx = next_index(dir);
    if (!o->grid.empty()) {
      std::vector<Image> ims;
      for (auto& g : images) ims.push_back(g.image);
      int per_prompt = std::max(1, (int)(images.size() / rqs.size()));
      int cols = o->grid_columns > 0 ? o->grid_columns : (per_prompt > 1 ? per_prompt : 8);
      if (fs::path(o->grid).has_parent_path()) fs::create_directories(fs::path(o->grid).parent_path());
      save_png(o->grid, make_grid(ims, std::min<int>(cols, (int)ims.size())));
      std::fprintf(stderr, "grid: %s\n", o->grid.c_str());
    }
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
