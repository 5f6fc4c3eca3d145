// DiT forward/backward. Shapes: B batch, L text tokens, N = (h/p)(w/p) image tokens,
// S = L + N, M = B·S rows, D width, C cond width, T text dim, F FFN width, P = C_lat·p².
// The residual stream `h` is (B, S, D) with each sample's text rows first.
#include "models/dit.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/tensor_table.h"
#include "ops/rope.h"
#include <array>
#include <cmath>

namespace oboro {

// Pointers to one block's tensors inside a flat buffer (params or grads).
struct DiT::Layer {
  float *qkv, *qn_w, *qn_b, *kn_w, *kn_b, *out, *w1, *w2, *w3, *an1, *an2, *fn1, *fn2, *ada_w, *ada_b;
};

namespace {
struct Weights {
  float *t0w, *t0b, *t2w, *t2b, *b0w, *b0b, *b2w, *b2b, *capg, *capw, *capb, *xw, *xb, *fmw, *fmb, *flw, *flb;
};

// The DiT's tensors, each declared once (models/tensor_table.h): the layout (dit_param_layout: names, shapes and the
// order of the flat buffer that checkpoints and the optimiser's moments keep), the pointers forward/backward read
// (Weights, DiT::Layer), the quantisable weights and their views (dit_quantizable, DiT::LinearViews) and
// init_weights' rules all come from here. Init: Linear weights Xavier-normal N(0, 2/(fan_in + fan_out)), the
// t_embedder's N(0, 0.02²), biases 0, norm scales 1, adaLN modulation and the final layer 0 (each block starts as
// the identity and the model predicts v = 0).
using DiTTable = TensorTable<Weights, DiT::Layer, DiT::LinearViews>;
std::array<int64_t, 5> dit_sizes(const DiTConfig& c) {
  return {c.hidden_size, c.cond(), c.text_dim, c.ffn_hidden_size, c.features()};
}
const DiTTable& dit_tensors() {
  // D width, C cond width, T text dim, F FFN width, P = C_lat·p² (dit_sizes).
  static constexpr Dim D{0}, C{1}, T{2}, F{3}, P{4};
  using L = DiT::Layer;
  using V = DiT::LinearViews;
  static const TensorDecl<Weights> head[] = {
      {"t_embedder.mlp.0.weight", {C, lit(256)}, Role::Weight, normal_init(0.02), &Weights::t0w},
      {"t_embedder.mlp.0.bias", {C}, Role::Bias, kZeros, &Weights::t0b},
      {"t_embedder.mlp.2.weight", {C, C}, Role::Weight, normal_init(0.02), &Weights::t2w},
      {"t_embedder.mlp.2.bias", {C}, Role::Bias, kZeros, &Weights::t2b},
      {"bos_embedder.mlp.0.weight", {C, T}, Role::Weight, kXavier, &Weights::b0w},
      {"bos_embedder.mlp.0.bias", {C}, Role::Bias, kZeros, &Weights::b0b},
      {"bos_embedder.mlp.2.weight", {C, C}, Role::Weight, kXavier, &Weights::b2w},
      {"bos_embedder.mlp.2.bias", {C}, Role::Bias, kZeros, &Weights::b2b},
      {"cap_embedder.0.weight", {T}, Role::Norm, kOnes, &Weights::capg},
      {"cap_embedder.1.weight", {D, T}, Role::Weight, kXavier, &Weights::capw},
      {"cap_embedder.1.bias", {D}, Role::Bias, kZeros, &Weights::capb},
      {"x_embedder.weight", {D, P}, Role::Weight, kXavier, &Weights::xw},
      {"x_embedder.bias", {D}, Role::Bias, kZeros, &Weights::xb},
  };
  static const TensorDecl<L, V> layer[] = {  // under "layers.{i}."
      {"attention.qkv.weight", {3 * D, D}, Role::Weight, kXavier, &L::qkv, &V::qkv},
      {"attention.q_norm.weight", {D}, Role::Norm, kOnes, &L::qn_w},
      {"attention.q_norm.bias", {D}, Role::Bias, kZeros, &L::qn_b},
      {"attention.k_norm.weight", {D}, Role::Norm, kOnes, &L::kn_w},
      {"attention.k_norm.bias", {D}, Role::Bias, kZeros, &L::kn_b},
      {"attention.out.weight", {D, D}, Role::Weight, kXavier, &L::out, &V::out},
      {"feed_forward.w1.weight", {F, D}, Role::Weight, kXavier, &L::w1, &V::w1},
      {"feed_forward.w2.weight", {D, F}, Role::Weight, kXavier, &L::w2, &V::w2},
      {"feed_forward.w3.weight", {F, D}, Role::Weight, kXavier, &L::w3, &V::w3},
      {"attention_norm1.weight", {D}, Role::Norm, kOnes, &L::an1},
      {"attention_norm2.weight", {D}, Role::Norm, kOnes, &L::an2},
      {"ffn_norm1.weight", {D}, Role::Norm, kOnes, &L::fn1},
      {"ffn_norm2.weight", {D}, Role::Norm, kOnes, &L::fn2},
      {"adaLN_modulation.1.weight", {4 * D, C}, Role::Weight, kZeros, &L::ada_w, &V::ada},
      {"adaLN_modulation.1.bias", {4 * D}, Role::Bias, kZeros, &L::ada_b},
  };
  static const TensorDecl<Weights> tail[] = {
      {"final_layer.adaLN_modulation.1.weight", {D, C}, Role::Weight, kZeros, &Weights::fmw},
      {"final_layer.adaLN_modulation.1.bias", {D}, Role::Bias, kZeros, &Weights::fmb},
      {"final_layer.linear.weight", {P, D}, Role::Weight, kZeros, &Weights::flw},
      {"final_layer.linear.bias", {P}, Role::Bias, kZeros, &Weights::flb},
  };
  static const DiTTable table{head, "layers.", layer, tail};
  return table;
}

Weights bind_weights(const ParamLayout& L, float* base) {
  Weights w{};
  dit_tensors().bind_top(w, L, base);
  return w;
}
}  // namespace

ParamLayout dit_param_layout(const DiTConfig& c) { return dit_tensors().layout(c.layers(), dit_sizes(c)); }

static std::vector<DiT::Layer> bind_layers(const ParamLayout& L, float* base, int n) {
  return dit_tensors().bind_blocks(L, base, n);
}

// Activations one block saves for backward (in inference one set is reused by every block).
struct DiT::LayerActs {
  float *x_in = nullptr, *x_mid = nullptr;             // (M,D) residual stream before each sub-block (training)
  float *a_rstd, *a_n, *a_m;                           // attention_norm1: rstd (M), normed (M,D), modulated (M,D)
  float *q_pre, *k_pre, *v;                            // (M,D) projections
  float *q_mean, *q_rstd, *k_mean, *k_rstd;            // (M) QK LayerNorm statistics
  float *q, *k;                                        // (M,D) after LayerNorm + RoPE
  float *o, *lse;                                      // (M,D) attention output; (B,H,S) logsumexp
  float *ao, *ao_rstd, *an2;                           // out projection (M,D); attention_norm2 rstd (M), out (M,D)
  float *f_rstd, *f_n, *f_m;                           // ffn_norm1
  float *h1, *h3, *g;                                  // (M,F) SwiGLU inputs / output
  float *f, *f2_rstd, *fn2;                            // w2 output (M,D); ffn_norm2
};

struct DiT::Acts {
  Backend* be;  // null in a dry run (activation_bytes): nothing is allocated
  std::vector<Buffer> owned;
  size_t floats = 0;
  int B = 0, L = 0, h = 0, w = 0, S = 0, N = 0;
  bool training = false;
  float* take(size_t n) {
    owned.push_back(be->alloc(n, DType::F32, "dit.activations"));
    floats += n;
    return owned.back().f32();
  }
  explicit Acts(Backend* b) : be(b) {}

  float *key_valid, *txt_copy;
  float *temb_in, *te1, *te1s, *temb, *bos_in, *be1, *be1s, *bemb, *c, *sc;
  float *cap_rstd, *cap_n, *cap_out, *tokens, *img_out, *h_stream, *mods;
  float *fin_x, *fin_mean, *fin_rstd, *fin_n, *fscale, *fin_m, *out_tok;
  std::vector<LayerActs> layers;
  std::map<int, std::pair<float*, float*>> rope;  // head dim -> (cos, sin) tables (S, dh/2)
  LayerActs& layer(int l) { return layers[training ? l : 0]; }
};

struct DiT::GradScratch {
  Backend& be;
  std::vector<Buffer> owned;
  int M = 0, B = 0, L = 0, N = 0;
  float* take(size_t n) {
    owned.push_back(be.alloc(n, DType::F32, "dit.grad_scratch"));
    return owned.back().f32();
  }
  explicit GradScratch(Backend& b) : be(b) {}
  float *dh, *dmod, *dsc, *dc, *d_te1s, *d_te1, *d_be1s, *d_be1, *d_bos;
  float *d_fn2, *d_f, *d_g, *d_h1, *d_h3, *d_fm, *d_fn, *d_an2, *d_ao, *d_o, *dq, *dk, *dv, *d_qpre, *d_kpre, *d_am,
      *d_an;
  float *d_out_tok, *d_fin_m, *d_fin_n, *d_fin_x, *d_fscale, *d_cap_out, *d_cap_n, *d_img_out;
};

bool dit_quantizable(const std::string& n) { return dit_tensors().quantizable(n); }

DiT::DiT(const DiTConfig& cfg, Backend& be, WFormat weights) : cfg_(cfg), be_(be), wfmt_(weights) {
  cfg_.validate("model config");
  full_layout_ = dit_param_layout(cfg_);
  if (wfmt_ == WFormat::F32) layout_ = full_layout_;
  else layout_ = dit_tensors().layout(cfg_.layers(), dit_sizes(cfg_), /*f32_only=*/true);
  params_buf_ = be_.alloc(layout_.total(), DType::F32, "dit.params");
  params_ = params_buf_.f32();
  layers_ = bind_layers(layout_, params_, cfg_.layers());
  bind_linear_views();
}

void DiT::bind_linear_views() {
  for (auto& [n, q] : qw_) q.bind(be_);
  lv_ = dit_tensors().bind_views(cfg_.layers(), [&](const std::string& n) -> WeightView {
    const ParamView& fv = full_layout_.at(n);
    if (const ParamView* v = layout_.find(n)) return f32_view(params_ + v->offset, (int)fv.shape[0], (int)fv.shape[1]);
    auto it = qw_.find(n);
    return it == qw_.end() ? WeightView{} : it->second.view();  // empty until the weight is set
  });
}

void DiT::require_f32(const char* what) const {
  if (wfmt_ != WFormat::F32)
    fail("this DiT holds ", wformat_name(wfmt_), " weights (inference only): ", what,
         " needs F32 master weights — load the model with --type f32 (or train from the F32 model file)");
}

size_t DiT::weight_bytes() const {
  size_t b = layout_.total() * sizeof(float);
  for (const auto& [n, q] : qw_) b += q.bytes();
  return b;
}

std::unique_ptr<DiT> DiT::converted(WFormat fmt) const {
  auto m = std::make_unique<DiT>(cfg_, be_, fmt);
  convert_weights_to(be_, full_layout_, layout_, params_, qw_, m->layout_, m->params_, m->qw_, fmt);
  m->bind_linear_views();
  return m;
}

DiT::~DiT() {
  acts_.reset();
  gs_.reset();
}

float* DiT::grads() {
  require_f32("training");
  if (!grads_) {
    grads_buf_ = be_.alloc(layout_.total(), DType::F32, "dit.grads");
    grads_ = grads_buf_.f32();
    dlayers_ = bind_layers(layout_, grads_, cfg_.layers());
  }
  return grads_;
}

void DiT::zero_grads() { be_.zero(grads(), layout_.total()); }

std::unique_ptr<DiT> DiT::load(const std::string& path, Backend& be, std::optional<WFormat> type) {
  TensorSource src = TensorSource::open(path);
  auto it = src.metadata().find("oboro.config");
  if (it == src.metadata().end())
    fail(path, ": no 'oboro.config' in the safetensors metadata — this is not an oboro DiT file "
               "(a model file must carry its config; see `oboro info` and spec §9)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    fail(path, ": 'oboro.config' metadata is not valid JSON: ", e.what());
  }
  const WFormat fmt = type ? *type : file_weight_format(src);
  auto model = std::make_unique<DiT>(DiTConfig::from_json(j, path), be, fmt);
  const ParamLayout& full = model->full_layout_;
  load_params(model->layout_, model->params_, be, src, "the oboro DiT",
              [&](const std::string& n) { return full.find(n) != nullptr; });
  if (fmt != WFormat::F32)
    for (const auto& v : full.views())
      if (!model->layout_.find(v.name)) {
        if (!src.has(v.name))
          fail(path, ": tensor ", v.name, " is missing (the oboro DiT expects shape ", shape_str(v.shape),
               ") — the file is incomplete or its config does not match its tensors");
        model->qw_[v.name] = load_weight(src, v.name, v.shape, fmt, "the oboro DiT");
      }
  model->bind_linear_views();
  return model;
}

void DiT::save(const std::string& path, const std::map<std::string, std::string>& extra) const {
  if (wfmt_ != WFormat::F32)
    fail("saving a DiT loaded as ", wformat_name(wfmt_), " is not supported: write low-precision files with "
         "`oboro convert --type ", wformat_name(wfmt_), " IN OUT` from the F32 model file");
  auto host = download_params(layout_, params_, be_);
  SafetensorsWriter wr;
  for (auto& [n, t] : host) wr.add(n, t);
  wr.set_metadata("oboro.config", cfg_.to_json().dump());
  wr.set_metadata("modelspec.sai_model_spec", "1.0.1");
  wr.set_metadata("modelspec.architecture", "oboro-dit-v1");
  for (auto& [k, v] : extra) wr.set_metadata(k, v);
  wr.write(path);
}

void DiT::init_weights(uint64_t seed) {
  require_f32("initialisation");
  dit_tensors().init(be_, layout_, params_, cfg_.layers(), dit_sizes(cfg_), seed);
}

void DiT::init_random_all(uint64_t seed) {
  require_f32("initialisation");
  std::vector<float> host;
  uint64_t stream = 0;
  dit_tensors().each(cfg_.layers(), [&](const auto& d, const std::string& n) {
    const ParamView& v = layout_.at(n);
    host.resize(v.numel());
    if (d.role == Role::Norm) fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 1.f, 0.1f);
    else if (d.role == Role::Bias) fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, 0.1f);
    else fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, (float)(1.0 / std::sqrt((double)v.shape[1])));
    ++stream;
    be_.upload(params_ + v.offset, host.data(), host.size());
  });
}

namespace {

void check_plan_shape(const DiTConfig& cfg, int B, int L, int h, int w) {
  const int p = cfg.patch_size;
  if (h % p || w % p)
    fail("latent size ", h, "x", w, " is not divisible by the patch size ", p,
         ": image sides must be multiples of ", 8 * p, " pixels");
  if (B <= 0 || L <= 0 || h <= 0 || w <= 0) fail("empty batch: B=", B, " L=", L, " h=", h, " w=", w);
}

template <class A>
void set_plan_shape(const DiTConfig& cfg, A& a, int B, int L, int h, int w, bool training) {
  const int p = cfg.patch_size;
  a.B = B; a.L = L; a.h = h; a.w = w; a.training = training;
  a.N = (h / p) * (w / p);
  a.S = L + a.N;
}

// Every activation buffer of a plan (the shape set by set_plan_shape), in allocation order: take(member, floats).
// plan() allocates them (Acts::take) and DiT::activation_bytes(cfg, ...) only counts them: one list for both.
template <class A, class Take>
void declare_acts(const DiTConfig& cfg, A& a, Take&& take) {
  const bool training = a.training;
  const size_t B = a.B, L = a.L, N = a.N, S = a.S, M = B * S;
  const size_t D = cfg.hidden_size, C = cfg.cond(), T = cfg.text_dim, F = cfg.ffn_hidden_size, P = cfg.features();
  int maxH = 0;
  for (int hh : cfg.heads) maxH = std::max(maxH, hh);
  auto opt = [&](bool on, float*& ptr, size_t n) {
    if (on) take(ptr, n);
    else ptr = nullptr;
  };
  take(a.key_valid, B * S);
  opt(training, a.txt_copy, B * L * T);
  take(a.temb_in, B * 256);
  take(a.te1, B * C); take(a.te1s, B * C); take(a.temb, B * C);
  take(a.bos_in, B * T);
  take(a.be1, B * C); take(a.be1s, B * C); take(a.bemb, B * C);
  take(a.c, B * C); take(a.sc, B * C);
  take(a.cap_rstd, B * L); take(a.cap_n, B * L * T); take(a.cap_out, B * L * D);
  take(a.tokens, B * N * P); take(a.img_out, B * N * D);
  take(a.h_stream, M * D);
  take(a.mods, (size_t)cfg.layers() * B * 4 * D);
  take(a.fin_x, B * N * D); take(a.fin_mean, B * N); take(a.fin_rstd, B * N);
  take(a.fin_n, B * N * D); take(a.fscale, B * D); take(a.fin_m, B * N * D);
  take(a.out_tok, B * N * P);
  a.layers.resize(training ? cfg.layers() : 1);
  for (auto& la : a.layers) {
    if (training) { take(la.x_in, M * D); take(la.x_mid, M * D); }
    // The un-modulated norms (a_n, an2, f_n, fn2) exist for the backward only: inference runs fused norm ops.
    take(la.a_rstd, M); opt(training, la.a_n, M * D); take(la.a_m, M * D);
    take(la.q_pre, M * D); take(la.k_pre, M * D); take(la.v, M * D);
    take(la.q_mean, M); take(la.q_rstd, M); take(la.k_mean, M); take(la.k_rstd, M);
    take(la.q, M * D); take(la.k, M * D);
    take(la.o, M * D); take(la.lse, B * maxH * S);
    take(la.ao, M * D); take(la.ao_rstd, M); opt(training, la.an2, M * D);
    take(la.f_rstd, M); opt(training, la.f_n, M * D); take(la.f_m, M * D);
    take(la.h1, M * F); take(la.h3, M * F); take(la.g, M * F);
    take(la.f, M * D); take(la.f2_rstd, M); opt(training, la.fn2, M * D);
  }
  // RoPE tables: cos and sin, (S, dh/2) each, for every head dim of the schedule (filled by plan()).
  for (int hh : cfg.heads) {
    const size_t dh = D / hh;
    if (a.rope.count((int)dh)) continue;
    auto& cs = a.rope[(int)dh];
    take(cs.first, S * (dh / 2));
    take(cs.second, S * (dh / 2));
  }
}

}  // namespace

void DiT::plan(int B, int L, int h, int w, bool training) {
  check_plan_shape(cfg_, B, L, h, w);
  if (acts_ && acts_->B == B && acts_->L == L && acts_->h == h && acts_->w == w && acts_->training == training) return;
  acts_.reset();
  gs_.reset();
  auto a = std::make_unique<Acts>(&be_);
  set_plan_shape(cfg_, *a, B, L, h, w, training);
  declare_acts(cfg_, *a, [&](float*& ptr, size_t n) { ptr = a->take(n); });
  // RoPE tables: text rows at (0,0), image token n at (n / (w/p), n % (w/p)).
  const int p = cfg_.patch_size;
  const size_t N = a->N, S = a->S;
  std::vector<int> rows(S, 0), cols(S, 0);
  for (size_t n = 0; n < N; ++n) { rows[L + n] = (int)(n / (w / p)); cols[L + n] = (int)(n % (w / p)); }
  for (const auto& [dh, cs] : a->rope) {
    std::vector<float> c, s;
    rope2d_tables(c, s, rows, cols, dh, cfg_.rope_theta);
    if (c.size() != S * (dh / 2) || s.size() != c.size()) fail("internal error: DiT RoPE table size");
    be_.upload(cs.first, c.data(), c.size());
    be_.upload(cs.second, s.data(), s.size());
  }
  acts_ = std::move(a);
}

size_t DiT::activation_bytes(const DiTConfig& cfg, int B, int L, int h, int w, bool training) {
  check_plan_shape(cfg, B, L, h, w);
  Acts a(nullptr);  // a dry run: nothing is allocated
  set_plan_shape(cfg, a, B, L, h, w, training);
  size_t floats = 0;
  declare_acts(cfg, a, [&](float*& ptr, size_t n) {
    ptr = nullptr;
    floats += n;
  });
  return floats * sizeof(float);
}

size_t DiT::activation_bytes() const { return acts_ ? acts_->floats * sizeof(float) : 0; }

void DiT::forward(float* v, const float* x, const float* t, const float* txt, const float* txt_mask, int B, int L,
                  int h, int w, bool training) {
  plan(B, L, h, w, training);
  Acts& a = *acts_;
  Backend& be = be_;
  const Weights W = bind_weights(layout_, params_);
  const int D = cfg_.hidden_size, C = cfg_.cond(), T = cfg_.text_dim, F = cfg_.ffn_hidden_size, P = cfg_.features();
  const int S = a.S, N = a.N, M = B * S, p = cfg_.patch_size, Cl = cfg_.latent_channels;
  const float eps = cfg_.norm_eps;
  const AttnPrecision attn_prec = attention_precision(training);  // BF16 only for low-precision inference

  be.text_image_key_valid(a.key_valid, txt_mask, B, L, N);  // text keys from txt_mask, image keys always valid
  if (training) be.copy(a.txt_copy, txt, (size_t)B * L * T);

  // Conditioning c = t_emb + bos_emb; blocks consume SiLU(c).
  be.timestep_embedding(a.temb_in, t, B, 256, 1000.f, 10000.f);
  be.linear_forward(a.te1, a.temb_in, W.t0w, W.t0b, B, 256, C);
  be.silu_forward(a.te1s, a.te1, (size_t)B * C);
  be.linear_forward(a.temb, a.te1s, W.t2w, W.t2b, B, C, C);
  for (int b = 0; b < B; ++b) be.copy(a.bos_in + (size_t)b * T, txt + (size_t)b * L * T, T);
  be.linear_forward(a.be1, a.bos_in, W.b0w, W.b0b, B, T, C);
  be.silu_forward(a.be1s, a.be1, (size_t)B * C);
  be.linear_forward(a.bemb, a.be1s, W.b2w, W.b2b, B, C, C);
  be.copy(a.c, a.temb, (size_t)B * C);
  be.add_inplace(a.c, a.bemb, (size_t)B * C);
  be.silu_forward(a.sc, a.c, (size_t)B * C);

  // Token embeddings into the joint stream [text ; image].
  be.rmsnorm_forward(a.cap_n, a.cap_rstd, txt, W.capg, B * L, T, eps);
  be.linear_forward(a.cap_out, a.cap_n, W.capw, W.capb, B * L, T, D);
  be.patchify(a.tokens, x, B, Cl, h, w, p);
  be.linear_forward(a.img_out, a.tokens, W.xw, W.xb, B * N, P, D);
  for (int b = 0; b < B; ++b) {
    be.copy(a.h_stream + (size_t)b * S * D, a.cap_out + (size_t)b * L * D, (size_t)L * D);
    be.copy(a.h_stream + ((size_t)b * S + L) * D, a.img_out + (size_t)b * N * D, (size_t)N * D);
  }

  for (int l = 0; l < cfg_.layers(); ++l) {
    LayerActs& la = a.layer(l);
    const Layer& Wl = layers_[l];
    const LinearViews& V = lv_[l];
    if (!V.qkv.data || !V.out.data || !V.w1.data || !V.w2.data || !V.w3.data || !V.ada.data)
      fail("internal error: DiT layer ", l, " has a weight that was never set");
    const int H = cfg_.heads[l], dh = D / H;
    const auto& rope = a.rope.at(dh);
    float* mod = a.mods + (size_t)l * B * 4 * D;  // (B, 4D): s_a | g_a | s_f | g_f
    be.linear_forward_w(mod, a.sc, V.ada, Wl.ada_b, B, C, 4 * D);

    // x = x + tanh(g_a) ⊙ attention_norm2(Attn(attention_norm1(x) ⊙ (1 + s_a)))
    if (training) be.copy(la.x_in, a.h_stream, (size_t)M * D);
    if (training) {  // the backward needs the unmodulated norm
      be.rmsnorm_forward(la.a_n, la.a_rstd, a.h_stream, Wl.an1, M, D, eps);
      be.modulate_forward(la.a_m, la.a_n, mod, 4 * D, B, S, D);
    } else {
      be.rmsnorm_modulate_forward(la.a_m, la.a_rstd, a.h_stream, Wl.an1, mod, 4 * D, B, S, D, eps);
    }
    be.linear_forward_w(la.q_pre, la.a_m, V.qkv.rows(0, D), nullptr, M, D, D);
    be.linear_forward_w(la.k_pre, la.a_m, V.qkv.rows(D, D), nullptr, M, D, D);
    be.linear_forward_w(la.v, la.a_m, V.qkv.rows(2 * D, D), nullptr, M, D, D);
    if (training) {
      be.layernorm_forward(la.q, la.q_mean, la.q_rstd, la.q_pre, Wl.qn_w, Wl.qn_b, M, D, eps);
      be.layernorm_forward(la.k, la.k_mean, la.k_rstd, la.k_pre, Wl.kn_w, Wl.kn_b, M, D, eps);
      be.rope_forward(la.q, rope.first, rope.second, B, S, H, dh);
      be.rope_forward(la.k, rope.first, rope.second, B, S, H, dh);
    } else {  // QK norm and RoPE in one pass
      be.layernorm_rope_forward(la.q, la.q_mean, la.q_rstd, la.q_pre, Wl.qn_w, Wl.qn_b, rope.first, rope.second, B,
                                S, H, dh, eps);
      be.layernorm_rope_forward(la.k, la.k_mean, la.k_rstd, la.k_pre, Wl.kn_w, Wl.kn_b, rope.first, rope.second, B,
                                S, H, dh, eps);
    }
    be.attention_forward(la.o, la.lse, la.q, la.k, la.v, a.key_valid, B, S, H, dh, 1.f / std::sqrt((float)dh),
                         nullptr, attn_prec);
    be.linear_forward_w(la.ao, la.o, V.out, nullptr, M, D, D);
    if (training) {
      be.rmsnorm_forward(la.an2, la.ao_rstd, la.ao, Wl.an2, M, D, eps);
      be.gate_residual_forward(a.h_stream, la.an2, mod + D, 4 * D, B, S, D);
    } else {
      be.rmsnorm_gate_residual_forward(a.h_stream, la.ao, Wl.an2, mod + D, 4 * D, B, S, D, eps);
    }

    // x = x + tanh(g_f) ⊙ ffn_norm2(FFN(ffn_norm1(x) ⊙ (1 + s_f)))
    if (training) be.copy(la.x_mid, a.h_stream, (size_t)M * D);
    if (training) {
      be.rmsnorm_forward(la.f_n, la.f_rstd, a.h_stream, Wl.fn1, M, D, eps);
      be.modulate_forward(la.f_m, la.f_n, mod + 2 * D, 4 * D, B, S, D);
    } else {
      be.rmsnorm_modulate_forward(la.f_m, la.f_rstd, a.h_stream, Wl.fn1, mod + 2 * D, 4 * D, B, S, D, eps);
    }
    be.linear_forward_w(la.h1, la.f_m, V.w1, nullptr, M, D, F);
    be.linear_forward_w(la.h3, la.f_m, V.w3, nullptr, M, D, F);
    be.swiglu_forward(la.g, la.h1, la.h3, (size_t)M * F);
    be.linear_forward_w(la.f, la.g, V.w2, nullptr, M, F, D);
    if (training) {
      be.rmsnorm_forward(la.fn2, la.f2_rstd, la.f, Wl.fn2, M, D, eps);
      be.gate_residual_forward(a.h_stream, la.fn2, mod + 3 * D, 4 * D, B, S, D);
    } else {
      be.rmsnorm_gate_residual_forward(a.h_stream, la.f, Wl.fn2, mod + 3 * D, 4 * D, B, S, D, eps);
    }
  }

  // Final layer on the image rows: LayerNorm (no affine, eps 1e-6) ⊙ (1 + scale), Linear, pixel_shuffle.
  for (int b = 0; b < B; ++b)
    be.copy(a.fin_x + (size_t)b * N * D, a.h_stream + ((size_t)b * S + L) * D, (size_t)N * D);
  be.layernorm_forward(a.fin_n, a.fin_mean, a.fin_rstd, a.fin_x, nullptr, nullptr, B * N, D, 1e-6f);
  be.linear_forward(a.fscale, a.sc, W.fmw, W.fmb, B, C, D);
  be.modulate_forward(a.fin_m, a.fin_n, a.fscale, D, B, N, D);
  be.linear_forward(a.out_tok, a.fin_m, W.flw, W.flb, B * N, D, P);
  be.unpatchify(v, a.out_tok, B, Cl, h, w, p);
}

void DiT::backward(const float* dv, float* dtxt) {
  require_f32("backward");
  if (!acts_ || !acts_->training) fail("internal error: DiT::backward needs a preceding forward(training=true)");
  Acts& a = *acts_;
  Backend& be = be_;
  grads();
  const Weights W = bind_weights(layout_, params_);
  const Weights G = bind_weights(layout_, grads_);
  const int B = a.B, L = a.L, h = a.h, w = a.w, S = a.S, N = a.N, M = B * S;
  const int D = cfg_.hidden_size, C = cfg_.cond(), T = cfg_.text_dim, F = cfg_.ffn_hidden_size, P = cfg_.features();
  const int p = cfg_.patch_size, Cl = cfg_.latent_channels;
  const size_t MD = (size_t)M * D, MF = (size_t)M * F;

  if (!gs_ || gs_->M != M || gs_->B != B || gs_->L != L || gs_->N != N) {
    gs_.reset();
    auto g = std::make_unique<GradScratch>(be);
    g->M = M; g->B = B; g->L = L; g->N = N;
    g->dh = g->take(MD); g->dmod = g->take((size_t)B * 4 * D); g->dsc = g->take((size_t)B * C);
    g->dc = g->take((size_t)B * C); g->d_te1s = g->take((size_t)B * C); g->d_te1 = g->take((size_t)B * C);
    g->d_be1s = g->take((size_t)B * C); g->d_be1 = g->take((size_t)B * C); g->d_bos = g->take((size_t)B * T);
    for (float** q : {&g->d_fn2, &g->d_f, &g->d_fm, &g->d_fn, &g->d_an2, &g->d_ao, &g->d_o, &g->dq, &g->dk, &g->dv,
                      &g->d_qpre, &g->d_kpre, &g->d_am, &g->d_an})
      *q = g->take(MD);
    g->d_g = g->take(MF); g->d_h1 = g->take(MF); g->d_h3 = g->take(MF);
    g->d_out_tok = g->take((size_t)B * N * P);
    g->d_fin_m = g->take((size_t)B * N * D); g->d_fin_n = g->take((size_t)B * N * D);
    g->d_fin_x = g->take((size_t)B * N * D); g->d_fscale = g->take((size_t)B * D);
    g->d_cap_out = g->take((size_t)B * L * D); g->d_cap_n = g->take((size_t)B * L * T);
    g->d_img_out = g->take((size_t)B * N * D);
    gs_ = std::move(g);
  }
  GradScratch& g = *gs_;
  auto z = [&](float* ptr, size_t n) { be.zero(ptr, n); };

  z(g.dh, MD);
  z(g.dsc, (size_t)B * C);

  // Final layer.
  z(g.d_out_tok, (size_t)B * N * P);
  be.unpatchify_backward(g.d_out_tok, dv, B, Cl, h, w, p);
  z(g.d_fin_m, (size_t)B * N * D);
  be.linear_backward(g.d_fin_m, G.flw, G.flb, g.d_out_tok, a.fin_m, W.flw, B * N, D, P);
  z(g.d_fin_n, (size_t)B * N * D);
  z(g.d_fscale, (size_t)B * D);
  be.modulate_backward(g.d_fin_n, g.d_fscale, g.d_fin_m, a.fin_n, a.fscale, D, B, N, D);
  z(g.d_fin_x, (size_t)B * N * D);
  be.layernorm_backward(g.d_fin_x, nullptr, nullptr, g.d_fin_n, a.fin_x, nullptr, a.fin_mean, a.fin_rstd, B * N, D);
  for (int b = 0; b < B; ++b)
    be.add_inplace(g.dh + ((size_t)b * S + L) * D, g.d_fin_x + (size_t)b * N * D, (size_t)N * D);
  be.linear_backward(g.dsc, G.fmw, G.fmb, g.d_fscale, a.sc, W.fmw, B, C, D);

  for (int l = cfg_.layers() - 1; l >= 0; --l) {
    LayerActs& la = a.layer(l);
    const Layer& Wl = layers_[l];
    const Layer& Gl = dlayers_[l];
    const int H = cfg_.heads[l], dh = D / H;
    const auto& rope = a.rope.at(dh);
    const float* mod = a.mods + (size_t)l * B * 4 * D;
    z(g.dmod, (size_t)B * 4 * D);

    // FFN sub-block (g.dh is the gradient of the stream after it; it passes through the residual).
    z(g.d_fn2, MD);
    be.gate_residual_backward(g.d_fn2, g.dmod + 3 * D, g.dh, la.fn2, mod + 3 * D, 4 * D, B, S, D);
    z(g.d_f, MD);
    be.rmsnorm_backward(g.d_f, Gl.fn2, g.d_fn2, la.f, Wl.fn2, la.f2_rstd, M, D);
    z(g.d_g, MF);
    be.linear_backward(g.d_g, Gl.w2, nullptr, g.d_f, la.g, Wl.w2, M, F, D);
    z(g.d_h1, MF);
    z(g.d_h3, MF);
    be.swiglu_backward(g.d_h1, g.d_h3, g.d_g, la.h1, la.h3, MF);
    z(g.d_fm, MD);
    be.linear_backward(g.d_fm, Gl.w1, nullptr, g.d_h1, la.f_m, Wl.w1, M, D, F);
    be.linear_backward(g.d_fm, Gl.w3, nullptr, g.d_h3, la.f_m, Wl.w3, M, D, F);
    z(g.d_fn, MD);
    be.modulate_backward(g.d_fn, g.dmod + 2 * D, g.d_fm, la.f_n, mod + 2 * D, 4 * D, B, S, D);
    be.rmsnorm_backward(g.dh, Gl.fn1, g.d_fn, la.x_mid, Wl.fn1, la.f_rstd, M, D);

    // Attention sub-block.
    z(g.d_an2, MD);
    be.gate_residual_backward(g.d_an2, g.dmod + D, g.dh, la.an2, mod + D, 4 * D, B, S, D);
    z(g.d_ao, MD);
    be.rmsnorm_backward(g.d_ao, Gl.an2, g.d_an2, la.ao, Wl.an2, la.ao_rstd, M, D);
    z(g.d_o, MD);
    be.linear_backward(g.d_o, Gl.out, nullptr, g.d_ao, la.o, Wl.out, M, D, D);
    z(g.dq, MD);
    z(g.dk, MD);
    z(g.dv, MD);
    be.attention_backward(g.dq, g.dk, g.dv, g.d_o, la.q, la.k, la.v, la.o, la.lse, a.key_valid, B, S, H, dh,
                          1.f / std::sqrt((float)dh), nullptr, nullptr);
    be.rope_backward(g.dq, rope.first, rope.second, B, S, H, dh);
    be.rope_backward(g.dk, rope.first, rope.second, B, S, H, dh);
    z(g.d_qpre, MD);
    z(g.d_kpre, MD);
    be.layernorm_backward(g.d_qpre, Gl.qn_w, Gl.qn_b, g.dq, la.q_pre, Wl.qn_w, la.q_mean, la.q_rstd, M, D);
    be.layernorm_backward(g.d_kpre, Gl.kn_w, Gl.kn_b, g.dk, la.k_pre, Wl.kn_w, la.k_mean, la.k_rstd, M, D);
    z(g.d_am, MD);
    be.linear_backward(g.d_am, Gl.qkv, nullptr, g.d_qpre, la.a_m, Wl.qkv, M, D, D);
    be.linear_backward(g.d_am, Gl.qkv + (size_t)D * D, nullptr, g.d_kpre, la.a_m, Wl.qkv + (size_t)D * D, M, D, D);
    be.linear_backward(g.d_am, Gl.qkv + (size_t)2 * D * D, nullptr, g.dv, la.a_m, Wl.qkv + (size_t)2 * D * D, M, D, D);
    z(g.d_an, MD);
    be.modulate_backward(g.d_an, g.dmod, g.d_am, la.a_n, mod, 4 * D, B, S, D);
    be.rmsnorm_backward(g.dh, Gl.an1, g.d_an, la.x_in, Wl.an1, la.a_rstd, M, D);

    be.linear_backward(g.dsc, Gl.ada_w, Gl.ada_b, g.dmod, a.sc, Wl.ada_w, B, C, 4 * D);
  }

  // Token embedders.
  for (int b = 0; b < B; ++b) {
    be.copy(g.d_cap_out + (size_t)b * L * D, g.dh + (size_t)b * S * D, (size_t)L * D);
    be.copy(g.d_img_out + (size_t)b * N * D, g.dh + ((size_t)b * S + L) * D, (size_t)N * D);
  }
  be.linear_backward(nullptr, G.xw, G.xb, g.d_img_out, a.tokens, W.xw, B * N, P, D);
  z(g.d_cap_n, (size_t)B * L * T);
  be.linear_backward(g.d_cap_n, G.capw, G.capb, g.d_cap_out, a.cap_n, W.capw, B * L, T, D);
  be.rmsnorm_backward(dtxt, G.capg, g.d_cap_n, a.txt_copy, W.capg, a.cap_rstd, B * L, T);

  // Conditioning: c = t_emb + bos_emb, sc = SiLU(c).
  z(g.dc, (size_t)B * C);
  be.silu_backward(g.dc, g.dsc, a.c, (size_t)B * C);
  z(g.d_te1s, (size_t)B * C);
  be.linear_backward(g.d_te1s, G.t2w, G.t2b, g.dc, a.te1s, W.t2w, B, C, C);
  z(g.d_te1, (size_t)B * C);
  be.silu_backward(g.d_te1, g.d_te1s, a.te1, (size_t)B * C);
  be.linear_backward(nullptr, G.t0w, G.t0b, g.d_te1, a.temb_in, W.t0w, B, 256, C);
  z(g.d_be1s, (size_t)B * C);
  be.linear_backward(g.d_be1s, G.b2w, G.b2b, g.dc, a.be1s, W.b2w, B, C, C);
  z(g.d_be1, (size_t)B * C);
  be.silu_backward(g.d_be1, g.d_be1s, a.be1, (size_t)B * C);
  z(g.d_bos, (size_t)B * T);
  be.linear_backward(dtxt ? g.d_bos : nullptr, G.b0w, G.b0b, g.d_be1, a.bos_in, W.b0w, B, T, C);
  if (dtxt)
    for (int b = 0; b < B; ++b) be.add_inplace(dtxt + (size_t)b * L * T, g.d_bos + (size_t)b * T, T);
}

double DiT::forward_flops(const DiTConfig& c, int B, int L, int h, int w) {
  const double p = c.patch_size, N = (h / p) * (w / p), S = L + N, M = B * S;
  const double D = c.hidden_size, C = c.cond(), T = c.text_dim, F = c.ffn_hidden_size, P = c.features();
  double f = 0;
  f += 2.0 * B * (256 * C + C * C + T * C + C * C);            // t and bos embedders
  f += 2.0 * B * L * T * D + 2.0 * B * N * P * D;              // token embedders
  f += c.layers() * 2.0 * B * C * 4 * D;                       // adaLN per block
  f += c.layers() * 2.0 * M * (4 * D * D + 3 * D * F);         // qkv, out, SwiGLU
  f += c.layers() * 4.0 * B * S * S * D;                       // QKᵀ and PV over all heads
  f += 2.0 * B * C * D + 2.0 * B * N * D * P;                  // final layer
  return f;
}

}  // namespace oboro
