// The memory plan of a generation run, computed before anything is loaded: the weights of each component from
// the safetensors headers, the activations of each stage from the shapes (the models' own planners, run dry), and
// the peak over the stages, given that the pipeline loads a component when a stage needs it and releases it when
// the stage is done (the T5 is gone before the DiT loads; the DiT before the VAE decodes).
#pragma once
#include "models/dit_config.h"
#include "models/t5.h"
#include "models/vae.h"
#include "ops/weights.h"
#include <optional>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

// Weights of one model file as its loader reads them (header only: nothing is loaded).
struct WeightInfo {
  std::string component;     // "T5 v1.1 encoder", "DiT", "VAE"
  std::string path;
  int64_t params = 0;        // elements of the tensors the loader reads
  size_t file_bytes = 0;     // their bytes in the file(s), in the stored dtype(s)
  size_t resident_bytes = 0; // what the loader allocates: F32, the parameter layout's (aligned) size
  size_t load_copy_bytes = 0;  // transient while loading: the largest tensor's mapped pages + its F32 copy
  std::string dtypes;        // stored dtypes, e.g. "BF16" or "F32+F16"
};
// `fmt`: the format the quantisable Linear weights will be held in (--type / --te-type); unset = as the file
// records it (`oboro.weight_format`, else F32). Everything else is held as F32.
WeightInfo t5_weight_info(const std::string& path, std::optional<WFormat> fmt = std::nullopt);   // file, sharded index or HF folder; decoder/lm_head ignored
WeightInfo dit_weight_info(const std::string& path, std::optional<WFormat> fmt = std::nullopt);  // config from `oboro.config`
// `fmt`: the format the VAE's conv / attention weights are held in (--vae-type; F32 by default).
WeightInfo vae_weight_info(const std::string& path, WFormat fmt = WFormat::F32);  // ae.safetensors or diffusers names
DiTConfig dit_config_of(const std::string& path);
T5Config t5_config_of(const std::string& path);
VaeConfig vae_config_of(const std::string& path);

// Activation bytes of one inference forward, exactly what the models' planners allocate: the models' own dry runs
// (T5Encoder::activation_bytes(cfg, B, L, false), DiT::activation_bytes(cfg, B, L, h, w, false)), equal to their
// activation_bytes() after forward(training = false).
size_t t5_activation_bytes(const T5Config& c, int B, int L);
size_t dit_activation_bytes(const DiTConfig& c, int B, int L, int h, int w);
// One VAE pass over an h×w latent with these options: the untiled plan, or one tile's plan plus the tiling
// buffers (tile in/out and the double-precision blend accumulator).
size_t vae_pass_bytes(const VaeConfig& c, bool encoder, int h, int w, const VaeRunOptions& o,
                      WFormat fmt = WFormat::F32);

struct PlanStage {
  std::string name;          // "text encoder (T5, 23 tokens)"
  std::string component;     // which WeightInfo's weights are held ("" = none)
  size_t weights = 0;        // resident weights held during the stage
  size_t activations = 0;    // planned activations
  size_t buffers = 0;        // host arrays of the stage (latents, text states, images)
  size_t load_copy = 0;      // transient while loading (before activations exist)
  size_t total() const { return weights + (load_copy > activations + buffers ? load_copy : activations + buffers); }
};

struct MemoryPlan {
  std::vector<WeightInfo> weights;
  std::vector<PlanStage> stages;
  std::string shape;           // "736x416, batch 1, CFG (DiT batch 2), 30 steps"
  size_t baseline = 0;         // RSS of the process when the plan was made (binary, libraries, thread pool)
  size_t budget = 0;           // --max-memory, or MemAvailable + baseline
  std::string budget_source;   // "--max-memory" or "MemAvailable"
  size_t peak() const;         // baseline + max stage total
  int peak_stage() const;
  bool fits() const { return peak() <= budget; }
  std::string format() const;  // the table printed before a run
  std::string refusal() const; // the one error when it does not fit: sizes, biggest component, fixes
};

// Process memory (Linux /proc): current and peak resident set (VmRSS, VmHWM), resetting the peak
// (/proc/self/clear_refs 5), and MemAvailable. 0 when unreadable.
size_t current_rss_bytes();
size_t peak_rss_bytes();
void reset_peak_rss();
size_t mem_available_bytes();
// Give freed heap memory back to the OS (so a released component leaves the resident set).
void trim_heap();

// "6G", "6GiB", "512M", "1.5g", "4096" (bytes) → bytes; errors name `what` and the accepted forms.
size_t parse_bytes(const std::string& s, const std::string& what);
std::string fmt_bytes(size_t b);  // "1.23 GiB", "45.6 MiB"

}  // namespace oboro
