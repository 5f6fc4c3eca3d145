#include "train/train_state.h"
#include "core/error.h"
#include "models/codec.h"
#include "train/batch_source.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace oboro {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- models of a new run

DiTConfig new_dit_config(const TrainConfig& cfg, int text_dim, int latent_channels) {
  DiTConfig dc = DiTConfig::preset(cfg.model_preset, text_dim, cfg.head_schedule);
  if (cfg.hidden_size > 0) dc.hidden_size = cfg.hidden_size;
  if (cfg.ffn_hidden_size > 0) dc.ffn_hidden_size = cfg.ffn_hidden_size;
  if (cfg.num_layers > 0)
    dc.heads = cfg.head_schedule == "mmh" ? DiTConfig::mmh_heads(cfg.num_layers)
                                          : std::vector<int>(cfg.num_layers, std::max(1, dc.hidden_size / 64));
  if (cfg.head_schedule == "uniform" && cfg.hidden_size > 0) dc.heads.assign(dc.layers(), std::max(1, dc.hidden_size / 64));
  dc.latent_channels = latent_channels;
  dc.patch_size = cfg.patch_size;
  dc.codec = cfg.codec;
  dc.validate("training config");
  return dc;
}

void TrainState::create_models(const TrainConfig& cfg, const LatentCodec& codec, const BatchSource& data) {
  // Text encoder: a frozen pretrained T5, or a small T5 + vocabulary trained here.
  if (!cfg.text_encoder.empty()) {
    te = TextEncoder::load(cfg.text_encoder, be, WFormat::F32);  // F32 even from a low-precision file (formats.md)
    train_te = false;
  } else {
    fs::create_directories(cfg.output_dir);
    std::string prefix = (fs::path(cfg.output_dir) / "tokenizer").string();
    std::vector<std::string> captions = data.captions();
    captions.erase(std::remove(captions.begin(), captions.end(), std::string()), captions.end());
    if (captions.empty()) fail("the dataset has no captions to train a vocabulary on: add .txt captions beside the images");
    std::fprintf(stderr, "training a %d-piece vocabulary on %zu captions\n", cfg.vocab_size, captions.size());
    train_vocab(captions, cfg.vocab_size, prefix);
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
  // DiT: a pretrained file, or the preset with the config's overrides.
  if (!cfg.pretrained_model.empty()) {
    dit = DiT::load(cfg.pretrained_model, be, WFormat::F32);  // training keeps F32 master weights (formats.md)
  } else {
    dit = std::make_unique<DiT>(new_dit_config(cfg, te->dim(), codec.channels()), be);
    dit->init_weights(cfg.seed);
  }
  const DiTConfig& dc = dit->config();
  if (dc.text_dim != te->dim())
    fail("the DiT expects text_dim ", dc.text_dim, " but the text encoder outputs ", te->dim());
  if (dc.latent_channels != codec.channels())
    fail("the DiT has ", dc.latent_channels, " latent channels but the ", cfg.codec, " codec gives ", codec.channels());
}

// ---------------------------------------------------------------- optimizers and EMA

void TrainState::init_optimizers(const TrainConfig& cfg) {
  AdamWConfig ac{cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay};
  if (cfg.lora()) {
    if (dit->weight_format() != WFormat::F32)
      fail("LoRA training needs an F32 base in memory (the DiT's backward reads F32 weights)");
    lora = std::make_unique<LoraNetwork>(*dit, LoraSettings::from_config(cfg), cfg.seed ^ 0x10ad);
    dit->set_frozen(true);
    dit->set_adapter(lora.get());
    train_te = false;
    opt_lora_.init(be, lora->layout(), ac);
    if (cfg.ema_decay > 0) ema_lora_.init(be, lora->params(), lora->num_params(), "lora.ema");
    return;
  }
  opt_dit_.init(be, dit->layout(), ac);
  if (train_te) opt_te_.init(be, te->t5().layout(), ac);
  if (cfg.ema_decay > 0) {
    ema_dit_.init(be, dit->params(), dit->num_params(), "dit.ema");
    if (train_te) ema_te_.init(be, te->t5().params(), te->t5().layout().total(), "t5.ema");
  }
}

void TrainState::load_network_weights(const TrainConfig& cfg) {
  if (lora && !cfg.network_weights.empty()) lora->load_weights(cfg.network_weights, *dit);
}

void TrainState::zero_grads() {
  if (lora) return lora->zero_grads();
  dit->zero_grads();
  if (train_te) te->t5().zero_grads();
}

double TrainState::grad_norm() {
  if (norm_sq_.empty()) norm_sq_ = be.alloc(1, DType::F64, "train.grad_norm_sq");
  if (lora) be.sum_squares(norm_sq_.f64(), lora->grads(), lora->num_params(), false);
  else be.sum_squares(norm_sq_.f64(), dit->grads(), dit->num_params(), false);
  if (train_te) be.sum_squares(norm_sq_.f64(), te->t5().grads(), te->t5().layout().total(), true);
  double ss = 0;
  be.download(&ss, norm_sq_.f64(), 1);
  return std::sqrt(ss);
}

void TrainState::optimizer_step(float lr, float grad_scale) {
  if (lora) return opt_lora_.step(lora->params(), lora->grads(), lr, step + 1, grad_scale);
  opt_dit_.step(dit->params(), dit->grads(), lr, step + 1, grad_scale);
  if (train_te) opt_te_.step(te->t5().params(), te->t5().grads(), lr, step + 1, grad_scale);
}

void TrainState::ema_step(float ema_decay) {
  const float decay = ema_decay_at(step, ema_decay);
  if (ema_dit_.enabled()) ema_dit_.update(dit->params(), decay);
  if (ema_te_.enabled()) ema_te_.update(te->t5().params(), decay);
  if (ema_lora_.enabled()) ema_lora_.update(lora->params(), decay);
}

std::vector<CheckpointTensor> TrainState::checkpoint_tensors() {
  std::vector<CheckpointTensor> b;
  b.push_back({"dit.params", dit->params(), dit->num_params()});
  if (lora) {
    b.push_back({"lora.params", lora->params(), lora->num_params()});
    b.push_back({"lora.adam_m", opt_lora_.m.f32(), opt_lora_.m.size()});
    b.push_back({"lora.adam_v", opt_lora_.v.f32(), opt_lora_.v.size()});
    if (ema_lora_.enabled()) b.push_back({"lora.ema", ema_lora_.w.f32(), ema_lora_.size()});
    b.push_back({"t5.params", te->t5().params(), te->t5().layout().total()});
    return b;
  }
  b.push_back({"dit.adam_m", opt_dit_.m.f32(), opt_dit_.m.size()});
  b.push_back({"dit.adam_v", opt_dit_.v.f32(), opt_dit_.v.size()});
  if (ema_dit_.enabled()) b.push_back({"dit.ema", ema_dit_.w.f32(), ema_dit_.size()});
  b.push_back({"t5.params", te->t5().params(), te->t5().layout().total()});
  if (train_te) {
    b.push_back({"t5.adam_m", opt_te_.m.f32(), opt_te_.m.size()});
    b.push_back({"t5.adam_v", opt_te_.v.f32(), opt_te_.v.size()});
    if (ema_te_.enabled()) b.push_back({"t5.ema", ema_te_.w.f32(), ema_te_.size()});
  }
  return b;
}

// ---------------------------------------------------------------- EMA weights in the models

EmaSwap::EmaSwap(Backend& be, float* params, const Ema& ema) : be_(be), params_(params) {
  if (!ema.enabled()) return;
  raw_ = be.alloc(ema.size(), DType::F32, "raw weights (EMA swap)");
  be.copy(raw_.f32(), params, ema.size());
  be.copy(params, ema.w.f32(), ema.size());
}

EmaSwap::~EmaSwap() {
  if (!raw_.empty()) be_.copy(params_, raw_.f32(), raw_.size());
}

EmaWeightsInModels::EmaWeightsInModels(TrainState& s)
    : dit_(s.be, s.dit->params(), s.ema_dit_),
      te_(s.be, s.te->t5().params(), s.ema_te_),
      lora_(s.be, s.lora ? s.lora->params() : nullptr, s.ema_lora_) {}

}  // namespace oboro
