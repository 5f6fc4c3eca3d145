// Tensor declarations (issue 15, "each tensor declared once"). A model lists each of its tensors once — its name, its
// shape as a function of the config, its role, its initialisation, whether it may be held in a low-precision format
// and the pointer (and weight view) it binds to — and everything else follows from that one list: the parameter
// layout (names, shapes, the order and offsets of the flat buffer saved in checkpoints), the pointer structs the
// forward/backward read, the quantisable set, the loaders' name checks (they read the layout) and init_weights.
//
// The DiT and the T5 are "head tensors, then each block's tensors, then tail tensors" (TensorTable below); the VAE's
// tensors follow its nested structure (levels × blocks, shortcuts only where the width changes) and are declared by
// one walker in vae.cpp (vae_tensors) with the same Role / low-precision rules.
#pragma once
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "models/params.h"
#include "ops/backend.h"
#include "ops/weights.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace oboro {

// One dimension: k · (the model's named size `sym`), or the constant k when sym < 0. Each model numbers its sizes
// (the DiT's D, C, T, F, P; the T5's V, D, I, F, ...) and resolves them from its config into a span of values.
struct Dim {
  int sym = -1;
  int64_t k = 1;
  int64_t of(std::span<const int64_t> sizes) const { return sym < 0 ? k : k * sizes[(size_t)sym]; }
};
constexpr Dim operator*(int64_t k, Dim d) { return {d.sym, k * d.k}; }
constexpr Dim lit(int64_t k) { return {-1, k}; }

// A shape of rank 1 or 2 in Dims: {D} or {3 * D, D}.
struct ShapeSpec {
  int rank;
  Dim d0, d1;
  constexpr ShapeSpec(Dim a) : rank(1), d0(a), d1() {}
  constexpr ShapeSpec(Dim a, Dim b) : rank(2), d0(a), d1(b) {}
  Shape of(std::span<const int64_t> s) const { return rank == 1 ? Shape{d0.of(s)} : Shape{d0.of(s), d1.of(s)}; }
};

// What a tensor is. Weight: a Linear / conv / embedding matrix (rank ≥ 2) — the tensors weight decay applies to (the
// optimiser decays exactly the tensors of rank ≥ 2; every table walk checks that Weight ⇔ rank ≥ 2). Norm: a
// normalisation's scale γ. Bias: an additive term (a Linear / conv bias, a LayerNorm / GroupNorm shift β).
enum class Role : uint8_t { Weight, Norm, Bias };

// The spec initialisation of a tensor. Normal: N(0, scale / √fan); Xavier: N(0, √(2 / (fan_in + fan_out))) of an
// (out, in) matrix. Every tensor owns RNG stream k (its index in the layout), drawn from or not.
struct Init {
  enum Kind : uint8_t { Zeros, Ones, Normal, Xavier } kind = Zeros;
  double scale = 0;
  Dim fan = lit(1);
  double stddev(const Shape& shape, std::span<const int64_t> sizes) const {
    if (kind == Xavier) {
      const double fan_in = (double)shape[1], fan_out = (double)shape[0];
      return std::sqrt(2.0 / (fan_in + fan_out));
    }
    return kind == Normal ? scale / std::sqrt((double)fan.of(sizes)) : 0.0;
  }
  // host (zeroed, the tensor's size) ← the initial values.
  void fill(std::vector<float>& host, const Shape& shape, std::span<const int64_t> sizes, uint64_t seed,
            uint64_t stream) const {
    if (kind == Ones) std::fill(host.begin(), host.end(), 1.f);
    else if (kind == Normal || kind == Xavier)
      fill_normal(host.data(), (int64_t)host.size(), seed, stream, 0, 0.f, (float)stddev(shape, sizes));
  }
};
inline constexpr Init kZeros{Init::Zeros}, kOnes{Init::Ones}, kXavier{Init::Xavier};
constexpr Init normal_init(double scale, Dim fan = lit(1)) { return {Init::Normal, scale, fan}; }

struct NoViews {};

// One tensor: `name` (under its block's prefix for block tensors), shape, role, init, the member of the pointer
// struct `Ptrs` that bind() sets to its address, and — for a quantisable weight (one that may be held in a
// low-precision format) — the member of `Views` the forward reads it through. `first_block_only`: declared in block 0
// alone (the T5's shared relative-attention bias).
template <class Ptrs, class Views = NoViews>
struct TensorDecl {
  const char* name;
  ShapeSpec shape;
  Role role;
  Init init;
  float* Ptrs::*ptr;
  WeightView Views::*view = nullptr;
  bool first_block_only = false;
  bool quantizable() const { return view != nullptr; }
};

inline void check_role(Role role, const Shape& s, const std::string& name) {
  if ((role == Role::Weight) != (s.size() >= 2))
    fail("internal error: tensor ", name, " of shape ", shape_str(s), " is declared as ",
         role == Role::Weight ? "a weight matrix" : "a norm scale / bias",
         ": weight decay applies to the tensors of rank >= 2, so a weight must have rank >= 2 and nothing else may");
}

// A model's tensors in layout order: `head`, then `block` for each block i (names under block_root + i + "."), then
// `tail`. `Top` holds the head/tail pointers, `Block` one block's, `Views` one block's quantisable weight views.
template <class Top, class Block, class Views = NoViews>
struct TensorTable {
  std::span<const TensorDecl<Top>> head;
  const char* block_root;
  std::span<const TensorDecl<Block, Views>> block;
  std::span<const TensorDecl<Top>> tail;

  std::string prefix(int i) const { return block_root + std::to_string(i) + "."; }

  // Every tensor in layout order: fn(decl, full name).
  template <class Fn>
  void each(int blocks, Fn&& fn) const {
    for (const auto& d : head) fn(d, std::string(d.name));
    for (int i = 0; i < blocks; ++i) {
      const std::string p = prefix(i);
      for (const auto& d : block)
        if (!d.first_block_only || i == 0) fn(d, p + d.name);
    }
    for (const auto& d : tail) fn(d, std::string(d.name));
  }

  // The layout of every tensor; `f32_only`: without the quantisable ones (a model holding them in a low-precision
  // format keeps only the others in its flat F32 buffer).
  ParamLayout layout(int blocks, std::span<const int64_t> sizes, bool f32_only = false) const {
    ParamLayout L;
    each(blocks, [&](const auto& d, const std::string& n) {
      const Shape s = d.shape.of(sizes);
      check_role(d.role, s, n);
      if (!(f32_only && d.quantizable())) L.add(n, s);
    });
    return L;
  }

  // The declaration of tensor `n`: fn(decl) and true, or false when no tensor has that name (block indices are not
  // checked against a block count).
  template <class Fn>
  bool find(const std::string& n, Fn&& fn) const {
    for (const auto* part : {&head, &tail})
      for (const auto& d : *part)
        if (n == d.name) return fn(d), true;
    const size_t r = std::strlen(block_root);
    if (n.compare(0, r, block_root) != 0) return false;
    size_t e = r;
    while (e < n.size() && n[e] >= '0' && n[e] <= '9') ++e;
    if (e == r || e >= n.size() || n[e] != '.') return false;
    const bool first = e == r + 1 && n[r] == '0';
    for (const auto& d : block)
      if ((first || !d.first_block_only) && n.compare(e + 1, std::string::npos, d.name) == 0) return fn(d), true;
    return false;
  }
  bool quantizable(const std::string& n) const {
    bool q = false;
    find(n, [&](const auto& d) { q = d.quantizable(); });
    return q;
  }

  // Pointers into a flat buffer laid out by `L`: null for a quantisable tensor that `L` does not hold.
  template <class D>
  static float* address(const D& d, const ParamLayout& L, float* base, const std::string& n) {
    const ParamView* v = d.quantizable() ? L.find(n) : &L.at(n);
    return v ? base + v->offset : nullptr;
  }
  void bind_top(Top& t, const ParamLayout& L, float* base) const {
    for (const auto* part : {&head, &tail})
      for (const auto& d : *part) t.*d.ptr = address(d, L, base, d.name);
  }
  std::vector<Block> bind_blocks(const ParamLayout& L, float* base, int blocks) const {
    std::vector<Block> out(blocks);
    for (int i = 0; i < blocks; ++i) {
      const std::string p = prefix(i);
      for (const auto& d : block)
        out[i].*d.ptr = d.first_block_only && i ? nullptr : address(d, L, base, p + d.name);
    }
    return out;
  }
  // Each block's quantisable weight views: view(full name) for each quantisable block tensor.
  template <class Fn>
  std::vector<Views> bind_views(int blocks, Fn&& view) const {
    std::vector<Views> out(blocks);
    for (int i = 0; i < blocks; ++i) {
      const std::string p = prefix(i);
      for (const auto& d : block)
        if (d.quantizable()) out[i].*d.view = view(p + d.name);
    }
    return out;
  }

  // init_weights: every tensor of `L` (the full layout of an F32 model) by its Init rule, tensor k drawing from RNG
  // stream k, uploaded into `params`.
  void init(Backend& be, const ParamLayout& L, float* params, int blocks, std::span<const int64_t> sizes,
            uint64_t seed) const {
    std::vector<float> host;
    uint64_t stream = 0;
    each(blocks, [&](const auto& d, const std::string& n) {
      const ParamView& v = L.at(n);
      host.assign(v.numel(), 0.f);
      d.init.fill(host, v.shape, sizes, seed, stream);
      ++stream;
      be.upload(params + v.offset, host.data(), host.size());
    });
  }
};

}  // namespace oboro
