// DiT backward (dit.h): the hand-written gradient of DiT::forward(training = true), block by block in reverse, with
// the LinearAdapter hooks (LoRA) next to each Linear's backward; a frozen DiT computes no weight gradients.
// Shapes as in dit.cpp.
#include "core/error.h"
#include "models/dit.h"
#include "models/dit_internal.h"
#include <cmath>

namespace oboro {

using dit_detail::bind_weights;
using dit_detail::site_name;
using dit_detail::Weights;

// The gradient scratch for this shape: kept from the last backward when the shape is the same, else allocated.
DiT::GradScratch& DiT::grad_scratch(int M, int B, int L, int N) {
  if (!gs_ || gs_->M != M || gs_->B != B || gs_->L != L || gs_->N != N) {
    const int D = cfg_.hidden_size, C = cfg_.cond(), T = cfg_.text_dim, F = cfg_.ffn_hidden_size, P = cfg_.features();
    const size_t MD = (size_t)M * D, MF = (size_t)M * F;
    gs_.reset();
    auto g = std::make_unique<GradScratch>(be_);
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
  return *gs_;
}

// The adapter's (LoRA's) backward for one Linear site; nothing without an adapter.
void DiT::adapt_back(int l, const char* name, float* dx, const float* xin, int M, int K,
                     std::initializer_list<LinearAdapter::DPart> douts) {
  if (adapter_) adapter_->backward(site_name(l, name), dx, xin, M, K, douts);
}

// Final layer: unpatchify, linear, adaLN modulation and LayerNorm back to the image tokens of g.dh (+=) and to g.dsc.
void DiT::final_layer_backward(const float* dv, const Weights& W, const Weights& G) {
  Acts& a = *acts_;
  GradScratch& g = *gs_;
  Backend& be = be_;
  const int B = a.B, L = a.L, h = a.h, w = a.w, S = a.S, N = a.N;
  const int D = cfg_.hidden_size, C = cfg_.cond(), P = cfg_.features();
  const int p = cfg_.patch_size, Cl = cfg_.latent_channels;
  auto z = [&](float* ptr, size_t n) { be.zero(ptr, n); };
  z(g.d_out_tok, (size_t)B * N * P);
  be.unpatchify_backward(g.d_out_tok, dv, B, Cl, h, w, p);
  z(g.d_fin_m, (size_t)B * N * D);
  be.linear_backward(g.d_fin_m, G.flw, G.flb, g.d_out_tok, a.fin_m, W.flw, B * N, D, P);
  adapt_back(-1, "final_layer.linear.weight", g.d_fin_m, a.fin_m, B * N, D, {{g.d_out_tok, P}});
  z(g.d_fin_n, (size_t)B * N * D);
  z(g.d_fscale, (size_t)B * D);
  be.modulate_backward(g.d_fin_n, g.d_fscale, g.d_fin_m, a.fin_n, a.fscale, D, B, N, D);
  z(g.d_fin_x, (size_t)B * N * D);
  be.layernorm_backward(g.d_fin_x, nullptr, nullptr, g.d_fin_n, a.fin_x, nullptr, a.fin_mean, a.fin_rstd, B * N, D);
  for (int b = 0; b < B; ++b)
    be.add_inplace(g.dh + ((size_t)b * S + L) * D, g.d_fin_x + (size_t)b * N * D, (size_t)N * D);
  be.linear_backward(g.dsc, G.fmw, G.fmb, g.d_fscale, a.sc, W.fmw, B, C, D);
  adapt_back(-1, "final_layer.adaLN_modulation.1.weight", g.dsc, a.sc, B, C, {{g.d_fscale, D}});
}

// Block l: FFN then attention sub-block, g.dh (the stream's gradient) carried back through both; its adaLN
// modulation's gradient goes to g.dsc.
void DiT::block_backward(int l) {
  static const Layer kNoGrads{};
  Acts& a = *acts_;
  GradScratch& g = *gs_;
  Backend& be = be_;
  const int B = a.B, S = a.S, M = B * S;
  const int D = cfg_.hidden_size, C = cfg_.cond(), F = cfg_.ffn_hidden_size;
  const size_t MD = (size_t)M * D, MF = (size_t)M * F;
  auto z = [&](float* ptr, size_t n) { be.zero(ptr, n); };
  LayerActs& la = a.layer(l);
  const Layer& Wl = layers_[l];
  const Layer& Gl = frozen_ ? kNoGrads : dlayers_[l];
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
  adapt_back(l, "feed_forward.w2.weight", g.d_g, la.g, M, F, {{g.d_f, D}});
  z(g.d_h1, MF);
  z(g.d_h3, MF);
  be.swiglu_backward(g.d_h1, g.d_h3, g.d_g, la.h1, la.h3, MF);
  z(g.d_fm, MD);
  be.linear_backward(g.d_fm, Gl.w1, nullptr, g.d_h1, la.f_m, Wl.w1, M, D, F);
  be.linear_backward(g.d_fm, Gl.w3, nullptr, g.d_h3, la.f_m, Wl.w3, M, D, F);
  adapt_back(l, "feed_forward.w1.weight", g.d_fm, la.f_m, M, D, {{g.d_h1, F}});
  adapt_back(l, "feed_forward.w3.weight", g.d_fm, la.f_m, M, D, {{g.d_h3, F}});
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
  adapt_back(l, "attention.out.weight", g.d_o, la.o, M, D, {{g.d_ao, D}});
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
  be.linear_backward(g.d_am, Gl.qkv ? Gl.qkv + (size_t)D * D : nullptr, nullptr, g.d_kpre, la.a_m,
                     Wl.qkv + (size_t)D * D, M, D, D);
  be.linear_backward(g.d_am, Gl.qkv ? Gl.qkv + (size_t)2 * D * D : nullptr, nullptr, g.dv, la.a_m,
                     Wl.qkv + (size_t)2 * D * D, M, D, D);
  adapt_back(l, "attention.qkv.weight", g.d_am, la.a_m, M, D, {{g.d_qpre, D}, {g.d_kpre, D}, {g.dv, D}});
  z(g.d_an, MD);
  be.modulate_backward(g.d_an, g.dmod, g.d_am, la.a_n, mod, 4 * D, B, S, D);
  be.rmsnorm_backward(g.dh, Gl.an1, g.d_an, la.x_in, Wl.an1, la.a_rstd, M, D);

  be.linear_backward(g.dsc, Gl.ada_w, Gl.ada_b, g.dmod, a.sc, Wl.ada_w, B, C, 4 * D);
  adapt_back(l, "adaLN_modulation.1.weight", g.dsc, a.sc, B, C, {{g.dmod, 4 * D}});
}

// Token embedders: g.dh split into caption and image tokens, back through x_embedder and cap_embedder to dtxt.
void DiT::embedders_backward(float* dtxt, const Weights& W, const Weights& G) {
  Acts& a = *acts_;
  GradScratch& g = *gs_;
  Backend& be = be_;
  const int B = a.B, L = a.L, S = a.S, N = a.N;
  const int D = cfg_.hidden_size, T = cfg_.text_dim, P = cfg_.features();
  for (int b = 0; b < B; ++b) {
    be.copy(g.d_cap_out + (size_t)b * L * D, g.dh + (size_t)b * S * D, (size_t)L * D);
    be.copy(g.d_img_out + (size_t)b * N * D, g.dh + ((size_t)b * S + L) * D, (size_t)N * D);
  }
  be.linear_backward(nullptr, G.xw, G.xb, g.d_img_out, a.tokens, W.xw, B * N, P, D);
  adapt_back(-1, "x_embedder.weight", nullptr, a.tokens, B * N, P, {{g.d_img_out, D}});
  be.zero(g.d_cap_n, (size_t)B * L * T);
  be.linear_backward(g.d_cap_n, G.capw, G.capb, g.d_cap_out, a.cap_n, W.capw, B * L, T, D);
  adapt_back(-1, "cap_embedder.1.weight", g.d_cap_n, a.cap_n, B * L, T, {{g.d_cap_out, D}});
  be.rmsnorm_backward(dtxt, G.capg, g.d_cap_n, a.txt_copy, W.capg, a.cap_rstd, B * L, T);
}

// Conditioning: c = t_emb + bos_emb, sc = SiLU(c); g.dsc back through both MLPs (the bos input's part to dtxt).
void DiT::conditioning_backward(float* dtxt, const Weights& W, const Weights& G) {
  Acts& a = *acts_;
  GradScratch& g = *gs_;
  Backend& be = be_;
  const int B = a.B, L = a.L;
  const int C = cfg_.cond(), T = cfg_.text_dim;
  auto z = [&](float* ptr, size_t n) { be.zero(ptr, n); };
  z(g.dc, (size_t)B * C);
  be.silu_backward(g.dc, g.dsc, a.c, (size_t)B * C);
  z(g.d_te1s, (size_t)B * C);
  be.linear_backward(g.d_te1s, G.t2w, G.t2b, g.dc, a.te1s, W.t2w, B, C, C);
  adapt_back(-1, "t_embedder.mlp.2.weight", g.d_te1s, a.te1s, B, C, {{g.dc, C}});
  z(g.d_te1, (size_t)B * C);
  be.silu_backward(g.d_te1, g.d_te1s, a.te1, (size_t)B * C);
  be.linear_backward(nullptr, G.t0w, G.t0b, g.d_te1, a.temb_in, W.t0w, B, 256, C);
  adapt_back(-1, "t_embedder.mlp.0.weight", nullptr, a.temb_in, B, 256, {{g.d_te1, C}});
  z(g.d_be1s, (size_t)B * C);
  be.linear_backward(g.d_be1s, G.b2w, G.b2b, g.dc, a.be1s, W.b2w, B, C, C);
  adapt_back(-1, "bos_embedder.mlp.2.weight", g.d_be1s, a.be1s, B, C, {{g.dc, C}});
  z(g.d_be1, (size_t)B * C);
  be.silu_backward(g.d_be1, g.d_be1s, a.be1, (size_t)B * C);
  z(g.d_bos, (size_t)B * T);
  be.linear_backward(dtxt ? g.d_bos : nullptr, G.b0w, G.b0b, g.d_be1, a.bos_in, W.b0w, B, T, C);
  adapt_back(-1, "bos_embedder.mlp.0.weight", dtxt ? g.d_bos : nullptr, a.bos_in, B, T, {{g.d_be1, C}});
  if (dtxt)
    for (int b = 0; b < B; ++b) be.add_inplace(dtxt + (size_t)b * L * T, g.d_bos + (size_t)b * T, T);
}

void DiT::backward(const float* dv, float* dtxt) {
  require_f32("backward");
  if (!acts_ || !acts_->training) fail("internal error: DiT::backward needs a preceding forward(training=true)");
  const Acts& a = *acts_;
  if (!frozen_) grads();
  const Weights W = bind_weights(layout_, params_);
  const Weights G = frozen_ ? Weights{} : bind_weights(layout_, grads_);  // frozen: no weight gradients
  const int B = a.B, M = B * a.S;
  GradScratch& g = grad_scratch(M, B, a.L, a.N);
  be_.zero(g.dh, (size_t)M * cfg_.hidden_size);
  be_.zero(g.dsc, (size_t)B * cfg_.cond());
  final_layer_backward(dv, W, G);
  for (int l = cfg_.layers() - 1; l >= 0; --l) block_backward(l);
  embedders_backward(dtxt, W, G);
  conditioning_backward(dtxt, W, G);
}

}  // namespace oboro
