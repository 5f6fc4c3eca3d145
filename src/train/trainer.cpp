// The training loop (trainer.h). train() sets up: config checks, codec, batch source and provenance, the
// models (new, or from a checkpoint). Then every optimizer step:
//   zero grads → micro-steps (batch read on the host and uploaded, text states, I-CFM pair, DiT forward, MSE
//   loss, backward: all on the backend) → gradient norm → AdamW with the clipping scale → EMA → log and
//   progress → sample previews, checkpoint.
#include "train/trainer.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/provenance.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "models/codec.h"
#include "train/batch_source.h"
#include "train/checkpoint.h"
#include "train/samples.h"
#include "train/train_log.h"
#include "train/train_state.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace oboro {

namespace fs = std::filesystem;

namespace {

// The flow-matching tensors of one micro-step, on the backend: (B, C, h, w) like the batch's latents x1,
// except t (B) and the loss (one F64). Sized by the first batch and again when a cache bucket changes the
// latent size.
struct FlowTensors {
  Buffer x1;    // the batch's latents, uploaded from MicroBatch::x1
  Buffer t;     // timesteps
  Buffer xt;    // x_t = t·x1 + (1 − t)·x0 + σ·ε: the DiT's input
  Buffer u;     // target velocity x1 − x0
  Buffer v;     // the DiT's velocity
  Buffer dv;    // dL/dv
  Buffer loss;  // (1) F64: mean((v − u)²)

  void size_for(Backend& be, int B, size_t n) {
    if (t.empty()) {
      t = be.alloc(B, DType::F32, "train.t");
      loss = be.alloc(1, DType::F64, "train.loss");
    }
    for (Buffer* b : {&x1, &xt, &u, &v, &dv})
      if (b->size() != n) *b = be.alloc(n, DType::F32, "train.step");
  }
};

class TrainLoop {
 public:
  TrainLoop(const TrainConfig& cfg, const LatentCodec& codec, BatchSource& data, TrainState& state,
            std::string provenance)
      : cfg_(cfg),
        codec_(codec),
        data_(data),
        state_(state),
        provenance_(std::move(provenance)),
        sigma_(state.dit->config().icfm_sigma),
        sampling_(timestep_sampling_from_name(cfg.timestep_sampling)) {
    sched_.kind = cfg.lr_scheduler;
    sched_.lr = cfg.learning_rate;
    sched_.total_steps = cfg.max_train_steps;
    sched_.warmup_steps = cfg.lr_warmup_steps < 1 && cfg.lr_warmup_steps > 0
                              ? (int64_t)std::llround(cfg.lr_warmup_steps * cfg.max_train_steps)
                              : (int64_t)cfg.lr_warmup_steps;
    sched_.min_lr_ratio = cfg.min_lr_ratio;
  }

  // Trains up to max_train_steps, or `stop_after` steps of this invocation (> 0).
  TrainResult run(int64_t stop_after) {
    const int64_t start_step = state_.step;
    const int64_t samples_per_step = (int64_t)cfg_.train_batch_size * cfg_.gradient_accumulation_steps;
    TrainLog log(cfg_, start_step);
    double last_loss = 0;
    while (state_.step < cfg_.max_train_steps) {
      const auto t0 = std::chrono::steady_clock::now();
      // Gradients of B · gradient_accumulation_steps samples.
      state_.zero_grads();
      double loss_sum = 0;
      for (int micro = 0; micro < cfg_.gradient_accumulation_steps; ++micro) loss_sum += micro_step(micro);
      const double loss = loss_sum / cfg_.gradient_accumulation_steps;
      // Clip (folded into the update as a gradient scale), update, average.
      const double gnorm = state_.grad_norm();
      if (!std::isfinite(gnorm))
        fail("step ", state_.step + 1, ": the gradient is not finite (loss ", loss, ") — no checkpoint was written; "
             "lower learning_rate or max_grad_norm and resume with --resume latest");
      const float lr = (float)sched_.at(state_.step);
      state_.optimizer_step(lr, clip_scale(gnorm, cfg_.max_grad_norm));
      ++state_.step;
      state_.ema_step(cfg_.ema_decay);
      state_.samples_seen += samples_per_step;
      state_.loss_ema = state_.step == 1 ? loss : 0.98 * state_.loss_ema + 0.02 * loss;
      last_loss = loss;
      // Report, then previews and the checkpoint when due.
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      log.record({state_.step, loss, state_.loss_ema, lr, gnorm, (double)samples_per_step / dt, state_.data.epoch,
                  data_.skipped_images()});
      const bool last = state_.step == cfg_.max_train_steps;
      const bool stopping = stop_after > 0 && state_.step - start_step >= stop_after;
      if (cfg_.sample_every_n_steps > 0 && !cfg_.sample_prompts.empty() &&
          (state_.step % cfg_.sample_every_n_steps == 0 || last))
        write_samples(state_, codec_, cfg_);
      if ((cfg_.save_every_n_steps > 0 && state_.step % cfg_.save_every_n_steps == 0) || last || stopping) {
        const RunData run_data{data_.num_images(), data_.skipped_images(), provenance_};
        save_state(state_, cfg_, run_data);
        save_models(state_, cfg_, run_data);
        log.write_loss_plot();
      }
      if (stopping) break;
    }
    log.end_progress();
    TrainResult r;
    r.steps = state_.step;
    r.final_loss = last_loss;
    r.model_path = model_path(cfg_);
    r.text_encoder_path = text_encoder_path(cfg_);
    r.state_path = state_path(cfg_, state_.step);
    return r;
  }

 private:
  // Forward and backward of micro-batch `micro` of the current step, gradients scaled by 1/accumulation
  // steps and added to the models' gradients. Returns the batch's loss.
  double micro_step(int micro) {
    const int B = cfg_.train_batch_size;
    const StepRng rng{cfg_.seed, (uint64_t)(state_.step * cfg_.gradient_accumulation_steps + micro)};
    Backend& be = state_.be;
    data_.next(state_.data, rng, batch_);
    const int64_t per = (int64_t)codec_.channels() * batch_.h * batch_.w;  // one latent: C·h·w
    flow_.size_for(be, B, batch_.x1.size());
    TextBatch txt = data_.text(batch_.captions);  // hidden (B, L, dim), mask (B, L)
    be.upload(flow_.x1.f32(), batch_.x1.data(), batch_.x1.size());
    be.icfm_pair(flow_.t.f32(), flow_.xt.f32(), flow_.u.f32(), flow_.x1.f32(), B, per,
                 icfm_draw(rng, sigma_, sampling_));
    state_.dit->forward(flow_.v.f32(), flow_.xt.f32(), flow_.t.f32(), txt.hidden.f32(), txt.mask.f32(), B, txt.L,
                        batch_.h, batch_.w, true);
    be.mse_forward(flow_.loss.f64(), flow_.v.f32(), flow_.u.f32(), flow_.v.size());
    double loss = 0;
    be.download(&loss, flow_.loss.f64(), 1);
    if (!std::isfinite(loss)) {
      std::string list;
      for (auto& f : batch_.files) list += (list.empty() ? "" : ", ") + fs::path(f).filename().string();
      fail("step ", state_.step + 1, ": the loss is ", loss, " on the batch [", list,
           "] — training stopped and no checkpoint was written; the last saved checkpoint in ", state_dir(cfg_),
           " is intact: lower learning_rate (now ", py_float(cfg_.learning_rate), ") and resume with --resume latest");
    }
    be.zero(flow_.dv.f32(), flow_.dv.size());
    be.mse_backward(flow_.dv.f32(), flow_.v.f32(), flow_.u.f32(), flow_.v.size(),
                    1.f / cfg_.gradient_accumulation_steps);
    // dL/dhidden (B, L, dim) for a trained text encoder.
    Buffer dtxt = state_.train_te ? be.alloc(txt.hidden.size(), DType::F32, "train.dtxt") : Buffer();
    state_.dit->backward(flow_.dv.f32(), state_.train_te ? dtxt.f32() : nullptr);
    if (state_.train_te) state_.te->backward(dtxt.f32());
    return loss;
  }

  const TrainConfig& cfg_;
  const LatentCodec& codec_;
  BatchSource& data_;
  TrainState& state_;
  const std::string provenance_;  // DatasetSummary JSON for `oboro.dataset` ("" = no manifest)
  const float sigma_;             // I-CFM noise σ of the DiT
  const TimestepSampling sampling_;
  LrSchedule sched_;
  MicroBatch batch_;              // reused every micro-step
  FlowTensors flow_;
};

}  // namespace

TrainResult train(const TrainConfig& cfg, Backend& be, const std::string& resume_state, int64_t stop_after) {
  if (cfg.threads > 0) set_num_threads(cfg.threads);
  cfg.validate();
  const LatentCodec codec = LatentCodec::open(cfg.codec, cfg.pixels_stride, cfg.vae, be, "vae =");
  // The data, its provenance checked before anything else runs.
  ProvenanceCheck prov;
  std::unique_ptr<BatchSource> data = open_batch_source(cfg, codec, prov);
  if (prov.has_manifest) {
    std::string lic;
    for (const auto& [l, n] : prov.summary.licenses) lic += str(lic.empty() ? "" : ", ", l, " ", n);
    std::fprintf(stderr, "provenance: %zu images in %zu manifest(s), licences %s, digest %s\n", prov.summary.images,
                 prov.manifests.size(), lic.c_str(), prov.summary.digest.c_str());
  }
  // The models: from a checkpoint, or new.
  TrainState state(be);
  if (!resume_state.empty()) {
    load_state(state, resume_state == "latest" ? latest_state(state_dir(cfg)) : resume_state, cfg);
  } else {
    state.create_models(cfg, codec, *data);
    state.init_optimizers(cfg);
    state.load_network_weights(cfg);
  }
  // What this invocation trains on (a resumed run records the data it continues with).
  std::string provenance = prov.has_manifest ? prov.summary.to_json() : "";
  std::fprintf(stderr, "model: DiT %lld parameters%s, text encoder %zu parameters (%s)\n",
               (long long)state.dit->config().param_count(), "", state.te->t5().layout().total(),
               state.train_te ? "trained jointly" : "frozen");
  if (state.lora)  // the memory that differs from a full fine-tune: the base once, 4–5 copies of the LoRA only
    std::fprintf(stderr, "LoRA: %zu modules, %zu parameters (dim %d, alpha %g, %s); the DiT is frozen: %.1f MiB "
                 "of weights without gradients or moments, LoRA state %.1f KiB (weights, gradients, AdamW m, v%s)\n",
                 state.lora->num_modules(), state.lora->num_params(), state.lora->settings().dim,
                 state.lora->settings().alpha, state.lora->settings().args_json().c_str(),
                 state.dit->weight_bytes() / 1048576.0, state.lora->num_params() * 4.0 * (state.has_ema() ? 5 : 4) / 1024,
                 state.has_ema() ? ", EMA" : "");
  data->set_text_encoder(*state.te, state.train_te);
  if (cfg.mixed_precision == "bf16") std::fprintf(stderr, "mixed precision: bf16 GEMMs, F32 master weights\n");
  TrainResult res;
  {
    MatmulPrecisionScope precision(be, cfg.mixed_precision == "bf16" ? MatmulPrecision::BF16 : MatmulPrecision::F32);
    res = TrainLoop(cfg, codec, *data, state, std::move(provenance)).run(stop_after);
  }
  data->report(res);
  return res;
}

}  // namespace oboro
