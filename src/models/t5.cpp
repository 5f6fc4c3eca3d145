// T5 v1.1 encoder (spec §7): forward and hand-written backward over a flat parameter buffer.
// Shapes: B batch, L tokens, M = B·L rows, D = d_model, I = H·d_kv attention width, F = d_ff,
// R = 2L − 1 relative offsets. One block:
//   n1 = RMSNorm(x; layer.0.layer_norm)            (no mean subtraction, eps from the config)
//   x += o( Attn(q n1, k n1, v n1; bias = rel[bucket(j − i)] shared from block 0, key mask) )   (no 1/√d_kv)
//   n2 = RMSNorm(x; layer.1.layer_norm)
//   x += wo( gelu_tanh(wi_0 n2) ⊙ wi_1 n2 )
// hidden = RMSNorm(x; encoder.final_layer_norm). No biases anywhere, no embedding scaling.
#include "models/t5.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/tensor_table.h"
#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <filesystem>
#include <fstream>
#include <limits>

namespace oboro {

using nlohmann::json;

namespace {

const char* const kShared = "shared.weight";
const char* const kEmbedAlias = "encoder.embed_tokens.weight";
const char* const kFinalNorm = "encoder.final_layer_norm.weight";
const char* const kRelBias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
const char* const kArchitecture = "t5-v1.1-encoder";

std::string blk(int i) { return "encoder.block." + std::to_string(i) + "."; }

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// Tensors of a full T5 checkpoint the encoder does not use.
bool ignored_key(const std::string& n) {
  return starts_with(n, "decoder.") || starts_with(n, "lm_head.") || n == kEmbedAlias;
}

int get_int(const json& j, const char* key, const std::string& where, bool required, int def) {
  if (!j.contains(key)) {
    if (required) fail(where, ": T5 config is missing the required field '", key, "'");
    return def;
  }
  if (!j[key].is_number_integer()) fail(where, ": T5 config field '", key, "' must be an integer, got ", j[key].dump());
  return j[key].get<int>();
}

float get_float(const json& j, const char* key, const std::string& where, float def) {
  if (!j.contains(key)) return def;
  if (!j[key].is_number()) fail(where, ": T5 config field '", key, "' must be a number, got ", j[key].dump());
  return j[key].get<float>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config

int t5_relative_bucket(int n, int num_buckets, int max_distance) {
  const int half = num_buckets / 2, exact = half / 2;
  int b = n > 0 ? half : 0;
  const int64_t a = n < 0 ? -(int64_t)n : (int64_t)n;
  if (a < exact) return b + (int)a;
  const double large =
      std::log((double)a / exact) / std::log((double)max_distance / exact) * (double)(half - exact);
  const int64_t big = exact + (int64_t)std::min(large, (double)half);  // ⌊·⌋ (non-negative), clamp below
  return b + (int)std::min<int64_t>(big, half - 1);
}

void T5Config::validate(const std::string& where) const {
  auto bad = [&](const auto&... a) { fail(where, ": invalid T5 config: ", a...); };
  if (vocab_size <= 0) bad("vocab_size must be positive, got ", vocab_size);
  if (d_model <= 0) bad("d_model must be positive, got ", d_model);
  if (d_kv <= 0) bad("d_kv must be positive, got ", d_kv);
  if (num_heads <= 0) bad("num_heads must be positive, got ", num_heads);
  if (d_ff <= 0) bad("d_ff must be positive, got ", d_ff);
  if (num_layers <= 0) bad("num_layers must be positive, got ", num_layers);
  if (rel_buckets < 4 || rel_buckets % 2)
    bad("relative_attention_num_buckets must be even and at least 4, got ", rel_buckets);
  if (rel_max_distance <= rel_buckets / 4)
    bad("relative_attention_max_distance ", rel_max_distance, " must exceed num_buckets/4 = ", rel_buckets / 4);
  if (!(eps > 0) || !std::isfinite(eps)) bad("layer_norm_epsilon must be positive, got ", eps);
}

T5Config T5Config::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": T5 config must be a JSON object");
  T5Config c;
  c.vocab_size = get_int(j, "vocab_size", where, true, 0);
  c.d_model = get_int(j, "d_model", where, true, 0);
  c.d_kv = get_int(j, "d_kv", where, true, 0);
  c.num_heads = get_int(j, "num_heads", where, true, 0);
  c.d_ff = get_int(j, "d_ff", where, true, 0);
  c.num_layers = get_int(j, "num_layers", where, true, 0);
  c.rel_buckets = get_int(j, "relative_attention_num_buckets", where, false, 32);
  c.rel_max_distance = get_int(j, "relative_attention_max_distance", where, false, 128);
  c.eps = get_float(j, "layer_norm_epsilon", where, 1e-6f);
  if (j.contains("feed_forward_proj") && j["feed_forward_proj"] != "gated-gelu")
    fail(where, ": T5 config has feed_forward_proj ", j["feed_forward_proj"].dump(),
         "; oboro implements T5 v1.1 (\"gated-gelu\") only");
  c.validate(where);
  return c;
}

json T5Config::to_json() const {
  return json{{"vocab_size", vocab_size},
              {"d_model", d_model},
              {"d_kv", d_kv},
              {"num_heads", num_heads},
              {"d_ff", d_ff},
              {"num_layers", num_layers},
              {"relative_attention_num_buckets", rel_buckets},
              {"relative_attention_max_distance", rel_max_distance},
              {"layer_norm_epsilon", eps},
              {"feed_forward_proj", "gated-gelu"}};
}

T5Config T5Config::infer(const TensorSource& src) {
  const std::string& where = src.path();
  auto need = [&](const std::string& name, size_t ndim) -> const TensorInfo& {
    if (!src.has(name)) {
      if (name.find("wi_0") != std::string::npos && src.has(blk(0) + "layer.1.DenseReluDense.wi.weight"))
        fail(where, ": tensor ", name, " is missing: this is a T5 v1.0 checkpoint (ReLU FFN `wi`); oboro needs "
                    "T5 v1.1 (gated-GELU `wi_0`/`wi_1`, spec §7)");
      fail(where, ": tensor ", name, " is missing — cannot infer the T5 encoder config (spec §7 lists the "
                  "Hugging Face T5EncoderModel names)");
    }
    const TensorInfo& ti = src.info(name);
    if (ti.shape.size() != ndim)
      fail(where, ": tensor ", name, " has shape ", shape_str(ti.shape), ", expected ", ndim, " dimensions");
    return ti;
  };
  T5Config c;
  const char* emb = src.has(kShared) ? kShared : src.has(kEmbedAlias) ? kEmbedAlias : nullptr;
  if (!emb)
    fail(where, ": tensor shared.weight (or encoder.embed_tokens.weight) is missing — this is not a T5 encoder "
                "checkpoint (spec §7)");
  const TensorInfo& e = need(emb, 2);
  c.vocab_size = (int)e.shape[0];
  c.d_model = (int)e.shape[1];
  while (src.has(blk(c.num_layers) + "layer.0.SelfAttention.q.weight")) ++c.num_layers;
  if (c.num_layers == 0) need(blk(0) + "layer.0.SelfAttention.q.weight", 2);
  const TensorInfo& rb = need(kRelBias, 2);
  c.rel_buckets = (int)rb.shape[0];
  c.num_heads = (int)rb.shape[1];
  const TensorInfo& q = need(blk(0) + "layer.0.SelfAttention.q.weight", 2);
  if (c.num_heads <= 0 || q.shape[0] % c.num_heads)
    fail(where, ": tensor ", blk(0), "layer.0.SelfAttention.q.weight has ", q.shape[0],
         " rows, not a multiple of the ", c.num_heads, " heads given by ", kRelBias, " ", shape_str(rb.shape));
  c.d_kv = (int)(q.shape[0] / c.num_heads);
  c.d_ff = (int)need(blk(0) + "layer.1.DenseReluDense.wi_0.weight", 2).shape[0];

  // config.json beside the checkpoint (HF layout) may set the two values shapes cannot tell.
  namespace fs = std::filesystem;
  fs::path cj = fs::path(where).parent_path() / "config.json";
  std::error_code ec;
  if (fs::is_regular_file(cj, ec)) {
    std::ifstream f(cj);
    json j;
    try {
      j = json::parse(f);
    } catch (const std::exception& ex) {
      fail(cj.string(), ": not valid JSON: ", ex.what());
    }
    if (!j.is_object()) fail(cj.string(), ": must be a JSON object (a Hugging Face T5 config.json)");
    c.rel_max_distance = get_int(j, "relative_attention_max_distance", cj.string(), false, 128);
    c.eps = get_float(j, "layer_norm_epsilon", cj.string(), 1e-6f);
    if (j.contains("relative_attention_num_buckets") &&
        get_int(j, "relative_attention_num_buckets", cj.string(), false, 0) != c.rel_buckets)
      fail(cj.string(), ": relative_attention_num_buckets = ", j["relative_attention_num_buckets"].dump(),
           " but the checkpoint's ", kRelBias, " has ", c.rel_buckets, " rows");
    if (j.contains("feed_forward_proj") && j["feed_forward_proj"] != "gated-gelu")
      fail(cj.string(), ": feed_forward_proj is ", j["feed_forward_proj"].dump(),
           "; oboro implements T5 v1.1 (\"gated-gelu\") only");
    c.validate(cj.string());
  }
  c.validate(where);
  return c;
}

namespace {
struct BlockW {
  float *q, *k, *v, *o, *ln0, *wi0, *wi1, *wo, *ln1;
  float* rel;  // block 0 only: the relative-attention bias table every block uses
};
struct Weights {
  float *shared, *rel, *final_ln;
  std::vector<BlockW> blocks;
};

// The T5's tensors, each declared once (models/tensor_table.h): the layout (t5_param_layout, HF T5EncoderModel
// names, `shared.weight` first, the bias table in block 0 after its `o`), the pointers forward/backward read, the
// quantisable weights and their views (t5_quantizable, T5Encoder::LinearViews) and init_weights' rules (Hugging Face
// T5, factor 1: embedding N(0, 1), q N(0, 1/(d_model·d_kv)), k, v, wi_* and the bias table N(0, 1/d_model),
// o N(0, 1/(H·d_kv)), wo N(0, 1/d_ff), norms 1).
using T5Table = TensorTable<Weights, BlockW, T5Encoder::LinearViews>;
std::array<int64_t, 7> t5_sizes(const T5Config& c) {
  return {c.vocab_size, c.d_model, c.inner(), c.d_ff, c.rel_buckets, c.num_heads, (int64_t)c.d_model * c.d_kv};
}
const T5Table& t5_tensors() {
  // V vocabulary, D d_model, I = H·d_kv, F d_ff, NB relative buckets, H heads, DK = d_model·d_kv (t5_sizes).
  static constexpr Dim V{0}, D{1}, I{2}, F{3}, NB{4}, H{5}, DK{6};
  using B = BlockW;
  using LV = T5Encoder::LinearViews;
  static const TensorDecl<Weights> head[] = {
      {kShared, {V, D}, Role::Weight, normal_init(1.0), &Weights::shared},
  };
  static const TensorDecl<B, LV> block[] = {  // under "encoder.block.{i}."
      {"layer.0.SelfAttention.q.weight", {I, D}, Role::Weight, normal_init(1.0, DK), &B::q, &LV::q},
      {"layer.0.SelfAttention.k.weight", {I, D}, Role::Weight, normal_init(1.0, D), &B::k, &LV::k},
      {"layer.0.SelfAttention.v.weight", {I, D}, Role::Weight, normal_init(1.0, D), &B::v, &LV::v},
      {"layer.0.SelfAttention.o.weight", {D, I}, Role::Weight, normal_init(1.0, I), &B::o, &LV::o},
      {"layer.0.SelfAttention.relative_attention_bias.weight", {NB, H}, Role::Weight, normal_init(1.0, D), &B::rel,
       nullptr, /*first_block_only=*/true},  // = kRelBias
      {"layer.0.layer_norm.weight", {D}, Role::Norm, kOnes, &B::ln0},
      {"layer.1.DenseReluDense.wi_0.weight", {F, D}, Role::Weight, normal_init(1.0, D), &B::wi0, &LV::wi0},
      {"layer.1.DenseReluDense.wi_1.weight", {F, D}, Role::Weight, normal_init(1.0, D), &B::wi1, &LV::wi1},
      {"layer.1.DenseReluDense.wo.weight", {D, F}, Role::Weight, normal_init(1.0, F), &B::wo, &LV::wo},
      {"layer.1.layer_norm.weight", {D}, Role::Norm, kOnes, &B::ln1},
  };
  static const TensorDecl<Weights> tail[] = {
      {kFinalNorm, {D}, Role::Norm, kOnes, &Weights::final_ln},
  };
  static const T5Table table{head, "encoder.block.", block, tail};
  return table;
}

Weights bind(const ParamLayout& L, float* base, int layers) {
  Weights w{};
  t5_tensors().bind_top(w, L, base);
  w.blocks = t5_tensors().bind_blocks(L, base, layers);
  w.rel = w.blocks.at(0).rel;  // declared in block 0, used by every block
  return w;
}
}  // namespace

ParamLayout t5_param_layout(const T5Config& c) { return t5_tensors().layout(c.num_layers, t5_sizes(c)); }

bool t5_quantizable(const std::string& n) { return t5_tensors().quantizable(n); }

double t5_init_stddev(const T5Config& c, const std::string& name) {
  const auto sizes = t5_sizes(c);
  double sd = 0;
  if (!t5_tensors().find(name, [&](const auto& d) { sd = d.init.stddev(d.shape.of(sizes), sizes); }))
    fail("t5_init_stddev: no T5 tensor is named ", name);
  return sd;
}

int64_t T5Config::param_count() const {
  const ParamLayout layout = t5_param_layout(*this);
  int64_t n = 0;
  for (const auto& v : layout.views()) n += (int64_t)v.numel();
  return n;
}

// ---------------------------------------------------------------------------------------------
// Encoder

struct T5Encoder::Impl {
  Backend* be;  // null in a dry run (activation_bytes): nothing is allocated
  std::vector<Buffer> owned;
  size_t floats = 0;
  int B = 0, L = 0;
  bool training = false;
  bool have_training_forward = false;

  struct LayerActs {
    float *x_in = nullptr, *x_mid = nullptr;  // (M,D) stream before each sub-block (training only)
    float *rstd1, *n1, *q, *k, *v, *o, *lse;  // rstd (M), n1 (M,D), q/k/v/o (M,I), lse (B,H,L)
    float *rstd2, *n2, *h0, *h1, *gg;         // rstd (M), n2 (M,D), wi_0 / wi_1 outputs and gated (M,F)
  };
  int32_t *ids = nullptr, *buckets = nullptr;  // token ids (M), relative-position buckets (2L − 1)
  float *key_valid = nullptr, *rel = nullptr;
  float *stream = nullptr, *tmp = nullptr, *fin_rstd = nullptr;
  std::vector<LayerActs> layers;
  // backward scratch (allocated on the first backward for this shape)
  float *dh = nullptr, *dn = nullptr, *d_o = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  float *d_gg = nullptr, *d_h0 = nullptr, *d_h1 = nullptr, *d_rel = nullptr;

  explicit Impl(Backend* b) : be(b) {}
  float* take(size_t n) {
    owned.push_back(be->alloc(n ? n : 1, DType::F32, "t5.activations"));
    floats += n;
    return owned.back().f32();
  }
  int32_t* take_ids(size_t n) {
    owned.push_back(be->alloc(n ? n : 1, DType::I32, "t5.ids"));
    floats += n;  // 4 bytes each, as the F32 activations
    return owned.back().i32();
  }
  LayerActs& layer(int l) { return layers[training ? l : 0]; }
};

T5Encoder::T5Encoder(const T5Config& cfg, Backend& be, WFormat weights) : cfg_(cfg), be_(be), wfmt_(weights) {
  cfg_.validate("T5 config");
  full_layout_ = t5_param_layout(cfg_);
  if (wfmt_ == WFormat::F32) layout_ = full_layout_;
  else layout_ = t5_tensors().layout(cfg_.num_layers, t5_sizes(cfg_), /*f32_only=*/true);
  params_buf_ = be_.alloc(layout_.total(), DType::F32, "t5.params");
  params_ = params_buf_.f32();
  bind_linear_views();
}

void T5Encoder::bind_linear_views() {
  for (auto& [n, q] : qw_) q.bind(be_);
  lv_ = t5_tensors().bind_views(cfg_.num_layers, [&](const std::string& n) -> WeightView {
    const ParamView& fv = full_layout_.at(n);
    if (const ParamView* v = layout_.find(n)) return f32_view(params_ + v->offset, (int)fv.shape[0], (int)fv.shape[1]);
    auto it = qw_.find(n);
    return it == qw_.end() ? WeightView{} : it->second.view();
  });
}

void T5Encoder::require_f32(const char* what) const {
  if (wfmt_ != WFormat::F32)
    fail("this T5 encoder holds ", wformat_name(wfmt_), " weights (inference only): ", what,
         " needs F32 weights — load it with --type f32 (or use the F32 text-encoder file)");
}

size_t T5Encoder::weight_bytes() const {
  size_t b = layout_.total() * sizeof(float);
  for (const auto& [n, q] : qw_) b += q.bytes();
  return b;
}

T5Encoder::~T5Encoder() {
  impl_.reset();
}

float* T5Encoder::grads() {
  require_f32("training");
  if (!grads_) {
    grads_buf_ = be_.alloc(layout_.total(), DType::F32, "t5.grads");
    grads_ = grads_buf_.f32();
  }
  return grads_;
}

void T5Encoder::zero_grads() { be_.zero(grads(), layout_.total()); }

size_t T5Encoder::activation_bytes() const { return impl_ ? impl_->floats * sizeof(float) : 0; }

std::unique_ptr<T5Encoder> T5Encoder::load(const std::string& path, Backend& be, std::optional<WFormat> type) {
  TensorSource src = TensorSource::open(path);
  T5Config cfg;
  auto it = src.metadata().find("oboro.t5_config");
  if (it != src.metadata().end()) {
    json j;
    try {
      j = json::parse(it->second);
    } catch (const std::exception& e) {
      fail(src.path(), ": 'oboro.t5_config' metadata is not valid JSON: ", e.what());
    }
    cfg = T5Config::from_json(j, src.path());
  } else {
    cfg = T5Config::infer(src);
  }
  const WFormat fmt = type ? *type : file_weight_format(src);
  auto model = std::make_unique<T5Encoder>(cfg, be, fmt);
  const ParamLayout& layout = model->full_layout_;

  std::vector<std::string> unknown;
  for (const auto& n : src.names()) {
    if (layout.find(n) || ignored_key(n)) continue;
    if (n.size() > 6 && n.compare(n.size() - 6, 6, "_scale") == 0 && layout.find(n.substr(0, n.size() - 6))) continue;
    unknown.push_back(n);
  }
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 5; ++i) list += (i ? ", " : "") + unknown[i];
    if (unknown.size() > 5) list += str(", ... (", unknown.size(), " in all)");
    fail(src.path(), ": unknown tensor(s) for the T5 v1.1 encoder: ", list,
         " — is this a T5 v1.1 checkpoint (spec §7), and does its config match its tensors?");
  }
  std::vector<float> host;
  for (const auto& v : layout.views()) {
    std::string name = v.name;
    if (name == kShared && !src.has(kShared) && src.has(kEmbedAlias)) name = kEmbedAlias;
    if (!src.has(name))
      fail(src.path(), ": tensor ", v.name, " is missing (the T5 encoder expects shape ", shape_str(v.shape),
           ") — the checkpoint is incomplete or its config does not match its tensors");
    const TensorInfo& info = src.info(name);
    if (info.shape != v.shape)
      fail(src.path(), ": tensor ", name, " has shape ", shape_str(info.shape), " but the T5 config expects ",
           shape_str(v.shape), " — the config does not match the tensors");
    if (const ParamView* mine = model->layout_.find(v.name)) {
      Tensor t = read_weight_f32(src, name, v.shape, "the T5 encoder");
      be.upload(model->params_ + mine->offset, t.f32(), v.numel());
    } else {
      model->qw_[v.name] = load_weight(src, name, v.shape, fmt, "the T5 encoder");
    }
  }
  model->bind_linear_views();
  return model;
}

void T5Encoder::save(const std::string& path, const std::map<std::string, std::string>& extra) const {
  if (wfmt_ != WFormat::F32)
    fail("saving a T5 encoder loaded as ", wformat_name(wfmt_), " is not supported: write low-precision files with "
         "`oboro convert --type ", wformat_name(wfmt_), " IN OUT` from the F32 file");
  auto host = download_params(layout_, params_, be_);
  SafetensorsWriter wr;
  for (auto& [n, t] : host) wr.add(n, t);
  wr.set_metadata("oboro.t5_config", cfg_.to_json().dump());
  wr.set_metadata("modelspec.sai_model_spec", "1.0.1");
  wr.set_metadata("modelspec.architecture", kArchitecture);
  for (auto& [k, v] : extra) wr.set_metadata(k, v);
  wr.write(path);
}

void T5Encoder::init_weights(uint64_t seed) {
  require_f32("initialisation");
  t5_tensors().init(be_, layout_, params_, cfg_.num_layers, t5_sizes(cfg_), seed);
}

namespace {
// Every activation buffer of a forward's plan (a.B, a.L, a.training set), in allocation order: take(member, floats).
// plan() allocates them (Impl::take) and T5Encoder::activation_bytes(cfg, ...) only counts them: one list for both.
// (The backward's scratch is allocated on the first backward.)
template <class A, class Take>
void declare_acts(const T5Config& cfg, A& a, Take&& take) {
  const size_t M = (size_t)a.B * a.L, D = cfg.d_model, I = cfg.inner(), F = cfg.d_ff, H = cfg.num_heads;
  const size_t R = 2 * (size_t)a.L - 1;
  take(a.ids, M);
  take(a.key_valid, M);
  take(a.buckets, R);
  take(a.rel, H * R);
  take(a.stream, M * D);
  take(a.tmp, M * D);
  take(a.fin_rstd, M);
  a.layers.resize(a.training ? cfg.num_layers : 1);
  for (auto& la : a.layers) {
    if (a.training) {
      take(la.x_in, M * D);
      take(la.x_mid, M * D);
    }
    take(la.rstd1, M);
    take(la.n1, M * D);
    take(la.q, M * I);
    take(la.k, M * I);
    take(la.v, M * I);
    take(la.o, M * I);
    take(la.lse, (size_t)a.B * H * a.L);
    take(la.rstd2, M);
    take(la.n2, M * D);
    take(la.h0, M * F);
    take(la.h1, M * F);
    take(la.gg, M * F);
  }
}
}  // namespace

size_t T5Encoder::activation_bytes(const T5Config& cfg, int B, int L, bool training) {
  if (B <= 0 || L <= 0) fail("T5 encoder: empty batch (B=", B, ", L=", L, ")");
  Impl a(nullptr);  // a dry run: nothing is allocated
  a.B = B;
  a.L = L;
  a.training = training;
  size_t floats = 0;
  declare_acts(cfg, a, [&](auto*& ptr, size_t n) {
    ptr = nullptr;
    floats += n;
  });
  return floats * sizeof(float);
}

void T5Encoder::plan(int B, int L, bool training) {
  if (impl_ && impl_->B == B && impl_->L == L && impl_->training == training) return;
  impl_.reset();
  auto a = std::make_unique<Impl>(&be_);
  a->B = B;
  a->L = L;
  a->training = training;
  declare_acts(cfg_, *a, [&](auto*& ptr, size_t n) {
    if constexpr (std::is_same_v<std::remove_reference_t<decltype(ptr)>, int32_t*>) ptr = a->take_ids(n);
    else ptr = a->take(n);
  });
  const size_t R = 2 * (size_t)L - 1;
  std::vector<int32_t> bk(R);
  for (int n = -(L - 1); n <= L - 1; ++n) bk[n + L - 1] = t5_relative_bucket(n, cfg_.rel_buckets, cfg_.rel_max_distance);
  be_.upload(a->buckets, bk.data(), R);
  impl_ = std::move(a);
}

void T5Encoder::forward(float* hidden, const int32_t* ids, const float* mask, int B, int L, bool training) {
  if (B <= 0 || L <= 0) fail("T5 encoder: empty batch (B=", B, ", L=", L, ")");
  const int V = cfg_.vocab_size;
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l) {
      int32_t id = ids[(size_t)b * L + l];
      if (id < 0 || id >= V)
        fail("token id ", id, " at (", b, ", ", l, ") is out of range for the T5 vocabulary of size ", V,
             " (valid ids 0..", V - 1, "): the tokenizer does not match this text encoder");
    }
  plan(B, L, training);
  Impl& a = *impl_;
  a.have_training_forward = false;
  Backend& be = be_;
  const Weights W = bind(layout_, params_, cfg_.num_layers);
  const int D = cfg_.d_model, I = cfg_.inner(), F = cfg_.d_ff, H = cfg_.num_heads, M = B * L, R = 2 * L - 1;
  const float eps = cfg_.eps;

  std::vector<float> kv((size_t)M);
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = !mask || mask[i] != 0.f ? 1.f : 0.f;
  be.upload(a.key_valid, kv.data(), kv.size());
  be.upload(a.ids, ids, (size_t)M);

  be.bucket_bias_forward(a.rel, W.rel, a.buckets, R, H);
  be.embedding_forward(a.stream, W.shared, a.ids, M, D);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    Impl::LayerActs& la = a.layer(l);
    const BlockW& w = W.blocks[l];
    const LinearViews& V = lv_[l];
    if (training) require_f32("training");
    if (training) be.copy(la.x_in, a.stream, (size_t)M * D);
    be.rmsnorm_forward(la.n1, la.rstd1, a.stream, w.ln0, M, D, eps);
    be.linear_forward_w(la.q, la.n1, V.q, nullptr, M, D, I);
    be.linear_forward_w(la.k, la.n1, V.k, nullptr, M, D, I);
    be.linear_forward_w(la.v, la.n1, V.v, nullptr, M, D, I);
    be.attention_forward(la.o, la.lse, la.q, la.k, la.v, a.key_valid, B, L, H, cfg_.d_kv, 1.f, a.rel);
    be.linear_forward_w(a.tmp, la.o, V.o, nullptr, M, I, D);
    be.add_inplace(a.stream, a.tmp, (size_t)M * D);

    if (training) be.copy(la.x_mid, a.stream, (size_t)M * D);
    be.rmsnorm_forward(la.n2, la.rstd2, a.stream, w.ln1, M, D, eps);
    be.linear_forward_w(la.h0, la.n2, V.wi0, nullptr, M, D, F);
    be.linear_forward_w(la.h1, la.n2, V.wi1, nullptr, M, D, F);
    be.geglu_forward(la.gg, la.h0, la.h1, (size_t)M * F);
    be.linear_forward_w(a.tmp, la.gg, V.wo, nullptr, M, F, D);
    be.add_inplace(a.stream, a.tmp, (size_t)M * D);
  }
  be.rmsnorm_forward(hidden, a.fin_rstd, a.stream, W.final_ln, M, D, eps);
  a.have_training_forward = training;
}

void T5Encoder::backward(const float* dhidden) {
  require_f32("backward");
  if (!impl_ || !impl_->have_training_forward)
    fail("internal error: T5Encoder::backward needs a preceding forward(training = true)");
  Impl& a = *impl_;
  Backend& be = be_;
  grads();
  const Weights W = bind(layout_, params_, cfg_.num_layers);
  const Weights G = bind(layout_, grads_, cfg_.num_layers);
  const int B = a.B, L = a.L, D = cfg_.d_model, I = cfg_.inner(), F = cfg_.d_ff, H = cfg_.num_heads;
  const int M = B * L, R = 2 * L - 1;
  const size_t MD = (size_t)M * D, MI = (size_t)M * I, MF = (size_t)M * F;
  if (!a.dh) {
    a.dh = a.take(MD);
    a.dn = a.take(MD);
    a.d_o = a.take(MI);
    a.dq = a.take(MI);
    a.dk = a.take(MI);
    a.dv = a.take(MI);
    a.d_gg = a.take(MF);
    a.d_h0 = a.take(MF);
    a.d_h1 = a.take(MF);
    a.d_rel = a.take((size_t)H * R);
  }
  be.zero(a.dh, MD);
  be.zero(a.d_rel, (size_t)H * R);
  be.rmsnorm_backward(a.dh, G.final_ln, dhidden, a.stream, W.final_ln, a.fin_rstd, M, D);
  for (int l = cfg_.num_layers - 1; l >= 0; --l) {
    Impl::LayerActs& la = a.layers[l];
    const BlockW& w = W.blocks[l];
    const BlockW& g = G.blocks[l];
    // x_out = x_mid + wo(gelu(wi_0 n2) ⊙ wi_1 n2), n2 = RMSNorm(x_mid): dh passes the residual unchanged.
    be.zero(a.d_gg, MF);
    be.linear_backward(a.d_gg, g.wo, nullptr, a.dh, la.gg, w.wo, M, F, D);
    be.zero(a.d_h0, MF);
    be.zero(a.d_h1, MF);
    be.geglu_backward(a.d_h0, a.d_h1, a.d_gg, la.h0, la.h1, MF);
    be.zero(a.dn, MD);
    be.linear_backward(a.dn, g.wi0, nullptr, a.d_h0, la.n2, w.wi0, M, D, F);
    be.linear_backward(a.dn, g.wi1, nullptr, a.d_h1, la.n2, w.wi1, M, D, F);
    be.rmsnorm_backward(a.dh, g.ln1, a.dn, la.x_mid, w.ln1, la.rstd2, M, D);
    // x_mid = x_in + o(Attn(q n1, k n1, v n1; rel)), n1 = RMSNorm(x_in).
    be.zero(a.d_o, MI);
    be.linear_backward(a.d_o, g.o, nullptr, a.dh, la.o, w.o, M, I, D);
    be.zero(a.dq, MI);
    be.zero(a.dk, MI);
    be.zero(a.dv, MI);
    be.attention_backward(a.dq, a.dk, a.dv, a.d_o, la.q, la.k, la.v, la.o, la.lse, a.key_valid, B, L, H, cfg_.d_kv,
                          1.f, a.rel, a.d_rel);
    be.zero(a.dn, MD);
    be.linear_backward(a.dn, g.q, nullptr, a.dq, la.n1, w.q, M, D, I);
    be.linear_backward(a.dn, g.k, nullptr, a.dk, la.n1, w.k, M, D, I);
    be.linear_backward(a.dn, g.v, nullptr, a.dv, la.n1, w.v, M, D, I);
    be.rmsnorm_backward(a.dh, g.ln0, a.dn, la.x_in, w.ln0, la.rstd1, M, D);
  }
  be.embedding_backward(G.shared, a.dh, a.ids, M, D);
  be.bucket_bias_backward(G.rel, a.d_rel, a.buckets, R, H);
}

}  // namespace oboro
