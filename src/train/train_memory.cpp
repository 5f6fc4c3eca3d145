#include "train/train_memory.h"
#include "core/error.h"
#include "flow/memory_plan.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include "models/t5.h"
#include "train/train_state.h"
#include <nlohmann/json.hpp>
#include <algorithm>

namespace oboro {

using nlohmann::json;

namespace {

// The checkpoint's model configs (metadata only: nothing is loaded).
void configs_of_checkpoint(const std::string& path, DiTConfig& dc, T5Config& tc, bool& train_te, bool& ema) {
  auto f = SafetensorsFile::open(path);
  auto meta = [&](const char* k) -> const std::string& {
    auto it = f->metadata().find(k);
    if (it == f->metadata().end()) fail(path, ": not an oboro training checkpoint (no '", k, "' metadata)");
    return it->second;
  };
  try {
    dc = DiTConfig::from_json(json::parse(meta("oboro.config")), path);
    tc = T5Config::from_json(json::parse(meta("oboro.t5_config")), path);
    train_te = json::parse(meta("oboro.train_state")).at("train_text_encoder").get<bool>();
  } catch (const json::exception& e) {
    fail(path, ": the checkpoint's metadata is damaged (", e.what(), "): resume from another checkpoint");
  }
  ema = f->has("dit.ema");
}

}  // namespace

TrainMemoryPlan plan_training(const TrainConfig& cfg, const std::string& resume_path, int latent_channels, int stride) {
  DiTConfig dc;
  T5Config tc;
  bool train_te = false, ema = cfg.ema_decay > 0;
  if (!resume_path.empty()) {
    configs_of_checkpoint(resume_path, dc, tc, train_te, ema);
  } else {
    if (!cfg.text_encoder.empty()) {
      tc = t5_config_of(cfg.text_encoder);
    } else {
      tc.vocab_size = cfg.vocab_size;  // an upper bound: a small corpus gives fewer pieces
      tc.d_model = cfg.t5_d_model;
      tc.d_kv = cfg.t5_d_kv;
      tc.num_heads = cfg.t5_heads;
      tc.d_ff = cfg.t5_d_ff;
      tc.num_layers = cfg.t5_layers;
      train_te = cfg.train_text_encoder;
    }
    dc = !cfg.pretrained_model.empty() ? dit_config_of(cfg.pretrained_model)
                                       : new_dit_config(cfg, tc.d_model, latent_channels);
  }
  TrainMemoryPlan p;
  p.dit_params = dc.param_count();
  p.te_params = tc.param_count();
  const size_t F = sizeof(float), P = (size_t)p.dit_params, Q = (size_t)p.te_params;
  // weights + grads + AdamW m, v; EMA weights and the raw copy swapped out while the EMA weights are saved
  p.dit_state = P * F * (4 + (ema ? 2 : 0));
  p.te_state = train_te ? Q * F * (4 + (ema ? 2 : 0)) : Q * F;
  const int B = cfg.train_batch_size, L = cfg.max_token_length;
  const int h = std::max(1, cfg.height / stride), w = std::max(1, cfg.width / stride);
  p.activations = DiT::activation_bytes(dc, B, L, h, w, true) + T5Encoder::activation_bytes(tc, B, L, train_te) +
                  (size_t)6 * B * latent_channels * h * w * F;  // the flow tensors (trainer.cpp)
  p.baseline = current_rss_bytes();
  const size_t avail = mem_available_bytes();
  p.budget = avail ? avail + p.baseline : 0;
  return p;
}

std::string TrainMemoryPlan::refusal(const TrainConfig& cfg) const {
  const bool weights_dominate = dit_state + te_state >= activations;
  return str("not enough memory for this training run: it needs ", fmt_bytes(peak()), " (DiT ", dit_params,
             " parameters: weights, gradients, AdamW moments", cfg.ema_decay > 0 ? ", EMA" : "", " ",
             fmt_bytes(dit_state), "; text encoder ", fmt_bytes(te_state), "; activations of a batch of ",
             cfg.train_batch_size, " at ", cfg.width, "x", cfg.height, " ", fmt_bytes(activations), "; ",
             fmt_bytes(baseline), " already held) but ", fmt_bytes(budget),
             " is available (MemAvailable + the process). Fix: ",
             weights_dominate ? "train a smaller model (model_preset, hidden_size, num_layers) or use a machine with more memory"
                              : "lower train_batch_size (raise gradient_accumulation_steps to keep the batch) or the resolution",
             "; --no-memory-check skips this check");
}

void check_train_memory(const TrainConfig& cfg, const std::string& resume_path, int latent_channels, int stride) {
  const TrainMemoryPlan p = plan_training(cfg, resume_path, latent_channels, stride);
  if (!p.fits()) fail(p.refusal(cfg));
}

}  // namespace oboro
