// The training loop (trainer.h). train() sets up: config checks, codec, batch source and provenance, the
// models (new, or from a checkpoint). Then every optimizer step:
//   zero grads → micro-steps (batch read on the host and uploaded, text states, I-CFM pair, DiT forward, MSE
//   loss, backward: all on the backend) → gradient norm → AdamW with the clipping scale → EMA → log and
//   progress → sample previews, checkpoint.
#include "train/trainer.h"
#include "core/crash_point.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/provenance.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "models/codec.h"
#include "train/batch_source.h"
#include "train/checkpoint.h"
#include "train/lora_save.h"
#include "train/run_folder.h"
#include "train/train_memory.h"
#include "train/samples.h"
#include "train/train_log.h"
#include "train/train_state.h"
#include "dist/fault_hook.h"
#include "train/notify.h"
#include "train/spike_guard.h"
#include "dist/grad_sync.h"
#include <algorithm>
#include <optional>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace oboro {

namespace fs = std::filesystem;

namespace {

// What to do after a stop: resume from the newest checkpoint that exists (named), or — when none was saved yet —
// start again; never advice to resume from a state that is not there.
std::string resume_advice(const TrainConfig& cfg) {
  try {
    return "resume from the last saved checkpoint, " + latest_state(state_dir(cfg)) + ", with --resume latest";
  } catch (const Error&) {
    return "start again (no checkpoint was saved yet, so there is nothing to resume)";
  }
}

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

template <class... Args>
[[noreturn]] void fail_collective_all(const Args&... a) {
  throw dist::CollectiveError(str(a...), 0);
}

class TrainLoop {
 public:
  TrainLoop(const TrainConfig& cfg, const LatentCodec& codec, BatchSource& data, TrainState& state,
            std::string provenance, dist::Communicator& comm)
      : comm_(comm),
        grads_(state.be, comm, cfg.gradient_accumulation_steps),
        writer_(comm.rank() == 0),
        guard_(cfg),
        notifier_(comm.rank() == 0 ? cfg.notify_url : ""),
        cfg_(cfg),
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
    const int64_t samples_per_step = global_batch(cfg_, comm_.size());
    if (writer_) log_.emplace(cfg_, start_step);
    t_run_ = std::chrono::steady_clock::now();
    start_step_ = start_step;
    notify("start", 0);
    double last_loss = 0;
    // Resumed at the end: the run was stopped after its last checkpoint, maybe inside the export. Write the
    // model files again from that state (the same bytes an unbroken export writes).
    if (state_.step >= cfg_.max_train_steps && writer_) save_outputs();
    while (state_.step < cfg_.max_train_steps) {
      const auto t0 = std::chrono::steady_clock::now();
      comm_.set_step(state_.step);
      if (guard_.skip_data_at(state_.step + 1)) read_past_step();
      // Gradients of ranks · B · gradient_accumulation_steps samples, summed in global micro-batch order.
      const double loss = accumulate_gradients();
      const double gnorm = std::isfinite(loss) ? state_.grad_norm() : loss;
      if (guard_.enabled()) {
        const std::string why = guard_.check(state_.step + 1, loss, gnorm);
        if (!why.empty()) {
          roll_back(why, loss);
          continue;
        }
      }
      check_finite(loss, gnorm);
      // Clip (folded into the update as a gradient scale), update, average.
      const float lr = (float)(sched_.at(state_.step) * state_.lr_scale);
      state_.optimizer_step(lr, clip_scale(gnorm, cfg_.max_grad_norm));
      ++state_.step;
      state_.ema_step(cfg_.ema_decay);
      state_.samples_seen += samples_per_step;
      state_.loss_ema = state_.step == 1 ? loss : 0.98 * state_.loss_ema + 0.02 * loss;
      last_loss = loss;
      // Report, then previews and the checkpoint when due.
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (writer_)
        log_->record({state_.step, loss, state_.loss_ema, lr, gnorm, (double)samples_per_step / dt, state_.data.epoch,
                      data_.skipped_images()});
      const bool stopping = stop_after > 0 && state_.step - start_step >= stop_after;
      if (writer_) write_outputs(loss, stopping);
      dist::test_fault_point(comm_.rank(), state_.step);
      if (stopping) break;
    }
    if (writer_) log_->end_progress();
    comm_.barrier();  // every rank leaves after rank 0's last checkpoint is written
    if (writer_ && comm_.size() > 1) {
      const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run_).count();
      std::fprintf(stderr, "data parallel: %d ranks (%s), gradient and loss sums %.2f s of %.2f s (%.1f%%)\n",
                   comm_.size(), comm_.name(), grads_.comm_seconds(), total, 100 * grads_.comm_seconds() / total);
    }
    notify("finish", last_loss);
    if (writer_ && notifier_.failures() > 0)
      std::fprintf(stderr, "warning: %d notification(s) to %s failed\n", notifier_.failures(), cfg_.notify_url.c_str());
    TrainResult r;
    r.steps = state_.step;
    r.final_loss = last_loss;
    r.model_path = model_path(cfg_);
    r.text_encoder_path = text_encoder_path(cfg_);
    r.state_path = state_path(cfg_, state_.step);
    return r;
  }

  // A run without the spike guard stops on a non-finite loss or gradient (the last checkpoint stays the latest).
  void check_finite(double loss, double gnorm) {
    if (!std::isfinite(loss))
      fail_collective("step ", state_.step + 1, ": the loss is ", loss, bad_batch_.empty() ? "" : " on the batch [",
                      bad_batch_, bad_batch_.empty() ? "" : "]", " — training stopped and no checkpoint was written; "
                      "lower learning_rate (now ", py_float(cfg_.learning_rate), ") and ", resume_advice(cfg_),
                      " (or set spike_max_rollbacks to roll back automatically)");
    if (!std::isfinite(gnorm))
      fail_collective("step ", state_.step + 1, ": the gradient is not finite (loss ", loss, ") — no checkpoint was "
                      "written; lower learning_rate or max_grad_norm and ", resume_advice(cfg_));
  }

  // Rank 0 after a step: sample previews and the checkpoint when due.
  void write_outputs(double loss, bool stopping) {
    const bool last = state_.step == cfg_.max_train_steps;
    if (cfg_.sample_every_n_steps > 0 && !cfg_.sample_prompts.empty() &&
        (state_.step % cfg_.sample_every_n_steps == 0 || last)) {
      write_samples(state_, codec_, cfg_);
      const fs::path grid = fs::path(cfg_.output_dir) / "samples" / (step_name(state_.step) + ".png");
      if (fs::exists(grid)) last_sample_ = grid.string();
    }
    if ((cfg_.save_every_n_steps > 0 && state_.step % cfg_.save_every_n_steps == 0) || last || stopping) {
      save_outputs();
      notify("checkpoint", loss, {{"checkpoint", state_path(cfg_, state_.step)}});
    }
  }

  // Rank 0: the model files, then the checkpoint (so a checkpoint never exists without the model files of its
  // step), then the loss plot.
  void save_outputs() {
    RunData run_data{data_.num_images(), data_.skipped_images(), provenance_, ""};
    if (state_.lora) {  // ss_tag_frequency of the LoRA file (captions read once per run)
      if (tag_frequency_.empty())
        tag_frequency_ = kohya_tag_frequency(!cfg_.train_data_dir.empty() ? cfg_.train_data_dir
                                             : !cfg_.dataset_config.empty() ? cfg_.dataset_config : cfg_.cache_dir,
                                             data_.captions());
      run_data.tag_frequency = tag_frequency_;
    }
    save_models(state_, cfg_, run_data);
    save_state(state_, cfg_, run_data);
    log_->write_loss_plot();
    crash_point("train.saved");
  }

  // A loss spike at step state_.step + 1: back to the newest checkpoint, that step's data skipped when the run
  // reaches it again, the learning rate scaled; the run stops when the rollback budget is spent.
  void roll_back(const std::string& why, double loss) {
    const int64_t spike = state_.step + 1;
    const std::string head = str("step ", spike, ": loss spike (", why, ")");
    notify("spike", loss, {{"reason", why}});
    if (guard_.rollbacks() >= cfg_.spike_max_rollbacks) {
      fail_collective(head, " — gave up after ", guard_.rollbacks(), " rollback(s) (spike_max_rollbacks = ",
                      cfg_.spike_max_rollbacks, "); the checkpoints in ", state_dir(cfg_), " are intact: check the "
                      "data near this step, lower learning_rate and resume with --resume latest");
    }
    const std::string ckpt = newest_checkpoint();
    if (ckpt.empty())
      fail_collective(head, " — there is no checkpoint to roll back to yet: set save_every_n_steps (the guard "
                      "rolls back to the newest one)");
    const double scale = state_.lr_scale * cfg_.spike_lr_factor;
    load_state(state_, ckpt, cfg_);
    data_.set_text_encoder(*state_.te, state_.train_te);  // the models were rebuilt
    state_.lr_scale = scale;
    guard_.rollback(spike, state_.step);
    if (writer_) {
      std::fprintf(stderr, "%s: rolled back to step %lld, its data will be skipped, learning rate × %g (rollback %d of "
                   "%d)\n", head.c_str(), (long long)state_.step, scale, guard_.rollbacks(), cfg_.spike_max_rollbacks);
      nlohmann::json ev = {{"event", "rollback"}, {"step", spike},          {"reason", why},
                           {"rollback_to", state_.step}, {"lr_scale", scale}, {"rollbacks", guard_.rollbacks()}};
      if (std::isfinite(loss)) ev["loss"] = loss;
      log_->event(ev.dump());
      log_->write_loss_plot();
    }
    notify("rollback", loss, {{"reason", why}, {"rollback_to", state_.step}, {"lr_scale", scale}});
  }

  std::string newest_checkpoint() const {
    try {
      return latest_state(state_dir(cfg_));
    } catch (const Error&) {
      return "";
    }
  }

  // Reads past the N micro-batches of the current step (the data of a step that spiked).
  void read_past_step() {
    const int N = comm_.size() * cfg_.gradient_accumulation_steps;
    for (int k = 0; k < N; ++k) data_.next(state_.data, StepRng{cfg_.seed, (uint64_t)(state_.step * N + k)}, skipped_);
  }

  // A notification from rank 0 with the run's fields (train/notify.h).
  void notify(const char* event, double loss, nlohmann::json extra = nlohmann::json::object()) {
    if (!writer_ || !notifier_.enabled()) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run_).count();
    const int64_t done = state_.step - start_step_;
    extra["run"] = cfg_.output_name;
    extra["output_dir"] = cfg_.output_dir;
    extra["step"] = state_.step;
    extra["max_train_steps"] = cfg_.max_train_steps;
    if (std::isfinite(loss)) extra["loss"] = loss;
    extra["eta_s"] = done > 0 ? el / (double)done * (double)(cfg_.max_train_steps - state_.step) : -1.0;
    extra["last_sample"] = last_sample_;
    extra["ranks"] = comm_.size();
    notifier_.send(event, std::move(extra));
  }

 private:
  // The step's gradient in the models' gradient buffers (every rank the same bits) and its mean loss.
  // Micro-batch k (0 ≤ k < N = ranks · gradient_accumulation_steps) of step s reads the data at its place in the
  // stream and draws from StepRng(seed, s·N + k), whatever the world size; rank r computes k = r·A … r·A + A − 1
  // and reads past the others' (dist/grad_sync.h: the fixed reduction order).
  double accumulate_gradients() {
    const int A = cfg_.gradient_accumulation_steps, N = comm_.size() * A;
    std::vector<double> losses(A);
    bad_batch_.clear();
    if (grads_.passthrough()) state_.zero_grads();
    for (int k = 0; k < N; ++k) {
      const StepRng rng{cfg_.seed, (uint64_t)(state_.step * N + k)};
      if (k / A != comm_.rank()) {
        data_.next(state_.data, rng, skipped_);  // another rank's micro-batch: only the position moves on
        continue;
      }
      if (!grads_.passthrough()) state_.zero_grads();
      losses[k % A] = micro_step(rng, N);
      grads_.collect(k % A, gradient_spans());
    }
    grads_.reduce(gradient_spans());
    return grads_.sum_losses(losses) / N;
  }

  // The gradients of every trained parameter (what optimizer_step updates), in a fixed order.
  std::vector<dist::GradSpan> gradient_spans() {
    std::vector<dist::GradSpan> g;
    if (state_.lora)  // a LoRA run trains the LoRA alone (the DiT is frozen: no weight gradients)
      g.push_back({state_.lora->grads(), state_.lora->num_params()});
    else
      g.push_back({state_.dit->grads(), state_.dit->num_params()});
    if (state_.train_te) g.push_back({state_.te->t5().grads(), state_.te->t5().layout().total()});
    return g;
  }

  // An error every rank raises alike (from summed values): rank 0 reports it, the others exit quietly.
  template <class... Args>
  [[noreturn]] void fail_collective(const Args&... a) {
    throw dist::CollectiveError(str(a...), comm_.rank());
  }

  // Forward and backward of one micro-batch with the step's streams `rng`, the gradient scaled by 1/N (N =
  // micro-batches of the step on all ranks) and added to the models' gradients. Returns the batch's loss.
  double micro_step(const StepRng& rng, int N) {
    const int B = cfg_.train_batch_size;
    Backend& be = state_.be;
    const DataPosition at = state_.data;
    data_.next(state_.data, rng, batch_);
    if (const float f = test_corrupt_factor(at.epoch, at.index); f != 1.f)
      for (float& x : batch_.x1) x *= f;
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
    if (!std::isfinite(loss) && bad_batch_.empty())  // named when the step's summed loss is not finite
      for (auto& f : batch_.files) bad_batch_ += (bad_batch_.empty() ? "" : ", ") + fs::path(f).filename().string();
    be.zero(flow_.dv.f32(), flow_.dv.size());
    be.mse_backward(flow_.dv.f32(), flow_.v.f32(), flow_.u.f32(), flow_.v.size(), 1.f / N);
    // dL/dhidden (B, L, dim) for a trained text encoder.
    Buffer dtxt = state_.train_te ? be.alloc(txt.hidden.size(), DType::F32, "train.dtxt") : Buffer();
    state_.dit->backward(flow_.dv.f32(), state_.train_te ? dtxt.f32() : nullptr);
    if (state_.train_te) state_.te->backward(dtxt.f32());
    return loss;
  }

  dist::Communicator& comm_;
  dist::GradientSum grads_;  // the step's gradient reduction (one place: dist/grad_sync.h)
  const bool writer_;        // rank 0: writes logs, samples, checkpoints, sends notifications
  SpikeGuard guard_;
  Notifier notifier_;
  std::optional<TrainLog> log_;
  std::chrono::steady_clock::time_point t_run_;
  int64_t start_step_ = 0;
  std::string last_sample_;  // the newest sample grid ("" = none yet)
  const TrainConfig& cfg_;
  const LatentCodec& codec_;
  BatchSource& data_;
  TrainState& state_;
  const std::string provenance_;  // DatasetSummary JSON for `oboro.dataset` ("" = no manifest)
  std::string tag_frequency_;     // a LoRA run's ss_tag_frequency, computed at its first save
  const float sigma_;             // I-CFM noise σ of the DiT
  const TimestepSampling sampling_;
  LrSchedule sched_;
  MicroBatch batch_;              // reused every micro-step
  MicroBatch skipped_;            // other ranks' micro-batches, read past
  std::string bad_batch_;         // files of this rank's first micro-batch of the step with a non-finite loss
  FlowTensors flow_;
};

}  // namespace

namespace {

// A resumed run must keep the checkpoint's global batch when the world size changed (the micro-batch places
// and the reduction order follow from it): names the gradient_accumulation_steps that keeps it.
void check_global_batch(const TrainState& state, const TrainConfig& cfg, int ranks) {
  const int64_t now = global_batch(cfg, ranks);
  if (state.global_batch == 0 || state.global_batch == now) return;
  const int64_t per = (int64_t)ranks * cfg.train_batch_size;
  fail_collective_all("the checkpoint was trained with ", state.global_batch, " samples per step, this run has ", ranks,
                      " rank(s) × train_batch_size ", cfg.train_batch_size, " × gradient_accumulation_steps ",
                      cfg.gradient_accumulation_steps, " = ", now, ": ",
                      state.global_batch % per == 0
                          ? str("set gradient_accumulation_steps = ", state.global_batch / per,
                                " to continue the same run on ", ranks, " rank(s)")
                          : str("choose ranks × train_batch_size × gradient_accumulation_steps = ", state.global_batch));
}

}  // namespace

TrainResult train(const TrainConfig& cfg, Backend& be, const std::string& resume_state, int64_t stop_after,
                  dist::Communicator* comm_in) {
  dist::SingleProcess single;
  dist::Communicator& comm = comm_in ? *comm_in : single;
  if (cfg.threads > 0) set_num_threads(cfg.threads);
  cfg.validate();
  const LatentCodec codec = LatentCodec::open(cfg.codec, cfg.pixels_stride, cfg.vae, be, "vae =");
  // The data, its provenance checked before anything else runs.
  ProvenanceCheck prov;
  std::unique_ptr<BatchSource> data = open_batch_source(cfg, codec, prov);
  if (prov.has_manifest && comm.rank() == 0) {
    std::string lic;
    for (const auto& [l, n] : prov.summary.licenses) lic += str(lic.empty() ? "" : ", ", l, " ", n);
    std::fprintf(stderr, "provenance: %zu images in %zu manifest(s), licences %s, digest %s\n", prov.summary.images,
                 prov.manifests.size(), lic.c_str(), prov.summary.digest.c_str());
  }
  // The output folder, locked for the run (nothing is written before the data's checks); an earlier run's files
  // are refused or removed; the checkpoint must match the config's model; the plan must fit in memory. Rank 0 alone
  // owns the folder (the other ranks of an MPI run write nothing there).
  std::optional<RunFolder> folder;
  if (comm.rank() == 0) folder.emplace(cfg, !resume_state.empty());
  const std::string resume_path =
      resume_state.empty() ? "" : resume_state == "latest" ? latest_state(state_dir(cfg)) : resume_state;
  if (!resume_path.empty()) check_resume_config(resume_path, cfg);
  if (cfg.memory_check) check_train_memory(cfg, resume_path, codec.channels(), codec.stride);
  // The models: from a checkpoint, or new.
  TrainState state(be);
  if (!resume_state.empty()) {
    load_state(state, resume_path, cfg);
    check_global_batch(state, cfg, comm.size());
  } else {
    state.create_models(cfg, codec, *data);
    state.init_optimizers(cfg);
    state.load_network_weights(cfg);
  }
  // What this invocation trains on (a resumed run records the data it continues with).
  std::string provenance = prov.has_manifest ? prov.summary.to_json() : "";
  if (comm.rank() == 0)
    std::fprintf(stderr, "model: DiT %lld parameters%s, text encoder %zu parameters (%s)\n",
                 (long long)state.dit->config().param_count(), "", state.te->t5().layout().total(),
                 state.train_te ? "trained jointly" : "frozen");
  if (state.lora && comm.rank() == 0)  // the memory that differs from a full fine-tune: the base once, 4–5 copies of the LoRA only
    std::fprintf(stderr, "LoRA: %zu modules, %zu parameters (dim %d, alpha %g, %s); the DiT is frozen: %.1f MiB "
                 "of weights without gradients or moments, LoRA state %.1f KiB (weights, gradients, AdamW m, v%s)\n",
                 state.lora->num_modules(), state.lora->num_params(), state.lora->settings().dim,
                 state.lora->settings().alpha, state.lora->settings().args_json().c_str(),
                 state.dit->weight_bytes() / 1048576.0, state.lora->num_params() * 4.0 * (state.has_ema() ? 5 : 4) / 1024,
                 state.has_ema() ? ", EMA" : "");
  data->set_text_encoder(*state.te, state.train_te);
  if (comm.size() > 1 && comm.rank() == 0)
    std::fprintf(stderr, "data parallel: %d ranks (%s) × train_batch_size %d × gradient_accumulation_steps %d = %lld "
                 "samples per step\n", comm.size(), comm.name(), cfg.train_batch_size, cfg.gradient_accumulation_steps,
                 (long long)global_batch(cfg, comm.size()));
  if (cfg.mixed_precision == "bf16" && comm.rank() == 0)
    std::fprintf(stderr, "mixed precision: bf16 GEMMs, F32 master weights\n");
  TrainResult res;
  {
    MatmulPrecisionScope precision(be, cfg.mixed_precision == "bf16" ? MatmulPrecision::BF16 : MatmulPrecision::F32);
    state.global_batch = global_batch(cfg, comm.size());
    try {
      res = TrainLoop(cfg, codec, *data, state, std::move(provenance), comm).run(stop_after);
    } catch (const std::exception& e) {
      if (comm.rank() == 0)
        notify_event(cfg.notify_url, "failure", {{"run", cfg.output_name}, {"output_dir", cfg.output_dir},
                                                 {"step", state.step}, {"error", e.what()}});
      throw;
    }
  }
  data->report(res);
  return res;
}

}  // namespace oboro
