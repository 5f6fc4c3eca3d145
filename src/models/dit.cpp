// DiT forward/backward. Shapes: B batch, L text tokens, N = (h/p)(w/p) image tokens,
// S = L + N, M = B·S rows, D width, C cond width, T text dim, F FFN width, P = C_lat·p².
// The residual stream `h` is (B, S, D) with each sample's text rows first.
#include "models/dit.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "ops/rope.h"
#include <cmath>
#include <cstring>

namespace oboro {

// Pointers to one block's tensors inside a flat buffer (params or grads).
struct DiT::Layer {
  float *qkv, *qn_w, *qn_b, *kn_w, *kn_b, *out, *w1, *w2, *w3, *an1, *an2, *fn1, *fn2, *ada_w, *ada_b;
};

namespace {
struct Weights {
  float *t0w, *t0b, *t2w, *t2b, *b0w, *b0b, *b2w, *b2b, *capg, *capw, *capb, *xw, *xb, *fmw, *fmb, *flw, *flb;
};
Weights bind_weights(const ParamLayout& L, float* base) {
  auto p = [&](const char* n) { return base + L.at(n).offset; };
  return {p("t_embedder.mlp.0.weight"), p("t_embedder.mlp.0.bias"), p("t_embedder.mlp.2.weight"),
          p("t_embedder.mlp.2.bias"), p("bos_embedder.mlp.0.weight"), p("bos_embedder.mlp.0.bias"),
          p("bos_embedder.mlp.2.weight"), p("bos_embedder.mlp.2.bias"), p("cap_embedder.0.weight"),
          p("cap_embedder.1.weight"), p("cap_embedder.1.bias"), p("x_embedder.weight"), p("x_embedder.bias"),
          p("final_layer.adaLN_modulation.1.weight"), p("final_layer.adaLN_modulation.1.bias"),
          p("final_layer.linear.weight"), p("final_layer.linear.bias")};
}
}  // namespace

static std::vector<DiT::Layer> bind_layers(const ParamLayout& L, float* base, int n);

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
  Backend& be;
  std::vector<Buffer> owned;
  size_t floats = 0;
  int B = 0, L = 0, h = 0, w = 0, S = 0, N = 0;
  bool training = false;
  float* take(size_t n) {
    owned.push_back(be.alloc(n, DType::F32, "dit.activations"));
    floats += n;
    return owned.back().f32();
  }
  explicit Acts(Backend& b) : be(b) {}

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

static std::vector<DiT::Layer> bind_layers(const ParamLayout& L, float* base, int n) {
  std::vector<DiT::Layer> out(n);
  for (int i = 0; i < n; ++i) {
    std::string p = "layers." + std::to_string(i) + ".";
    auto g = [&](const char* s) -> float* {  // null for a tensor stored outside the flat buffer (quantised)
      const ParamView* v = L.find(p + s);
      return v ? base + v->offset : nullptr;
    };
    out[i] = {g("attention.qkv.weight"),      g("attention.q_norm.weight"), g("attention.q_norm.bias"),
              g("attention.k_norm.weight"),   g("attention.k_norm.bias"),   g("attention.out.weight"),
              g("feed_forward.w1.weight"),    g("feed_forward.w2.weight"),  g("feed_forward.w3.weight"),
              g("attention_norm1.weight"),    g("attention_norm2.weight"),  g("ffn_norm1.weight"),
              g("ffn_norm2.weight"),          g("adaLN_modulation.1.weight"), g("adaLN_modulation.1.bias")};
  }
  return out;
}

bool dit_quantizable(const std::string& n) {
  if (n.rfind("layers.", 0) != 0) return false;
  for (const char* s : {".attention.qkv.weight", ".attention.out.weight", ".feed_forward.w1.weight",
                        ".feed_forward.w2.weight", ".feed_forward.w3.weight", ".adaLN_modulation.1.weight"}) {
    const size_t k = std::strlen(s);
    if (n.size() > k && n.compare(n.size() - k, k, s) == 0) return true;
  }
  return false;
}

DiT::DiT(const DiTConfig& cfg, Backend& be, WFormat weights) : cfg_(cfg), be_(be), wfmt_(weights) {
  cfg_.validate("model config");
  full_layout_ = dit_param_layout(cfg_);
  if (wfmt_ == WFormat::F32) {
    layout_ = full_layout_;
  } else {
    for (const auto& v : full_layout_.views())
      if (!dit_quantizable(v.name)) layout_.add(v.name, v.shape);
  }
  params_buf_ = be_.alloc(layout_.total(), DType::F32, "dit.params");
  params_ = params_buf_.f32();
  layers_ = bind_layers(layout_, params_, cfg_.layers());
  bind_linear_views();
}

void DiT::bind_linear_views() {
  for (auto& [n, q] : qw_) q.bind(be_);
  lv_.assign(cfg_.layers(), {});
  for (int i = 0; i < cfg_.layers(); ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    auto view = [&](const char* s) -> WeightView {
      const std::string n = p + s;
      const ParamView& fv = full_layout_.at(n);
      if (const ParamView* v = layout_.find(n)) return f32_view(params_ + v->offset, (int)fv.shape[0], (int)fv.shape[1]);
      auto it = qw_.find(n);
      return it == qw_.end() ? WeightView{} : it->second.view();  // empty until the weight is set
    };
    lv_[i] = {view("attention.qkv.weight"),   view("attention.out.weight"),   view("feed_forward.w1.weight"),
              view("feed_forward.w2.weight"), view("feed_forward.w3.weight"), view("adaLN_modulation.1.weight")};
  }
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

static bool is_zero_init(const std::string& n) {
  return n.find("adaLN_modulation") != std::string::npos || n.rfind("final_layer.linear", 0) == 0;
}

void DiT::init_weights(uint64_t seed) {
  require_f32("initialisation");
  std::vector<float> host;
  uint64_t stream = 0;
  for (const auto& v : layout_.views()) {
    host.assign(v.numel(), 0.f);
    const std::string& n = v.name;
    bool bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    if (is_zero_init(n) || bias) {
      // zeros
    } else if (v.shape.size() == 1) {
      std::fill(host.begin(), host.end(), 1.f);  // norm weights
    } else {
      double fan_in = (double)v.shape[1], fan_out = (double)v.shape[0];
      double std = n.rfind("t_embedder", 0) == 0 ? 0.02 : std::sqrt(2.0 / (fan_in + fan_out));
      fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, (float)std);
    }
    ++stream;
    be_.upload(params_ + v.offset, host.data(), host.size());
  }
}

void DiT::init_random_all(uint64_t seed) {
  require_f32("initialisation");
  std::vector<float> host;
  uint64_t stream = 0;
  for (const auto& v : layout_.views()) {
    host.resize(v.numel());
    const std::string& n = v.name;
    bool bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    if (v.shape.size() == 1 && !bias) fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 1.f, 0.1f);
    else if (bias) fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, 0.1f);
    else fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, (float)(1.0 / std::sqrt((double)v.shape[1])));
    ++stream;
    be_.upload(params_ + v.offset, host.data(), host.size());
  }
}

void DiT::plan(int B, int L, int h, int w, bool training) {
  const int p = cfg_.patch_size;
  if (h % p || w % p)
    fail("latent size ", h, "x", w, " is not divisible by the patch size ", p,
         ": image sides must be multiples of ", 8 * p, " pixels");
  if (B <= 0 || L <= 0 || h <= 0 || w <= 0) fail("empty batch: B=", B, " L=", L, " h=", h, " w=", w);
  if (acts_ && acts_->B == B && acts_->L == L && acts_->h == h && acts_->w == w && acts_->training == training) return;
  acts_.reset();
  gs_.reset();
  auto a = std::make_unique<Acts>(be_);
  a->B = B; a->L = L; a->h = h; a->w = w; a->training = training;
  const size_t N = (size_t)(h / p) * (w / p), S = L + N, M = (size_t)B * S;
  a->N = (int)N; a->S = (int)S;
  const size_t D = cfg_.hidden_size, C = cfg_.cond(), T = cfg_.text_dim, F = cfg_.ffn_hidden_size, P = cfg_.features();
  int maxH = 0;
  for (int hh : cfg_.heads) maxH = std::max(maxH, hh);
  a->key_valid = a->take((size_t)B * S);
  a->txt_copy = training ? a->take((size_t)B * L * T) : nullptr;
  a->temb_in = a->take((size_t)B * 256);
  a->te1 = a->take(B * C); a->te1s = a->take(B * C); a->temb = a->take(B * C);
  a->bos_in = a->take(B * T);
  a->be1 = a->take(B * C); a->be1s = a->take(B * C); a->bemb = a->take(B * C);
  a->c = a->take(B * C); a->sc = a->take(B * C);
  a->cap_rstd = a->take((size_t)B * L); a->cap_n = a->take((size_t)B * L * T); a->cap_out = a->take((size_t)B * L * D);
  a->tokens = a->take(B * N * P); a->img_out = a->take(B * N * D);
  a->h_stream = a->take(M * D);
  a->mods = a->take((size_t)cfg_.layers() * B * 4 * D);
  a->fin_x = a->take(B * N * D); a->fin_mean = a->take(B * N); a->fin_rstd = a->take(B * N);
  a->fin_n = a->take(B * N * D); a->fscale = a->take(B * D); a->fin_m = a->take(B * N * D);
  a->out_tok = a->take(B * N * P);
  a->layers.resize(training ? cfg_.layers() : 1);
  for (auto& la : a->layers) {
    if (training) { la.x_in = a->take(M * D); la.x_mid = a->take(M * D); }
    // The un-modulated norms (a_n, an2, f_n, fn2) exist for the backward only: inference runs fused norm ops.
    la.a_rstd = a->take(M); la.a_n = training ? a->take(M * D) : nullptr; la.a_m = a->take(M * D);
    la.q_pre = a->take(M * D); la.k_pre = a->take(M * D); la.v = a->take(M * D);
    la.q_mean = a->take(M); la.q_rstd = a->take(M); la.k_mean = a->take(M); la.k_rstd = a->take(M);
    la.q = a->take(M * D); la.k = a->take(M * D);
    la.o = a->take(M * D); la.lse = a->take((size_t)B * maxH * S);
    la.ao = a->take(M * D); la.ao_rstd = a->take(M); la.an2 = training ? a->take(M * D) : nullptr;
    la.f_rstd = a->take(M); la.f_n = training ? a->take(M * D) : nullptr; la.f_m = a->take(M * D);
    la.h1 = a->take(M * F); la.h3 = a->take(M * F); la.g = a->take(M * F);
    la.f = a->take(M * D); la.f2_rstd = a->take(M); la.fn2 = training ? a->take(M * D) : nullptr;
  }
  // RoPE tables: text rows at (0,0), image token n at (n / (w/p), n % (w/p)).
  std::vector<int> rows(S, 0), cols(S, 0);
  for (size_t n = 0; n < N; ++n) { rows[L + n] = (int)(n / (w / p)); cols[L + n] = (int)(n % (w / p)); }
  for (int hh : cfg_.heads) {
    int dh = (int)D / hh;
    if (a->rope.count(dh)) continue;
    std::vector<float> cs, sn;
    rope2d_tables(cs, sn, rows, cols, dh, cfg_.rope_theta);
    float* c = a->take(cs.size());
    float* s = a->take(sn.size());
    be_.upload(c, cs.data(), cs.size());
    be_.upload(s, sn.data(), sn.size());
    a->rope[dh] = {c, s};
  }
  acts_ = std::move(a);
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
