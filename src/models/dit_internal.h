// The DiT's internals shared by its forward (dit.cpp) and backward (dit_backward.cpp): the pointer structs of the
// flat parameter buffer, the activation and gradient-scratch structs, the adapter hook names. Not for other code.
#pragma once
#include "models/dit.h"
#include "models/params.h"
#include "ops/backend.h"
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace oboro {

// Pointers to one block's tensors inside a flat buffer (params or grads).
struct DiT::Layer {
  float *qkv, *qn_w, *qn_b, *kn_w, *kn_b, *out, *w1, *w2, *w3, *an1, *an2, *fn1, *fn2, *ada_w, *ada_b;
};

namespace dit_detail {

// Pointers to the tensors outside the blocks inside a flat buffer (params or grads).
struct Weights {
  float *t0w, *t0b, *t2w, *t2b, *b0w, *b0b, *b2w, *b2b, *capg, *capw, *capb, *xw, *xb, *fmw, *fmb, *flw, *flb;
};

Weights bind_weights(const ParamLayout& L, float* base);
std::vector<DiT::Layer> bind_layers(const ParamLayout& L, float* base, int n);

// The name of a Linear weight the adapter hooks see: "layers.<l>.<name>" inside block l, `name` outside (l = −1).
inline std::string site_name(int l, const char* name) {
  return l < 0 ? std::string(name) : "layers." + std::to_string(l) + "." + name;
}

}  // namespace dit_detail

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

}  // namespace oboro
