#include "train/trainer.h"
#include "core/base64.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "data/cache.h"
#include "data/dataset.h"
#include "data/provenance.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "flow/sampler.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/codec.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include "train/optim.h"
#include "train/cached_data.h"
#include "train/plot.h"
#include <nlohmann/json.hpp>
#include <toml++/toml.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

namespace oboro {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- config

TrainConfig TrainConfig::from_toml(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    fail(path, ":", e.source().begin.line, ": invalid TOML: ", e.description());
  }
  TrainConfig c;
  std::set<std::string> used;
  // Flat kohya-style keys; tables ([model], [train], ...) are only grouping and are flattened.
  std::map<std::string, const toml::node*> keys;
  std::function<void(const toml::table&)> flatten = [&](const toml::table& t) {
    for (auto&& [k, v] : t) {
      if (v.is_table()) flatten(*v.as_table());
      else keys[std::string(k.str())] = &v;
    }
  };
  flatten(root);
  auto where = [&](const std::string& k) { return str(path, ": ", k); };
  auto get_str = [&](const char* k, std::string& dst) {
    if (auto it = keys.find(k); it != keys.end()) {
      used.insert(k);
      if (!it->second->is_string()) fail(where(k), " must be a string");
      dst = it->second->as_string()->get();
    }
  };
  auto get_num = [&](const char* k, auto& dst) {
    if (auto it = keys.find(k); it != keys.end()) {
      used.insert(k);
      if (auto i = it->second->as_integer()) dst = (std::remove_reference_t<decltype(dst)>)i->get();
      else if (auto f = it->second->as_floating_point()) dst = (std::remove_reference_t<decltype(dst)>)f->get();
      else fail(where(k), " must be a number");
    }
  };
  auto get_bool = [&](const char* k, bool& dst) {
    if (auto it = keys.find(k); it != keys.end()) {
      used.insert(k);
      if (!it->second->is_boolean()) fail(where(k), " must be true or false");
      dst = it->second->as_boolean()->get();
    }
  };
  get_str("pretrained_model", c.pretrained_model);
  get_str("model_preset", c.model_preset);
  get_str("head_schedule", c.head_schedule);
  get_num("hidden_size", c.hidden_size);
  get_num("num_layers", c.num_layers);
  get_num("ffn_hidden_size", c.ffn_hidden_size);
  get_str("codec", c.codec);
  get_str("vae", c.vae);
  get_num("pixels_stride", c.pixels_stride);
  get_num("patch_size", c.patch_size);
  get_str("text_encoder", c.text_encoder);
  get_bool("train_text_encoder", c.train_text_encoder);
  get_num("vocab_size", c.vocab_size);
  get_num("t5_d_model", c.t5_d_model);
  get_num("t5_layers", c.t5_layers);
  get_num("t5_heads", c.t5_heads);
  get_num("t5_d_kv", c.t5_d_kv);
  get_num("t5_d_ff", c.t5_d_ff);
  get_num("max_token_length", c.max_token_length);
  get_str("train_data_dir", c.train_data_dir);
  get_str("dataset_config", c.dataset_config);
  get_str("manifest", c.manifest);
  get_str("cache_dir", c.cache_dir);
  get_num("cache_stage", c.cache_stage);
  if (auto it = keys.find("license_allow"); it != keys.end()) {
    used.insert("license_allow");
    const toml::array* a = it->second->as_array();
    if (!a) fail(where("license_allow"), " must be an array of SPDX licence ids, e.g. [\"CC0-1.0\", \"CC-BY-4.0\"]");
    for (const auto& v : *a) {
      if (!v.is_string() || v.as_string()->get().empty())
        fail(where("license_allow"), " must hold non-empty strings (SPDX licence ids such as \"CC-BY-4.0\")");
      c.license_allow.push_back(v.as_string()->get());
    }
  }
  get_bool("require_license", c.require_license);
  if (auto it = keys.find("resolution"); it != keys.end()) {
    used.insert("resolution");
    if (auto i = it->second->as_integer()) c.width = c.height = (int)i->get();
    else if (auto s = it->second->as_string()) {
      if (std::sscanf(s->get().c_str(), "%d,%d", &c.width, &c.height) != 2) fail(where("resolution"), " must be N or \"W,H\"");
    } else fail(where("resolution"), " must be N or \"W,H\"");
  }
  get_str("output_dir", c.output_dir);
  get_str("output_name", c.output_name);
  get_num("train_batch_size", c.train_batch_size);
  get_num("gradient_accumulation_steps", c.gradient_accumulation_steps);
  get_num("max_train_steps", c.max_train_steps);
  get_num("learning_rate", c.learning_rate);
  get_str("lr_scheduler", c.lr_scheduler);
  get_num("lr_warmup_steps", c.lr_warmup_steps);
  get_num("min_lr_ratio", c.min_lr_ratio);
  get_str("optimizer_type", c.optimizer_type);
  get_num("adam_beta1", c.adam_beta1);
  get_num("adam_beta2", c.adam_beta2);
  get_num("adam_epsilon", c.adam_epsilon);
  get_num("weight_decay", c.weight_decay);
  get_num("max_grad_norm", c.max_grad_norm);
  get_num("ema_decay", c.ema_decay);
  get_num("seed", c.seed);
  get_num("caption_dropout_rate", c.caption_dropout_rate);
  get_str("timestep_sampling", c.timestep_sampling);
  get_str("mixed_precision", c.mixed_precision);
  get_num("save_every_n_steps", c.save_every_n_steps);
  get_num("save_last_n_steps", c.save_last_n_steps);
  get_str("sample_prompts", c.sample_prompts);
  get_num("sample_every_n_steps", c.sample_every_n_steps);
  get_num("sample_steps", c.sample_steps);
  get_num("sample_cfg", c.sample_cfg);
  get_num("threads", c.threads);
  std::string unknown;
  for (auto& [k, v] : keys)
    if (!used.count(k)) unknown += (unknown.empty() ? "" : ", ") + k;
  if (!unknown.empty()) fail(path, ": unknown setting(s): ", unknown, " — check the spelling (see docs/training.md)");
  // Paths relative to the config file.
  fs::path base = fs::path(path).parent_path();
  auto rel = [&](std::string& p) { if (!p.empty() && fs::path(p).is_relative()) p = (base / p).lexically_normal().string(); };
  rel(c.train_data_dir); rel(c.dataset_config); rel(c.manifest); rel(c.cache_dir); rel(c.output_dir); rel(c.pretrained_model); rel(c.text_encoder);
  rel(c.sample_prompts); rel(c.vae);
  return c;
}

std::string TrainConfig::to_json() const {
  json j = {{"pretrained_model", pretrained_model}, {"model_preset", model_preset}, {"head_schedule", head_schedule},
            {"hidden_size", hidden_size}, {"num_layers", num_layers}, {"ffn_hidden_size", ffn_hidden_size},
            {"codec", codec}, {"vae", vae}, {"pixels_stride", pixels_stride}, {"patch_size", patch_size},
            {"text_encoder", text_encoder}, {"train_text_encoder", train_text_encoder}, {"vocab_size", vocab_size},
            {"t5_d_model", t5_d_model}, {"t5_layers", t5_layers}, {"t5_heads", t5_heads}, {"t5_d_kv", t5_d_kv},
            {"t5_d_ff", t5_d_ff}, {"max_token_length", max_token_length}, {"train_data_dir", train_data_dir},
            {"dataset_config", dataset_config}, {"manifest", manifest}, {"cache_dir", cache_dir},
            {"cache_stage", cache_stage}, {"width", width}, {"height", height},
            {"license_allow", license_allow}, {"require_license", require_license},
            {"train_batch_size", train_batch_size}, {"gradient_accumulation_steps", gradient_accumulation_steps},
            {"max_train_steps", max_train_steps}, {"learning_rate", learning_rate}, {"lr_scheduler", lr_scheduler},
            {"lr_warmup_steps", lr_warmup_steps}, {"min_lr_ratio", min_lr_ratio}, {"optimizer_type", optimizer_type},
            {"adam_beta1", adam_beta1}, {"adam_beta2", adam_beta2}, {"adam_epsilon", adam_epsilon},
            {"weight_decay", weight_decay}, {"max_grad_norm", max_grad_norm}, {"ema_decay", ema_decay}, {"seed", seed},
            {"caption_dropout_rate", caption_dropout_rate}, {"timestep_sampling", timestep_sampling}, {"mixed_precision", mixed_precision}};
  return j.dump();
}

// ---------------------------------------------------------------- helpers

namespace {

std::vector<float> to_host(Backend& be, const float* p, size_t n) {
  std::vector<float> h(n);
  be.download(h.data(), p, n);
  return h;
}

// Puts the EMA weights into a model's parameter buffer for its lifetime (inference files, samples), then restores
// the raw weights; both copies stay on the backend.
class EmaSwap {
 public:
  EmaSwap(Backend& be, float* params, const Ema& ema) : be_(be), params_(params) {
    if (!ema.enabled()) return;
    raw_ = be.alloc(ema.size(), DType::F32, "raw weights (EMA swap)");
    be.copy(raw_.f32(), params, ema.size());
    be.copy(params, ema.w.f32(), ema.size());
  }
  ~EmaSwap() {
    if (!raw_.empty()) be_.copy(params_, raw_.f32(), raw_.size());
  }

 private:
  Backend& be_;
  float* params_;
  Buffer raw_;
};

std::vector<uint32_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<uint32_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = (uint32_t)i;
  for (size_t i = n; i > 1; --i) {
    size_t j = (size_t)(uniform_at(seed, 0x5EED0000ull + (uint64_t)epoch, i) * i);
    std::swap(p[i - 1], p[std::min(j, i - 1)]);
  }
  return p;
}

struct Checkpointable {
  std::vector<float> dit_ema, t5_ema;
};

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

std::string fmt_time(double s) {
  int t = (int)std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------- trainer

struct Trainer {
  TrainConfig cfg;
  Backend& be;
  Dataset data;
  std::optional<CachedDataset> cached;   // set when training from `oboro data cache`
  std::vector<CachedDataset::Batch> cached_batches;
  std::string text_cache_id;              // frozen text encoder's cache identity ("" = encode live)
  int64_t text_hits = 0, text_misses = 0;
  std::unique_ptr<TextEncoder> te;
  std::unique_ptr<DiT> dit;
  bool train_te = false;
  AdamW opt_dit, opt_te;
  Ema ema_dit, ema_te;
  LrSchedule sched;
  int64_t step = 0, epoch = 0, index = 0, samples_seen = 0;
  double loss_ema = 0;
  std::vector<uint32_t> perm;
  int64_t perm_epoch = -1;
  LatentCodec codec;
  std::vector<std::pair<int64_t, double>> loss_history;
  std::string dataset_provenance;  // DatasetSummary JSON for `oboro.dataset` ("" = no manifest)

  Trainer(const TrainConfig& c, Backend& b) : cfg(c), be(b) {}

  std::string state_dir() const { return (fs::path(cfg.output_dir) / "state").string(); }
  std::string model_path() const { return (fs::path(cfg.output_dir) / (cfg.output_name + ".safetensors")).string(); }
  std::string te_path() const { return (fs::path(cfg.output_dir) / (cfg.output_name + ".t5.safetensors")).string(); }
  std::string log_path() const { return (fs::path(cfg.output_dir) / "log.jsonl").string(); }

  void validate() {
    if (cfg.optimizer_type != "AdamW" && cfg.optimizer_type != "adamw")
      fail("optimizer_type '", cfg.optimizer_type, "' is not supported: use AdamW");
    LrSchedule::validate_kind(cfg.lr_scheduler);
    timestep_sampling_from_name(cfg.timestep_sampling);
    if (cfg.mixed_precision == "fp16")
      fail("mixed_precision = \"fp16\" is not supported (the CPU has no F16 GEMM, and F16's range needs loss "
           "scaling): use \"bf16\" (F32's range, BF16 GEMMs) or \"no\" (F32)");
    if (cfg.mixed_precision != "no" && cfg.mixed_precision != "bf16")
      fail("mixed_precision = \"", cfg.mixed_precision, "\" is unknown: use \"no\" (F32) or \"bf16\"");
    if (cfg.codec != "pixels" && cfg.codec != "flux-vae")
      fail("codec '", cfg.codec, "' is unknown: use pixels or flux-vae");
    if (cfg.codec == "flux-vae" && cfg.vae.empty())
      fail("codec 'flux-vae' needs vae = \"ae.safetensors\" (the FLUX.1 VAE that encodes the training images)");
    if (cfg.train_batch_size < 1) fail("train_batch_size must be at least 1");
    if (cfg.gradient_accumulation_steps < 1) fail("gradient_accumulation_steps must be at least 1");
    if (cfg.max_train_steps < 1) fail("max_train_steps must be at least 1");
    const int m = (cfg.codec == "flux-vae" ? 8 : cfg.pixels_stride) * cfg.patch_size;
    if (cfg.width % m || cfg.height % m)
      fail("resolution ", cfg.width, "x", cfg.height, " must be a multiple of the codec stride·patch_size = ", m);
    const int sources = !cfg.train_data_dir.empty() + !cfg.dataset_config.empty() + !cfg.cache_dir.empty();
    if (sources != 1)
      fail("set exactly one of train_data_dir (a folder of images + .txt captions), dataset_config (a dataset TOML) "
           "or cache_dir + manifest (latents from `oboro data cache`)");
    if (cfg.cache_dir.empty() != cfg.manifest.empty())
      fail("cache_dir and manifest go together: cache_dir = the --out of `oboro data cache`, manifest = its --manifest");
    if (!cfg.cache_dir.empty() && cfg.cache_stage != 1 && cfg.cache_stage != 2)
      fail("cache_stage must be 1 (256² crops) or 2 (~512² buckets), as in `oboro data bucket --stage`");
  }

  void setup_new() {
    // Text encoder: a frozen pretrained T5, or a small T5 + vocabulary trained here.
    if (!cfg.text_encoder.empty()) {
      te = TextEncoder::load(cfg.text_encoder, be, WFormat::F32);  // F32 even from a low-precision file (formats.md)
      train_te = false;
    } else {
      fs::create_directories(cfg.output_dir);
      std::string prefix = (fs::path(cfg.output_dir) / "tokenizer").string();
      std::vector<std::string> lines = cached ? cached->captions() : data.captions();
      lines.erase(std::remove(lines.begin(), lines.end(), std::string()), lines.end());
      if (lines.empty()) fail("the dataset has no captions to train a vocabulary on: add .txt captions beside the images");
      std::fprintf(stderr, "training a %d-piece vocabulary on %zu captions\n", cfg.vocab_size, lines.size());
      train_vocab(lines, cfg.vocab_size, prefix);
      Tokenizer tok = Tokenizer::load(prefix + ".model");
      T5Config tc;
      tc.vocab_size = tok.vocab_size();
      tc.d_model = cfg.t5_d_model;
      tc.d_kv = cfg.t5_d_kv;
      tc.num_heads = cfg.t5_heads;
      tc.d_ff = cfg.t5_d_ff;
      tc.num_layers = cfg.t5_layers;
      auto t5 = std::make_unique<T5Encoder>(tc, be);
      t5->init_weights(cfg.seed ^ 0x75);
      te = std::make_unique<TextEncoder>(std::move(tok), std::move(t5));
      train_te = cfg.train_text_encoder;
    }
    if (!cfg.pretrained_model.empty()) {
      dit = DiT::load(cfg.pretrained_model, be, WFormat::F32);  // training keeps F32 master weights (formats.md)
    } else {
      DiTConfig dc = DiTConfig::preset(cfg.model_preset, te->dim(), cfg.head_schedule);
      if (cfg.hidden_size > 0) dc.hidden_size = cfg.hidden_size;
      if (cfg.ffn_hidden_size > 0) dc.ffn_hidden_size = cfg.ffn_hidden_size;
      if (cfg.num_layers > 0)
        dc.heads = cfg.head_schedule == "mmh" ? DiTConfig::mmh_heads(cfg.num_layers)
                                              : std::vector<int>(cfg.num_layers, std::max(1, dc.hidden_size / 64));
      if (cfg.head_schedule == "uniform" && cfg.hidden_size > 0)
        dc.heads.assign(dc.layers(), std::max(1, dc.hidden_size / 64));
      dc.latent_channels = codec.channels();
      dc.patch_size = cfg.patch_size;
      dc.codec = cfg.codec;
      dc.validate("training config");
      dit = std::make_unique<DiT>(dc, be);
      dit->init_weights(cfg.seed);
    }
    const DiTConfig& dc = dit->config();
    if (dc.text_dim != te->dim())
      fail("the DiT expects text_dim ", dc.text_dim, " but the text encoder outputs ", te->dim());
    if (dc.latent_channels != codec.channels())
      fail("the DiT has ", dc.latent_channels, " latent channels but the ", cfg.codec, " codec gives ", codec.channels());
  }

  void setup_optim() {
    AdamWConfig ac{cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay};
    opt_dit.init(be, dit->layout(), ac);
    if (train_te) opt_te.init(be, te->t5().layout(), ac);
    if (cfg.ema_decay > 0) {
      ema_dit.init(be, dit->params(), dit->num_params(), "dit.ema");
      if (train_te) ema_te.init(be, te->t5().params(), te->t5().layout().total(), "t5.ema");
    }
    sched.kind = cfg.lr_scheduler;
    sched.lr = cfg.learning_rate;
    sched.total_steps = cfg.max_train_steps;
    sched.warmup_steps = cfg.lr_warmup_steps < 1 && cfg.lr_warmup_steps > 0
                             ? (int64_t)std::llround(cfg.lr_warmup_steps * cfg.max_train_steps)
                             : (int64_t)cfg.lr_warmup_steps;
    sched.min_lr_ratio = cfg.min_lr_ratio;
  }

  // ------------------------------------------------ checkpoint state

  void save_state() {
    fs::create_directories(state_dir());
    std::string path = (fs::path(state_dir()) / (step_name(step) + ".safetensors")).string();
    SafetensorsWriter wr;
    std::vector<std::vector<float>> keep;
    auto add = [&](const std::string& name, std::vector<float> v) {
      keep.push_back(std::move(v));
      wr.add(name, Tensor::borrow(keep.back().data(), {(int64_t)keep.back().size()}, DType::F32, nullptr));
    };
    keep.reserve(8);
    add("dit.params", to_host(be, dit->params(), dit->num_params()));
    add("dit.adam_m", download_all(opt_dit.m));
    add("dit.adam_v", download_all(opt_dit.v));
    if (ema_dit.enabled()) add("dit.ema", download_all(ema_dit.w));
    add("t5.params", to_host(be, te->t5().params(), te->t5().layout().total()));
    if (train_te) {
      add("t5.adam_m", download_all(opt_te.m));
      add("t5.adam_v", download_all(opt_te.v));
      if (ema_te.enabled()) add("t5.ema", download_all(ema_te.w));
    }
    json st = {{"step", step}, {"epoch", epoch}, {"index", index}, {"samples_seen", samples_seen},
               {"loss_ema", loss_ema}, {"train_text_encoder", train_te}, {"skipped_images", skipped_images()},
               {"config", json::parse(cfg.to_json())}};
    wr.set_metadata("oboro.train_state", st.dump());
    wr.set_metadata("oboro.config", dit->config().to_json().dump());
    wr.set_metadata("oboro.t5_config", te->t5().config().to_json().dump());
    wr.set_metadata("oboro.tokenizer", base64_encode(te->tokenizer().serialized()));
    if (!dataset_provenance.empty()) wr.set_metadata("oboro.dataset", dataset_provenance);
    wr.write(path);
    // Keep the checkpoints of the last save_last_n_steps steps.
    if (cfg.save_last_n_steps > 0) {
      for (auto& e : fs::directory_iterator(state_dir())) {
        std::string n = e.path().filename().string();
        long long s;
        if (std::sscanf(n.c_str(), "step-%lld.safetensors", &s) == 1 && s < step - cfg.save_last_n_steps)
          fs::remove(e.path());
      }
    }
  }

  static std::string latest_state(const std::string& dir) {
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

  void load_state(const std::string& path) {
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
    train_te = st.at("train_text_encoder").get<bool>();
    auto t5 = std::make_unique<T5Encoder>(tc, be);
    te = std::make_unique<TextEncoder>(std::move(tok), std::move(t5));
    dit = std::make_unique<DiT>(dc, be);
    setup_optim();
    auto load_flat = [&](const std::string& name, float* dst, size_t n) {
      if (!f->has(name)) fail(path, ": checkpoint tensor ", name, " is missing");
      Tensor t = f->tensor_f32(name);
      if ((size_t)t.numel() != n)
        fail(path, ": checkpoint tensor ", name, " has ", t.numel(), " values, the model needs ", n,
             " — the checkpoint belongs to a different model config");
      be.upload(dst, t.f32(), n);
    };
    load_flat("dit.params", dit->params(), dit->num_params());
    load_flat("dit.adam_m", opt_dit.m.f32(), opt_dit.m.size());
    load_flat("dit.adam_v", opt_dit.v.f32(), opt_dit.v.size());
    if (ema_dit.enabled()) load_flat("dit.ema", ema_dit.w.f32(), ema_dit.size());
    load_flat("t5.params", te->t5().params(), te->t5().layout().total());
    if (train_te) {
      load_flat("t5.adam_m", opt_te.m.f32(), opt_te.m.size());
      load_flat("t5.adam_v", opt_te.v.f32(), opt_te.v.size());
      if (ema_te.enabled()) load_flat("t5.ema", ema_te.w.f32(), ema_te.size());
    }
    step = st.at("step").get<int64_t>();
    epoch = st.at("epoch").get<int64_t>();
    index = st.at("index").get<int64_t>();
    samples_seen = st.at("samples_seen").get<int64_t>();
    loss_ema = st.at("loss_ema").get<double>();
    if (auto it = f->metadata().find("oboro.dataset"); it != f->metadata().end()) dataset_provenance = it->second;
    std::fprintf(stderr, "loaded training state %s (step %lld, epoch %lld)\n", path.c_str(), (long long)step, (long long)epoch);
  }

  // ------------------------------------------------ inference model files

  void save_models() {
    fs::create_directories(cfg.output_dir);
    // Inference weights: EMA when enabled.
    EmaSwap swap_dit(be, dit->params(), ema_dit), swap_te(be, te->t5().params(), ema_te);
    te->save(te_path());
    json summary = {{"steps", step}, {"samples_seen", samples_seen}, {"loss_ema", loss_ema},
                    {"dataset", cfg.train_data_dir.empty() ? cfg.dataset_config : cfg.train_data_dir},
                    {"ema", ema_dit.enabled()}};
    std::map<std::string, std::string> md = {{"oboro.text_encoder", fs::path(te_path()).filename().string()},
                                             {"oboro.train", summary.dump()},
                                             {"modelspec.title", cfg.output_name},
                                             {"modelspec.resolution", str(cfg.width, "x", cfg.height)},
                                             {"ss_steps", std::to_string(step)},
                                             {"ss_learning_rate", py_float(cfg.learning_rate)},
                                             {"ss_optimizer", cfg.optimizer_type},
                                             {"ss_lr_scheduler", cfg.lr_scheduler},
                                             {"ss_seed", std::to_string(cfg.seed)},
                                             {"ss_num_train_images", std::to_string(num_images())}};
    if (!dataset_provenance.empty()) md["oboro.dataset"] = dataset_provenance;
    dit->save(model_path(), md);
  }

  // ------------------------------------------------ samples during training

  void sample_images() {
    std::ifstream f(cfg.sample_prompts);
    if (!f) fail("cannot read sample_prompts file ", cfg.sample_prompts);
    std::vector<PromptLine> lines;
    for (std::string l; std::getline(f, l);)
      if (!l.empty() && l[0] != '#') lines.push_back(parse_prompt_line(l));
    if (lines.empty()) return;
    EmaSwap swap_dit(be, dit->params(), ema_dit), swap_te(be, te->t5().params(), ema_te);  // sample with EMA weights
    std::vector<Image> imgs;
    for (size_t i = 0; i < lines.size(); ++i) {
      const PromptLine& p = lines[i];
      int W = p.width > 0 ? p.width : cfg.width, H = p.height > 0 ? p.height : cfg.height;
      const int s = codec.stride;
      SamplerOptions so;
      so.steps = p.steps > 0 ? p.steps : cfg.sample_steps;
      so.cfg_scale = p.cfg >= 0 ? p.cfg : cfg.sample_cfg;
      uint64_t seed = p.seed >= 0 ? (uint64_t)p.seed : cfg.seed + i;
      TextBatch c = te->encode({p.prompt}, false, cfg.max_token_length);
      TextBatch u = te->encode({p.negative}, false, cfg.max_token_length);
      std::vector<float> lat = sample_euler(*dit, c, u, H / s, W / s, {seed}, so);
      std::vector<float> img((size_t)3 * H * W);
      codec.decode(lat.data(), H, W, img.data());
      imgs.push_back(chw_to_image(img.data(), H, W));
    }
    fs::create_directories(fs::path(cfg.output_dir) / "samples");
    save_png((fs::path(cfg.output_dir) / "samples" / (step_name(step) + ".png")).string(),
             make_grid(imgs, std::min<int>(8, (int)imgs.size())));
  }

  // ------------------------------------------------ the loop

  size_t num_images() const { return cached ? cached->size() : data.size(); }
  int64_t skipped_images() const { return cached ? 0 : (int64_t)data.skipped(); }

  // Cache mode: the next batch of the epoch's bucketed batch list (state: epoch, index = batch number).
  CachedDataset::Batch next_cached_batch() {
    if (perm_epoch != epoch) {
      cached_batches = cached->epoch_batches(epoch, cfg.train_batch_size, cfg.seed);
      perm_epoch = epoch;
    }
    CachedDataset::Batch bt = cached_batches[(size_t)index];
    if (++index >= (int64_t)cached_batches.size()) { index = 0; ++epoch; }
    return bt;
  }

  // Text states for a cache batch: the frozen encoder's cached entries where present, the rest (e.g. dropped,
  // empty captions) encoded now. A jointly trained T5 always encodes live.
  TextBatch cached_text(const std::vector<std::string>& caps) {
    if (text_cache_id.empty() || train_te) return te->encode(caps, train_te, cfg.max_token_length);
    const int dim = te->dim(), B = (int)caps.size();
    std::vector<std::vector<float>> rows(B);
    std::vector<int> len(B, 0);
    std::vector<std::string> missing;
    std::vector<int> missing_at;
    for (int b = 0; b < B; ++b) {
      rows[b] = cached->text(text_cache_key(text_cache_id, cfg.max_token_length, caps[b]), dim, &len[b]);
      if (len[b] == 0) missing.push_back(caps[b]), missing_at.push_back(b);
    }
    text_hits += B - (int64_t)missing.size();
    text_misses += (int64_t)missing.size();
    if (!missing.empty()) {
      TextBatch live = te->encode(missing, false, cfg.max_token_length);
      for (size_t k = 0; k < missing.size(); ++k) {
        const int b = missing_at[k];
        len[b] = live.lengths[k];
        rows[b] = download_row(live, (int)k);
      }
    }
    const int L = std::max(1, *std::max_element(len.begin(), len.end()));
    std::vector<float> hidden((size_t)B * L * dim, 0.f);
    for (int b = 0; b < B; ++b)
      std::copy(rows[b].begin(), rows[b].end(), hidden.begin() + (ptrdiff_t)((size_t)b * L * dim));
    TextBatch tb = alloc_text_batch(be, B, L, dim, len);
    be.upload(tb.hidden.f32(), hidden.data(), hidden.size());
    return tb;
  }

  size_t next_entry() {
    if (perm_epoch != epoch) { perm = epoch_permutation(data.size(), cfg.seed, epoch); perm_epoch = epoch; }
    size_t e = perm[(size_t)index];
    if (++index >= (int64_t)data.size()) { index = 0; ++epoch; }
    return e;
  }

  TrainResult run(int64_t stop_after) {
    const int B = cfg.train_batch_size, W = cfg.width, H = cfg.height, s = codec.stride;
    int h = H / s, w = W / s;  // per batch in cache mode (its bucket)
    int64_t per = (int64_t)codec.channels() * h * w;
    const float sigma = dit->config().icfm_sigma;
    const TimestepSampling tsm = timestep_sampling_from_name(cfg.timestep_sampling);
    // Host: one decoded image and the batch's latents as read (x1_host). Backend: the step's tensors, (B, per) each
    // (t: (B)), reallocated when a cache bucket changes the latent size.
    std::vector<float> img((size_t)3 * H * W), x1_host((size_t)B * per);
    Buffer x1, xt, u, v, dv;
    auto size_step_buffers = [&] {
      for (Buffer* b : {&x1, &xt, &u, &v, &dv})
        if (b->size() != (size_t)B * per) *b = be.alloc((size_t)B * per, DType::F32, "train.step");
    };
    size_step_buffers();
    Buffer t = be.alloc(B, DType::F32, "train.t"), loss_buf = be.alloc(1, DType::F64, "train.loss"),
           norm_buf = be.alloc(1, DType::F64, "train.grad_norm_sq");
    std::vector<std::string> caps(B), files(B);
    fs::create_directories(cfg.output_dir);
    std::ofstream log(log_path(), std::ios::app);
    const bool tty = cfg.progress && isatty(2);
    const auto t_start = std::chrono::steady_clock::now();
    const int64_t start_step = step;
    double last_loss = 0;
    while (step < cfg.max_train_steps) {
      const auto t0 = std::chrono::steady_clock::now();
      dit->zero_grads();
      if (train_te) te->t5().zero_grads();
      double loss_sum = 0;
      for (int micro = 0; micro < cfg.gradient_accumulation_steps; ++micro) {
        const StepRng rng{cfg.seed, (uint64_t)(step * cfg.gradient_accumulation_steps + micro)};
        // Gather B images (skipping unreadable ones, which the dataset counts and reports), or in cache
        // mode B pre-encoded latents of one bucket.
        int b = 0;
        size_t misses = 0;
        if (cached) {
          const CachedDataset::Batch bt = next_cached_batch();
          const CachedDataset::Bucket& bk = cached->buckets()[bt.bucket];
          h = bk.height / s, w = bk.width / s;
          per = (int64_t)codec.channels() * h * w;
          x1_host.resize((size_t)B * per);
          size_step_buffers();
          for (; b < B; ++b) {
            const uint32_t i = bt.items[(size_t)b];
            cached->latent(i, codec.channels(), s, x1_host.data() + (size_t)b * per);
            caps[b] = cached->items()[i].caption;
            if (uniform_at(cfg.seed, rng.stream(kSlotDropout), (uint64_t)b) < cfg.caption_dropout_rate) caps[b].clear();
            files[b] = cached->items()[i].path;
          }
        }
        while (b < B) {
          size_t e = next_entry();
          uint64_t crop_seed = 1 + rng.stream(kSlotCrop) * 1000003ull + (uint64_t)b;
          if (!data.load(e, W, H, crop_seed, img.data(), &caps[b])) {
            if (++misses > data.size()) fail("no image of the dataset could be read: see the warnings above");
            continue;
          }
          codec.encode(img.data(), H, W, x1_host.data() + (size_t)b * per);
          if (uniform_at(cfg.seed, rng.stream(kSlotDropout), (uint64_t)b) < cfg.caption_dropout_rate) caps[b].clear();
          files[b] = data.entries()[e].image_path;
          ++b;
        }
        TextBatch txt = cached ? cached_text(caps) : te->encode(caps, train_te, cfg.max_token_length);
        be.upload(x1.f32(), x1_host.data(), x1_host.size());
        be.icfm_pair(t.f32(), xt.f32(), u.f32(), x1.f32(), B, per, icfm_draw(rng, sigma, tsm));
        dit->forward(v.f32(), xt.f32(), t.f32(), txt.hidden.f32(), txt.mask.f32(), B, txt.L, h, w, true);
        be.mse_forward(loss_buf.f64(), v.f32(), u.f32(), v.size());
        double loss = 0;
        be.download(&loss, loss_buf.f64(), 1);
        if (!std::isfinite(loss)) {
          std::string list;
          for (auto& f : files) list += (list.empty() ? "" : ", ") + fs::path(f).filename().string();
          fail("step ", step + 1, ": the loss is ", loss, " on the batch [", list,
               "] — training stopped and no checkpoint was written; the last saved checkpoint in ", state_dir(),
               " is intact: lower learning_rate (now ", py_float(cfg.learning_rate), ") and resume with --resume latest");
        }
        loss_sum += loss;
        be.zero(dv.f32(), dv.size());
        be.mse_backward(dv.f32(), v.f32(), u.f32(), v.size(), 1.f / cfg.gradient_accumulation_steps);
        Buffer dtxt = train_te ? be.alloc(txt.hidden.size(), DType::F32, "train.dtxt") : Buffer();
        dit->backward(dv.f32(), train_te ? dtxt.f32() : nullptr);
        if (train_te) te->backward(dtxt.f32());
      }
      const double loss = loss_sum / cfg.gradient_accumulation_steps;
      // Gradient norm over every trained parameter; clip.
      be.sum_squares(norm_buf.f64(), dit->grads(), dit->num_params(), false);
      if (train_te) be.sum_squares(norm_buf.f64(), te->t5().grads(), te->t5().layout().total(), true);
      double ss = 0;
      be.download(&ss, norm_buf.f64(), 1);
      const double gnorm = std::sqrt(ss);
      if (!std::isfinite(gnorm))
        fail("step ", step + 1, ": the gradient is not finite (loss ", loss, ") — no checkpoint was written; lower "
             "learning_rate or max_grad_norm and resume with --resume latest");
      // Clipping is folded into the optimizer update: g·(max_grad_norm / ‖g‖) when above the limit.
      const float clip = cfg.max_grad_norm > 0 && gnorm > cfg.max_grad_norm ? (float)(cfg.max_grad_norm / gnorm) : 1.f;
      const float lr = (float)sched.at(step);
      opt_dit.step(dit->params(), dit->grads(), lr, step + 1, clip);
      if (train_te) opt_te.step(te->t5().params(), te->t5().grads(), lr, step + 1, clip);
      ++step;
      const float ema_decay = ema_decay_at(step, cfg.ema_decay);
      if (ema_dit.enabled()) ema_dit.update(dit->params(), ema_decay);
      if (ema_te.enabled()) ema_te.update(te->t5().params(), ema_decay);
      samples_seen += (int64_t)B * cfg.gradient_accumulation_steps;
      loss_ema = step == 1 ? loss : 0.98 * loss_ema + 0.02 * loss;
      last_loss = loss;
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double sps = (double)B * cfg.gradient_accumulation_steps / dt;
      json rec = {{"step", step}, {"loss", loss}, {"loss_ema", loss_ema}, {"lr", lr}, {"grad_norm", gnorm},
                  {"samples_per_s", sps}, {"epoch", epoch}, {"skipped_images", skipped_images()}};
      log << rec.dump() << "\n";
      log.flush();
      loss_history.emplace_back(step, loss);
      if (cfg.progress) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        const double eta = el / (double)(step - start_step) * (double)(cfg.max_train_steps - step);
        const int width = 24, filled = (int)(width * step / cfg.max_train_steps);
        std::string bar(filled, '#');
        bar.resize(width, '.');
        if (tty || step % 50 == 0 || step == cfg.max_train_steps)
          std::fprintf(stderr, "%sstep %lld/%lld [%s] loss %.4f (avg %.4f) lr %.2e %.1f samples/s ETA %s%s",
                       tty ? "\r" : "", (long long)step, (long long)cfg.max_train_steps, bar.c_str(), loss, loss_ema,
                       lr, sps, fmt_time(eta).c_str(), tty ? "   " : "\n");
      }
      const bool last = step == cfg.max_train_steps;
      const bool stopping = stop_after > 0 && step - start_step >= stop_after;
      if (cfg.sample_every_n_steps > 0 && !cfg.sample_prompts.empty() && (step % cfg.sample_every_n_steps == 0 || last))
        sample_images();
      if ((cfg.save_every_n_steps > 0 && step % cfg.save_every_n_steps == 0) || last || stopping) {
        save_state();
        save_models();
        write_loss_plot();
      }
      if (stopping) break;
    }
    if (tty) std::fprintf(stderr, "\n");
    TrainResult r;
    r.steps = step;
    r.final_loss = last_loss;
    r.model_path = model_path();
    r.text_encoder_path = te_path();
    r.state_path = (fs::path(state_dir()) / (step_name(step) + ".safetensors")).string();
    return r;
  }

  void write_loss_plot() {
    // The whole run's curve from the log (it survives resumes).
    std::ifstream f(log_path());
    std::vector<std::pair<double, double>> pts;
    for (std::string l; std::getline(f, l);) {
      try {
        json j = json::parse(l);
        pts.emplace_back(j.at("step").get<double>(), j.at("loss").get<double>());
      } catch (...) {
      }
    }
    if (pts.size() >= 2)
      write_file_atomic((fs::path(cfg.output_dir) / "loss.svg").string(),
                        plot_loss_svg(pts, cfg.output_name + ": training loss (light: per step, dark: moving average)"));
  }
};

void export_from_state(Backend& be, const std::string& state_path, bool use_ema, const std::string& out_model_path) {
  auto f = SafetensorsFile::open(state_path);
  auto it = f->metadata().find("oboro.train_state");
  if (it == f->metadata().end()) fail(state_path, ": not an oboro training checkpoint (no 'oboro.train_state' metadata)");
  json st = json::parse(it->second);
  if (use_ema && !f->has("dit.ema"))
    fail(state_path, ": this run kept no EMA weights: export with --weights raw");
  TrainConfig cfg;
  const json& c = st.at("config");
  cfg.width = c.value("width", 32);
  cfg.height = c.value("height", 32);
  cfg.learning_rate = c.value("learning_rate", 0.0);
  cfg.lr_scheduler = c.value("lr_scheduler", std::string("constant"));
  cfg.seed = c.value("seed", (uint64_t)0);
  cfg.train_data_dir = c.value("train_data_dir", std::string());
  cfg.ema_decay = use_ema ? 0.5f : 0.f;  // any value > 0 makes load_state read the EMA tensors
  fs::path out = out_model_path;
  std::string stem = out.filename().string();
  if (stem.size() > 12 && stem.substr(stem.size() - 12) == ".safetensors") stem.resize(stem.size() - 12);
  cfg.output_dir = out.parent_path().empty() ? "." : out.parent_path().string();
  cfg.output_name = stem;
  Trainer tr(cfg, be);
  tr.load_state(state_path);
  tr.save_models();
  std::fprintf(stderr, "wrote %s (%s weights, step %lld) and %s\n", tr.model_path().c_str(), use_ema ? "EMA" : "raw",
               (long long)tr.step, tr.te_path().c_str());
}

TrainResult train(const TrainConfig& cfg, Backend& be, const std::string& resume_state, int64_t stop_after) {
  if (cfg.threads > 0) set_num_threads(cfg.threads);
  Trainer tr(cfg, be);
  tr.validate();
  tr.codec = LatentCodec::open(cfg.codec, cfg.pixels_stride, cfg.vae, tr.be, "vae =");
  LicensePolicy policy;
  if (!cfg.license_allow.empty()) policy.allow = cfg.license_allow;
  ProvenanceCheck prov;
  if (!cfg.cache_dir.empty()) {
    // Pre-encoded latents: the manifest is the provenance (licences were checked at ingest; the training
    // policy is applied again here).
    tr.cached = CachedDataset::open(cfg.manifest, cfg.cache_dir, cfg.cache_stage,
                                    codec_identity(cfg.codec, cfg.pixels_stride, cfg.vae));
    std::string bk;
    for (const auto& b : tr.cached->buckets()) bk += str(bk.empty() ? "" : ", ", b.width, "x", b.height, " ", b.items.size());
    std::fprintf(stderr, "dataset: %zu cached stage-%d images from %s (buckets %s)\n", tr.cached->size(),
                 cfg.cache_stage, cfg.cache_dir.c_str(), bk.c_str());
    prov.has_manifest = true;
    prov.summary = tr.cached->provenance(policy);
    prov.manifests.push_back(cfg.manifest);
  } else {
    tr.data = Dataset::open(cfg.train_data_dir.empty() ? cfg.dataset_config : cfg.train_data_dir);
    std::fprintf(stderr, "dataset: %zu images (repeats included)\n", tr.data.size());
    // Provenance before anything else runs: every image listed in its manifest.jsonl, unchanged,
    // with an allowed licence (the files are hashed now).
    prov = check_provenance(tr.data.image_files(), policy, cfg.require_license);
  }
  if (prov.has_manifest) {
    std::string lic;
    for (const auto& [l, n] : prov.summary.licenses) lic += str(lic.empty() ? "" : ", ", l, " ", n);
    std::fprintf(stderr, "provenance: %zu images in %zu manifest(s), licences %s, digest %s\n", prov.summary.images,
                 prov.manifests.size(), lic.c_str(), prov.summary.digest.c_str());
  }
  if (!resume_state.empty()) {
    tr.load_state(resume_state == "latest" ? Trainer::latest_state(tr.state_dir()) : resume_state);
  } else {
    tr.setup_new();
    tr.setup_optim();
  }
  // What this invocation trains on (a resumed run records the data it continues with).
  tr.dataset_provenance = prov.has_manifest ? prov.summary.to_json() : "";
  std::fprintf(stderr, "model: DiT %lld parameters%s, text encoder %zu parameters (%s)\n",
               (long long)tr.dit->config().param_count(), "", tr.te->t5().layout().total(),
               tr.train_te ? "trained jointly" : "frozen");
  if (tr.cached && !tr.train_te && !cfg.text_encoder.empty())
    tr.text_cache_id = text_encoder_identity(cfg.text_encoder, tr.te->dim());
  if (cfg.mixed_precision == "bf16") std::fprintf(stderr, "mixed precision: bf16 GEMMs, F32 master weights\n");
  TrainResult res;
  {
    MatmulPrecisionScope precision(tr.be, cfg.mixed_precision == "bf16" ? MatmulPrecision::BF16 : MatmulPrecision::F32);
    res = tr.run(stop_after);
  }
  res.text_cache_hits = tr.text_hits;
  res.text_cache_misses = tr.text_misses;
  if (tr.cached && !tr.text_cache_id.empty())
    std::fprintf(stderr, "text cache: %lld captions read from the cache, %lld encoded now%s\n", (long long)tr.text_hits,
                 (long long)tr.text_misses,
                 tr.text_hits == 0 ? " (none cached for this text encoder and max_token_length: run `oboro data cache "
                                     "--text-encoder ...` with --max-tokens equal to max_token_length)"
                                   : "");
  return res;
}

}  // namespace oboro
