#include "train/checkpoint.h"
#include "core/base64.h"
#include "core/error.h"
#include "flow/infotext.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "train/lora_save.h"
#include "train/trainer.h"
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

namespace oboro {

namespace fs = std::filesystem;
using nlohmann::json;

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

std::string state_dir(const TrainConfig& cfg) { return (fs::path(cfg.output_dir) / "state").string(); }
std::string state_path(const TrainConfig& cfg, int64_t step) {
  return (fs::path(state_dir(cfg)) / (step_name(step) + ".safetensors")).string();
}
std::string model_path(const TrainConfig& cfg) {
  return (fs::path(cfg.output_dir) / (cfg.output_name + ".safetensors")).string();
}
std::string text_encoder_path(const TrainConfig& cfg) {
  return (fs::path(cfg.output_dir) / (cfg.output_name + ".t5.safetensors")).string();
}

// ---------------------------------------------------------------- training state

void save_state(TrainState& state, const TrainConfig& cfg, const RunData& data) {
  fs::create_directories(state_dir(cfg));
  SafetensorsWriter wr;
  std::vector<std::vector<float>> host;  // the tensors downloaded from the backend, alive until written
  const std::vector<CheckpointTensor> tensors = state.checkpoint_tensors();
  host.reserve(tensors.size());
  for (const CheckpointTensor& t : tensors) {
    host.emplace_back(t.size);
    state.be.download(host.back().data(), t.data, t.size);
    wr.add(t.name, Tensor::borrow(host.back().data(), {(int64_t)host.back().size()}, DType::F32, nullptr));
  }
  json st = {{"step", state.step},
             {"epoch", state.data.epoch},
             {"index", state.data.index},
             {"samples_seen", state.samples_seen},
             {"loss_ema", state.loss_ema},
             {"global_batch", state.global_batch},
             {"lr_scale", state.lr_scale},
             {"train_text_encoder", state.train_te},
             {"skipped_images", data.skipped_images},
             {"config", json::parse(cfg.to_json())}};
  wr.set_metadata("oboro.train_state", st.dump());
  wr.set_metadata("oboro.config", state.dit->config().to_json().dump());
  wr.set_metadata("oboro.t5_config", state.te->t5().config().to_json().dump());
  wr.set_metadata("oboro.tokenizer", base64_encode(state.te->tokenizer().serialized()));
  if (!data.provenance.empty()) wr.set_metadata("oboro.dataset", data.provenance);
  wr.write(state_path(cfg, state.step));
  // Keep the checkpoints of the last save_last_n_steps steps.
  if (cfg.save_last_n_steps > 0) {
    for (auto& e : fs::directory_iterator(state_dir(cfg))) {
      std::string n = e.path().filename().string();
      long long s;
      if (std::sscanf(n.c_str(), "step-%lld.safetensors", &s) == 1 && s < state.step - cfg.save_last_n_steps)
        fs::remove(e.path());
    }
  }
}

std::string latest_state(const std::string& dir) {
  std::string best;
  if (!fs::is_directory(dir)) fail("--resume latest: there is no checkpoint folder ", dir, " (nothing to resume)");
  for (auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && n.size() > 12 && n.substr(n.size() - 12) == ".safetensors" &&
        (best.empty() || n > fs::path(best).filename().string()))
      best = e.path().string();
  }
  if (best.empty()) fail("--resume latest: no step-*.safetensors checkpoint in ", dir);
  return best;
}

void load_state(TrainState& state, const std::string& path, const TrainConfig& cfg, std::string* dataset_provenance) {
  auto f = SafetensorsFile::open(path);
  auto meta = [&](const char* k) -> const std::string& {
    auto it = f->metadata().find(k);
    if (it == f->metadata().end()) fail(path, ": not an oboro training checkpoint (no '", k, "' metadata)");
    return it->second;
  };
  json st = json::parse(meta("oboro.train_state"));
  DiTConfig dc = DiTConfig::from_json(json::parse(meta("oboro.config")), path);
  T5Config tc = T5Config::from_json(json::parse(meta("oboro.t5_config")), path);
  Tokenizer tok = Tokenizer::from_serialized(base64_decode(meta("oboro.tokenizer")));
  state.train_te = st.at("train_text_encoder").get<bool>();
  auto t5 = std::make_unique<T5Encoder>(tc, state.be);
  state.te = std::make_unique<TextEncoder>(std::move(tok), std::move(t5));
  state.dit = std::make_unique<DiT>(dc, state.be);
  state.init_optimizers(cfg);
  for (const CheckpointTensor& b : state.checkpoint_tensors()) {
    if (!f->has(b.name)) fail(path, ": checkpoint tensor ", b.name, " is missing");
    Tensor t = f->tensor_f32(b.name);
    if ((size_t)t.numel() != b.size)
      fail(path, ": checkpoint tensor ", b.name, " has ", t.numel(), " values, the model needs ", b.size,
           " — the checkpoint belongs to a different model config");
    state.be.upload(b.data, t.f32(), b.size);
  }
  state.step = st.at("step").get<int64_t>();
  state.data.epoch = st.at("epoch").get<int64_t>();
  state.data.index = st.at("index").get<int64_t>();
  state.samples_seen = st.at("samples_seen").get<int64_t>();
  state.loss_ema = st.at("loss_ema").get<double>();
  state.global_batch = st.value("global_batch", int64_t(0));
  state.lr_scale = st.value("lr_scale", 1.0);
  if (dataset_provenance) {
    auto it = f->metadata().find("oboro.dataset");
    *dataset_provenance = it != f->metadata().end() ? it->second : "";
  }
  std::fprintf(stderr, "loaded training state %s (step %lld, epoch %lld)\n", path.c_str(), (long long)state.step,
               (long long)state.data.epoch);
}

// ---------------------------------------------------------------- inference files

void save_models(TrainState& state, const TrainConfig& cfg, const RunData& data) {
  if (state.lora) return save_lora_model(state, cfg, data);  // a LoRA run writes its LoRA file
  fs::create_directories(cfg.output_dir);
  EmaWeightsInModels ema(state);  // inference weights: EMA when enabled
  // Both files are written in full before either replaces its old version: a failed export (full disk) leaves
  // the previous model and text encoder as a matching pair.
  StagedFiles files;
  state.te->save(files.stage(text_encoder_path(cfg)));
  json summary = {{"steps", state.step},
                  {"samples_seen", state.samples_seen},
                  {"loss_ema", state.loss_ema},
                  {"dataset", cfg.train_data_dir.empty() ? cfg.dataset_config : cfg.train_data_dir},
                  {"ema", state.has_ema()}};
  std::map<std::string, std::string> md = {{"oboro.text_encoder", fs::path(text_encoder_path(cfg)).filename().string()},
                                           {"oboro.train", summary.dump()},
                                           {"modelspec.title", cfg.output_name},
                                           {"modelspec.resolution", str(cfg.width, "x", cfg.height)},
                                           {"ss_steps", std::to_string(state.step)},
                                           {"ss_learning_rate", py_float(cfg.learning_rate)},
                                           {"ss_optimizer", cfg.optimizer_type},
                                           {"ss_lr_scheduler", cfg.lr_scheduler},
                                           {"ss_seed", std::to_string(cfg.seed)},
                                           {"ss_num_train_images", std::to_string(data.num_images)}};
  if (!data.provenance.empty()) md["oboro.dataset"] = data.provenance;
  state.dit->save(files.stage(model_path(cfg)), md);
  files.commit();
}

// ---------------------------------------------------------------- export (`oboro convert --from-state`)

void export_from_state(Backend& be, const std::string& state_file, bool use_ema, const std::string& out_model_path) {
  auto f = SafetensorsFile::open(state_file);
  auto it = f->metadata().find("oboro.train_state");
  if (it == f->metadata().end())
    fail(state_file, ": not an oboro training checkpoint (no 'oboro.train_state' metadata)");
  json st = json::parse(it->second);
  if (use_ema && !f->has("dit.ema")) fail(state_file, ": this run kept no EMA weights: export with --weights raw");
  TrainConfig cfg = TrainConfig::from_json(st.at("config"));  // the run's settings (model metadata)
  // The export's metadata stays byte-identical to what `convert --from-state` has always written: it recorded
  // the default optimizer_type ("AdamW", whatever the run's spelling) and no dataset_config (oboro.train's
  // "dataset" is the train_data_dir, "" for a dataset_config run). Every other setting the model files use
  // (resolution, learning_rate, lr_scheduler, seed, train_data_dir) is in every checkpoint's config.
  cfg.optimizer_type = TrainConfig().optimizer_type;
  cfg.dataset_config.clear();
  cfg.ema_decay = use_ema ? 0.5f : 0.f;  // any value > 0 makes load_state read the EMA tensors
  fs::path out = out_model_path;
  std::string stem = out.filename().string();
  if (stem.size() > 12 && stem.substr(stem.size() - 12) == ".safetensors") stem.resize(stem.size() - 12);
  cfg.output_dir = out.parent_path().empty() ? "." : out.parent_path().string();
  cfg.output_name = stem;
  TrainState state(be);
  RunData data;  // the images are not opened: ss_num_train_images 0, as the export always wrote
  load_state(state, state_file, cfg, &data.provenance);
  save_models(state, cfg, data);
  std::fprintf(stderr, "wrote %s (%s weights, step %lld) and %s\n", model_path(cfg).c_str(), use_ema ? "EMA" : "raw",
               (long long)state.step, text_encoder_path(cfg).c_str());
}

}  // namespace oboro
