// DiT forward (backward: dit_backward.cpp). Shapes: B batch, L text tokens, N = (h/p)(w/p) image tokens,
// S = L + N, M = B·S rows, D width, C cond width, T text dim, F FFN width, P = C_lat·p².
// The residual stream `h` is (B, S, D) with each sample's text rows first.
#include "models/dit.h"
#include "models/dit_internal.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/tensor_table.h"
#include "ops/rope.h"
#include <array>
#include <cmath>

namespace oboro {

using dit_detail::bind_layers;
using dit_detail::bind_weights;
using dit_detail::site_name;

namespace {
using dit_detail::Weights;

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

}  // namespace

dit_detail::Weights dit_detail::bind_weights(const ParamLayout& L, float* base) {
  Weights w{};
  dit_tensors().bind_top(w, L, base);
  return w;
}

ParamLayout dit_param_layout(const DiTConfig& c) { return dit_tensors().layout(c.layers(), dit_sizes(c)); }

std::vector<DiT::Layer> dit_detail::bind_layers(const ParamLayout& L, float* base, int n) {
  return dit_tensors().bind_blocks(L, base, n);
}

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
  auto adapt = [&](int l, const char* name, const float* xin, int Mr, int K,
                   std::initializer_list<LinearAdapter::Part> outs) {
    if (adapter_) adapter_->forward(site_name(l, name), xin, Mr, K, outs, training);
  };

  be.text_image_key_valid(a.key_valid, txt_mask, B, L, N);  // text keys from txt_mask, image keys always valid
  if (training) be.copy(a.txt_copy, txt, (size_t)B * L * T);

  // Conditioning c = t_emb + bos_emb; blocks consume SiLU(c).
  be.timestep_embedding(a.temb_in, t, B, 256, 1000.f, 10000.f);
  be.linear_forward(a.te1, a.temb_in, W.t0w, W.t0b, B, 256, C);
  adapt(-1, "t_embedder.mlp.0.weight", a.temb_in, B, 256, {{a.te1, C}});
  be.silu_forward(a.te1s, a.te1, (size_t)B * C);
  be.linear_forward(a.temb, a.te1s, W.t2w, W.t2b, B, C, C);
  adapt(-1, "t_embedder.mlp.2.weight", a.te1s, B, C, {{a.temb, C}});
  for (int b = 0; b < B; ++b) be.copy(a.bos_in + (size_t)b * T, txt + (size_t)b * L * T, T);
  be.linear_forward(a.be1, a.bos_in, W.b0w, W.b0b, B, T, C);
  adapt(-1, "bos_embedder.mlp.0.weight", a.bos_in, B, T, {{a.be1, C}});
  be.silu_forward(a.be1s, a.be1, (size_t)B * C);
  be.linear_forward(a.bemb, a.be1s, W.b2w, W.b2b, B, C, C);
  adapt(-1, "bos_embedder.mlp.2.weight", a.be1s, B, C, {{a.bemb, C}});
  be.copy(a.c, a.temb, (size_t)B * C);
  be.add_inplace(a.c, a.bemb, (size_t)B * C);
  be.silu_forward(a.sc, a.c, (size_t)B * C);

  // Token embeddings into the joint stream [text ; image].
  be.rmsnorm_forward(a.cap_n, a.cap_rstd, txt, W.capg, B * L, T, eps);
  be.linear_forward(a.cap_out, a.cap_n, W.capw, W.capb, B * L, T, D);
  adapt(-1, "cap_embedder.1.weight", a.cap_n, B * L, T, {{a.cap_out, D}});
  be.patchify(a.tokens, x, B, Cl, h, w, p);
  be.linear_forward(a.img_out, a.tokens, W.xw, W.xb, B * N, P, D);
  adapt(-1, "x_embedder.weight", a.tokens, B * N, P, {{a.img_out, D}});
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
    adapt(l, "adaLN_modulation.1.weight", a.sc, B, C, {{mod, 4 * D}});

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
    adapt(l, "attention.qkv.weight", la.a_m, M, D, {{la.q_pre, D}, {la.k_pre, D}, {la.v, D}});
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
    adapt(l, "attention.out.weight", la.o, M, D, {{la.ao, D}});
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
    adapt(l, "feed_forward.w1.weight", la.f_m, M, D, {{la.h1, F}});
    adapt(l, "feed_forward.w3.weight", la.f_m, M, D, {{la.h3, F}});
    be.swiglu_forward(la.g, la.h1, la.h3, (size_t)M * F);
    be.linear_forward_w(la.f, la.g, V.w2, nullptr, M, F, D);
    adapt(l, "feed_forward.w2.weight", la.g, M, F, {{la.f, D}});
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
  adapt(-1, "final_layer.adaLN_modulation.1.weight", a.sc, B, C, {{a.fscale, D}});
  be.modulate_forward(a.fin_m, a.fin_n, a.fscale, D, B, N, D);
  be.linear_forward(a.out_tok, a.fin_m, W.flw, W.flb, B * N, D, P);
  adapt(-1, "final_layer.linear.weight", a.fin_m, B * N, D, {{a.out_tok, P}});
  be.unpatchify(v, a.out_tok, B, Cl, h, w, p);
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
