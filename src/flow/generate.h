// Text → images with a trained model: the staged pipeline (T5 → [VAE encode] → DiT → [refine] → VAE decode), each
// component loaded for its stage and released after it, a memory plan checked before anything loads, img2img
// and the refine ("hires fix") pass, and the A1111 infotext + request JSON of each image. Shared by
// `oboro generate`, `oboro bench pipeline` and (later) the server.
#pragma once
#include "flow/lora_apply.h"
#include "flow/memory_plan.h"
#include "io/image.h"
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace oboro {

class Backend;
class DiT;
class TextEncoder;
class Vae;

struct GenerateRequest {
  std::string prompt, negative_prompt;
  int width = 0, height = 0;         // 0 = the init image's size, else modelspec.resolution, else 64
  int steps = 30;
  float cfg_scale = 5.f;
  long long seed = -1;               // -1 = random
  int batch_size = 1;                // images per batch (one batched forward)
  int n_iter = 1;                    // batches
  bool shift = true;
  std::string model, text_encoder;   // text_encoder "" = the model's `oboro.text_encoder` beside it
  std::string vae;                   // FLUX.1 VAE file, needed by models with the flux-vae codec
  std::string models_dir;            // ComfyUI-style folder for bare names ("" = $OBORO_MODELS_DIR)

  // img2img (A1111 "denoising_strength"): encode the init image, start at t = 1 − strength from
  // x = t·latent + (1 − t)·noise and run round(steps·strength) steps.
  std::string init_image;
  Image init_image_data;             // the init image already decoded (the server); used instead of init_image
  float strength = 0.75f;
  bool img2img() const { return !init_image.empty() || !init_image_data.empty(); }
  // Inpainting (needs the init image; flow/inpaint.h): white = repaint. mask_blur px (A1111 "Mask blur", default 4);
  // invert_mask repaints the black part (A1111 "Inpaint not masked").
  std::string mask_image;
  Image mask_image_data;             // the mask already decoded (the server); used instead of mask_image
  int mask_blur = 4;
  bool invert_mask = false;
  bool inpaint() const { return !mask_image.empty() || !mask_image_data.empty(); }

  // Refine pass (A1111 "hires fix"): upscale the first pass (latent or decoded pixels) by hr_scale or to
  // hr_resize_x × hr_resize_y, re-noise to hr_strength and denoise at that size (hr_steps, 0 = steps), with
  // hr_model ("" = the same model) — the SDXL base + refiner idea.
  float hr_scale = 0.f;
  int hr_resize_x = 0, hr_resize_y = 0;
  std::string hr_upscaler = "Latent";  // Latent | Latent (nearest) | Lanczos | Nearest
  int hr_steps = 0;
  float hr_strength = 0.7f;
  std::string hr_model;
  bool hires() const { return hr_scale > 0.f || hr_resize_x > 0 || hr_resize_y > 0; }

  // Memory: refuse before loading when the plan's peak exceeds max_memory (0 = MemAvailable).
  size_t max_memory = 0;
  bool check_memory = true;
  bool vae_tiling = false;           // always tile VAE passes (default: only when a pass would need > 3 GiB)
  int vae_tile = 64;                 // VAE tile side in latent pixels
  std::string dit_type, te_type;     // weight formats to load the DiT / text encoder in ("" = as stored; formats.md)
  std::string vae_type;              // VAE conv weight format: "" / f32, bf16, f16 (formats.md)

  // LoRAs (flow/lora_apply.h): --lora FILE[:W] requests, plus the prompt's <lora:NAME:W> tags (stripped from the
  // text the encoder sees, kept in the infotext prompt as A1111 does), looked up in lora_dir ("" = default).
  std::vector<LoraRequest> loras;
  std::string lora_dir;
};

struct GeneratedImage {
  Image image;
  uint64_t seed;
  std::string infotext, request_json;
};

// Measurements of one run, stage by stage (seconds, peak resident set during the stage, DiT step times).
struct StageStats {
  std::string name;
  double seconds = 0;
  size_t peak_rss = 0;          // VmHWM, reset at the stage start
  size_t rss_after = 0;         // VmRSS after the stage released what it loaded
  std::vector<double> step_seconds;
};
struct GenerateStats {
  MemoryPlan plan;
  std::vector<StageStats> stages;
  int max_dit_steps = 0;        // in: > 0 runs only this many steps per DiT pass (benchmarks)
};

// Components kept loaded between generate() calls (the server). generate() keeps a component here only when
// the memory plan says the text encoder, the DiT and the codec fit in memory all at once (weights of all three +
// the largest stage); otherwise it empties the cache and loads/releases each component per stage as without one.
// Entries are keyed by path and weight format; a request for another model replaces them. The weights are never
// written by inference, so a kept component gives the same images as a freshly loaded one.
struct ModelCache {
  std::string te_key, dit_key, codec_key;
  std::unique_ptr<TextEncoder> te;
  std::unique_ptr<DiT> dit;
  std::shared_ptr<Vae> vae;
  bool resident = false;  // out: the last run kept its components
  ModelCache();
  ~ModelCache();
  void clear();
};

// One DiT step, as seen by GenerateHooks::on_step.
struct StepEvent {
  int pass = 0;                // 0 the first pass, 1 the refine pass
  int batch = 0, n_batches = 1;  // which of the n_iter batches
  int step = 0, total = 0;     // after `step` of `total` steps of this pass
  // A small RGB preview of the batch's first image (longest side <= max_side), decoded cheaply from the current
  // latents: the pixels codec's latents are pixels; the FLUX VAE's are mapped by a linear latent→RGB fit.
  std::function<Image(int max_side)> preview;
};

// Thrown by generate() when GenerateHooks::cancel was set: nothing of the run is returned.
struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("cancelled") {}
};

struct GenerateHooks {
  std::function<void(const StepEvent&)> on_step;  // after every DiT step
  const std::atomic<bool>* cancel = nullptr;      // checked before each stage and after every step
  ModelCache* cache = nullptr;                    // keep the models loaded between runs (when the plan allows)
};

// The plan of a request (paths resolved, nothing loaded): what `--memory-plan` prints.
MemoryPlan plan_generation(const GenerateRequest& req);
// Runs on `be` (chosen by the caller: the command line's --backend). `hooks` (the server): progress, cancel and the
// model cache; without them, and with them, the images are the same bits.
std::vector<GeneratedImage> generate(Backend& be, const GenerateRequest& req, bool progress = true,
                                     GenerateStats* stats = nullptr, const GenerateHooks* hooks = nullptr);

// Previews (flow/preview.cpp). The linear latent→RGB map of a VAE: for each of R, G, B, C weights and a bias,
// fitted by least squares to solid colours encoded by the VAE itself (27 colours, one encode each); computed
// once per (file, format) and remembered. Empty when the VAE has no encoder.
std::vector<float> vae_preview_fit(const std::string& vae_path, const std::string& vae_type, Backend& be,
                                   const std::shared_ptr<Vae>& loaded = nullptr);
// The preview of one latent (C, h, w): the pixels codec (`fit` empty, C = 3·stride²) is rearranged exactly; a VAE
// latent goes through `fit` (or, when that is empty, its first three channels normalised). Downscaled (nearest) so
// the longest side is at most max_side.
Image latent_preview(const float* latent, int C, int h, int w, int stride, const std::vector<float>& fit,
                     int max_side);

}  // namespace oboro
