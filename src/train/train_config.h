// The settings of `oboro train`: one struct, and one table of its fields (train_config.cpp) that drives
// the TOML reader, the JSON written into checkpoints and model metadata, and the JSON read back.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace oboro {

struct TrainConfig {
  // model
  std::string pretrained_model;          // DiT file to fine-tune ("" = new model)
  std::string model_preset = "tiny";     // tiny | small | oboro-1b (new model)
  std::string head_schedule = "mmh";     // mmh | uniform
  int hidden_size = 0, num_layers = 0, ffn_hidden_size = 0;  // override the preset when > 0
  std::string codec = "pixels";
  std::string vae;  // codec flux-vae: the FLUX.1 VAE file that encodes the training images (latent = scaled mean)
  int pixels_stride = 1, patch_size = 2;
  // LoRA (train/lora_network.h), kohya's names: network_module "lora" (or "networks.lora") trains a LoRA of
  // pretrained_model (frozen) instead of the whole DiT; "" = full training
  std::string network_module;
  int network_dim = 4;
  float network_alpha = 0.f;              // 0 = network_dim (scale alpha/dim = 1)
  std::vector<std::string> network_args;  // "targets=attention,feed_forward,…", "blocks=0-3,6"
  std::string network_weights;            // a LoRA file to continue from
  bool lora() const { return !network_module.empty(); }
  // text encoder
  std::string text_encoder;              // frozen T5 file/dir; "" = train a small T5 from scratch
  bool train_text_encoder = true;        // only for the from-scratch T5
  int vocab_size = 256, t5_d_model = 64, t5_layers = 2, t5_heads = 4, t5_d_kv = 16, t5_d_ff = 128;
  int max_token_length = 64;
  // data
  std::string train_data_dir, dataset_config;
  // or pre-encoded data from `oboro data cache` (train/cached_data.h): batches per bucket, each bucket's size
  std::string manifest, cache_dir;
  int cache_stage = 1;
  int width = 32, height = 32;           // `resolution`
  // provenance (data/provenance.h): with a manifest.jsonl beside the images, every image must be
  // listed with an allowed licence; require_license also refuses data without a manifest
  std::vector<std::string> license_allow;  // SPDX ids; empty = LicensePolicy::default_allow()
  bool require_license = false;
  // run
  std::string output_dir = "output", output_name = "oboro";
  int train_batch_size = 16, gradient_accumulation_steps = 1;
  int64_t max_train_steps = 1000;
  double learning_rate = 2e-4;
  std::string lr_scheduler = "constant_with_warmup";
  double lr_warmup_steps = 0;            // steps, or a ratio of max_train_steps when < 1
  double min_lr_ratio = 0.0;
  std::string optimizer_type = "AdamW";
  float adam_beta1 = 0.9f, adam_beta2 = 0.999f, adam_epsilon = 1e-8f, weight_decay = 0.01f;
  float max_grad_norm = 1.0f;            // 0 = no clipping
  float ema_decay = 0.f;                 // 0 = no EMA
  uint64_t seed = 42;
  float caption_dropout_rate = 0.1f;
  std::string timestep_sampling = "uniform";
  // "no" (F32) or "bf16": the Linear GEMMs (forward, dx, dw) of the DiT and the jointly trained T5 take BF16
  // operands with F32 accumulation; master weights, optimizer, norms, softmax and attention stay F32
  // (ops/backend.h, MatmulPrecision). kohya's name; "fp16" is refused (no F16 GEMM on the CPU).
  std::string mixed_precision = "no";
  int64_t save_every_n_steps = 0;        // 0 = only at the end
  int64_t save_last_n_steps = 0;         // keep checkpoints of the last N steps (0 = keep all)
  std::string sample_prompts;            // file, one kohya prompt line per line
  int64_t sample_every_n_steps = 0;
  int sample_steps = 20;
  float sample_cfg = 4.f;
  int threads = 0;
  // data parallel (docs/distributed.md): seconds a rank waits for the others in a collective before the run is
  // stopped as hung (every rank exits != 0 naming the missing rank)
  double collective_timeout = 600;
  // notifications (train/notify.h): JSON POSTs on start, checkpoint, spike, rollback, failure, finish ("" = none)
  std::string notify_url;
  // loss-spike guard (train/spike_guard.h): with spike_max_rollbacks > 0, a non-finite loss or gradient norm, or
  // (spike_factor > 0) a loss above spike_factor × the median of the last spike_window step losses, rolls the run
  // back to the last checkpoint, skips the offending step's batches, scales the learning rate by spike_lr_factor;
  // after spike_max_rollbacks rollbacks the run stops. 0 = off: a non-finite loss stops the run.
  int spike_max_rollbacks = 0;
  double spike_factor = 0;
  int spike_window = 50;
  double spike_lr_factor = 0.5;
  bool progress = true;                  // API/CLI only (not a TOML key, not in the JSON)
  bool overwrite = false;                // API/CLI only: a new run may delete an earlier run's files (train/run_folder.h)
  bool memory_check = true;              // API/CLI only: refuse a run whose memory plan exceeds the budget

  // Flat kohya-style keys (tables such as [model] only group them); unknown keys, wrong types and invalid
  // TOML are errors naming the file (and line); paths are taken relative to the config file.
  static TrainConfig from_toml(const std::string& path);
  // The settings that shape the weights (not output/sample/save/thread settings): the `config` object of
  // a checkpoint's `oboro.train_state` metadata.
  std::string to_json() const;
  // The reverse of to_json(): the keys present overwrite the defaults (older checkpoints may lack some).
  static TrainConfig from_json(const nlohmann::json& config);
  // The checks train() runs before loading anything: errors name the setting and the fix.
  void validate() const;
};

}  // namespace oboro
