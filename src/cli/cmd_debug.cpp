// `oboro debug dit|dit-grad|t5|t5-grad`: the spec §7/§9 debug contracts used by the twin tests.
#include "cli/commands.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include "models/t5.h"
#include "ops/backend.h"
#include <cstdio>

namespace oboro::cli {
namespace {

Tensor input(const TensorSource& src, const std::string& name, size_t ndim, const char* shape_doc) {
  if (!src.has(name)) fail(src.path(), ": input tensor '", name, "' is missing (expected ", shape_doc, ")");
  Tensor t = src.tensor_f32(name);
  if ((size_t)t.ndim() != ndim)
    fail(src.path(), ": input tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ", shape_doc);
  return t;
}

void run_dit(const std::string& model_path, const std::string& in_path, const std::string& out_path, bool grad) {
  Backend& be = cli::backend();
  auto model = DiT::load(model_path, be);
  const DiTConfig& cfg = model->config();
  TensorSource in = TensorSource::open(in_path);
  Tensor x = input(in, "x", 4, "(B, latent_channels, h, w)");
  Tensor t = input(in, "t", 1, "(B,)");
  Tensor txt = input(in, "txt", 3, "(B, L, text_dim)");
  Tensor mask = input(in, "txt_mask", 2, "(B, L)");
  const int B = (int)x.dim(0), C = (int)x.dim(1), h = (int)x.dim(2), w = (int)x.dim(3), L = (int)txt.dim(1);
  if (C != cfg.latent_channels)
    fail(in_path, ": x has ", C, " channels but the model expects latent_channels = ", cfg.latent_channels);
  if (t.dim(0) != B) fail(in_path, ": t has shape ", shape_str(t.shape()), ", expected (", B, ",)");
  if (txt.dim(0) != B || txt.dim(2) != cfg.text_dim)
    fail(in_path, ": txt has shape ", shape_str(txt.shape()), ", expected (", B, ", L, ", cfg.text_dim, ")");
  if (mask.dim(0) != B || mask.dim(1) != L)
    fail(in_path, ": txt_mask has shape ", shape_str(mask.shape()), ", expected (", B, ", ", L, ")");
  if (h % cfg.patch_size || w % cfg.patch_size)
    fail(in_path, ": x is ", h, "x", w, ", not divisible by the patch size ", cfg.patch_size);

  for (int b = 0; b < B; ++b)
    if (mask.f32()[(size_t)b * L] == 0.f)
      fail("txt_mask[", b, "][0] is 0: the first text token (the pooled BOS vector) must be valid");
  auto up = [&](const Tensor& host) { return upload_new(be, std::vector<float>(host.f32(), host.f32() + host.numel()), "debug input"); };
  Buffer xb = up(x), tb = up(t), txtb = up(txt), maskb = up(mask), vb = be.alloc((size_t)x.numel());
  model->forward(vb.f32(), xb.f32(), tb.f32(), txtb.f32(), maskb.f32(), B, L, h, w, grad);
  Tensor v = Tensor::zeros(x.shape());
  be.download(v.f32(), vb.f32(), (size_t)v.numel());
  SafetensorsWriter wr;
  wr.add("v", v);
  Tensor loss_t;
  std::vector<std::pair<std::string, Tensor>> grads;
  if (grad) {
    Tensor target = input(in, "target", 4, "(B, latent_channels, h, w) like x");
    if (target.shape() != x.shape())
      fail(in_path, ": target has shape ", shape_str(target.shape()), ", expected ", shape_str(x.shape()));
    Buffer targetb = up(target), lossb = be.alloc(1, DType::F64), dvb = be.alloc((size_t)v.numel());
    be.mse_forward(lossb.f64(), vb.f32(), targetb.f32(), (size_t)v.numel());
    double loss = 0;
    be.download(&loss, lossb.f64(), 1);
    be.mse_backward(dvb.f32(), vb.f32(), targetb.f32(), (size_t)v.numel(), 1.f);
    model->zero_grads();
    model->backward(dvb.f32());
    loss_t = Tensor::from_f32({(float)loss}, {1});
    wr.add("loss", loss_t);
    grads = download_params(model->layout(), model->grads(), be);
    for (auto& [n, g] : grads) wr.add("grad." + n, g);
  }
  wr.write(out_path);
}

// Spec §7: IN holds ids (B,L) I32 or I64 and mask (B,L) (1 valid, 0 pad); OUT holds hidden (B,L,d_model) F32.
// t5-grad: IN also holds target (B,L,d_model); loss = Σ_{b,l} mask[b,l]·Σ_d (hidden − target)²
// / (d_model · Σ_{b,l} mask[b,l]), i.e. mean((hidden − target)² · mask[..., None]) / mean(mask): the mean squared
// error over the valid rows only. OUT adds loss (1,) and grad.<param> for every parameter.
void run_t5(const std::string& model_path, const std::string& in_path, const std::string& out_path, bool grad) {
  Backend& be = cli::backend();
  auto model = T5Encoder::load(model_path, be);
  const T5Config& cfg = model->config();
  TensorSource in = TensorSource::open(in_path);
  if (!in.has("ids")) fail(in.path(), ": input tensor 'ids' is missing (expected (B, L) I32 or I64 token ids)");
  Tensor ids_t = in.tensor("ids").contiguous();
  if (ids_t.ndim() != 2)
    fail(in.path(), ": input tensor 'ids' has shape ", shape_str(ids_t.shape()), ", expected (B, L)");
  if (ids_t.dtype() != DType::I32 && ids_t.dtype() != DType::I64)
    fail(in.path(), ": input tensor 'ids' has dtype ", dtype_name(ids_t.dtype()), ", expected I32 or I64");
  const int B = (int)ids_t.dim(0), L = (int)ids_t.dim(1);
  if (B <= 0 || L <= 0) fail(in.path(), ": input tensor 'ids' is empty ", shape_str(ids_t.shape()));
  std::vector<int32_t> ids((size_t)B * L);
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t v = ids_t.dtype() == DType::I32 ? ids_t.data<int32_t>()[i] : ids_t.data<int64_t>()[i];
    if (v < 0 || v >= cfg.vocab_size)
      fail(in.path(), ": ids[", i / L, "][", i % L, "] = ", v, " is out of range for the T5 vocabulary of size ",
           cfg.vocab_size, " (", model_path, ")");
    ids[i] = (int32_t)v;
  }
  Tensor mask = input(in, "mask", 2, "(B, L) F32, 1 valid / 0 pad");
  if (mask.dim(0) != B || mask.dim(1) != L)
    fail(in.path(), ": mask has shape ", shape_str(mask.shape()), ", expected (", B, ", ", L, ") like ids");

  const int D = cfg.d_model;
  Tensor hidden = Tensor::zeros({B, L, D});
  Buffer hb = be.alloc((size_t)hidden.numel());
  model->forward(hb.f32(), ids.data(), mask.f32(), B, L, grad);
  be.download(hidden.f32(), hb.f32(), (size_t)hidden.numel());
  SafetensorsWriter wr;
  wr.add("hidden", hidden);
  Tensor loss_t;
  std::vector<std::pair<std::string, Tensor>> grads;
  if (grad) {
    Tensor target = input(in, "target", 3, "(B, L, d_model) like hidden");
    if (target.shape() != hidden.shape())
      fail(in.path(), ": target has shape ", shape_str(target.shape()), ", expected ", shape_str(hidden.shape()));
    const float *h = hidden.f32(), *t = target.f32(), *m = mask.f32();
    double msum = 0, sse = 0;
    for (size_t r = 0; r < (size_t)B * L; ++r) {
      msum += m[r];
      double s = 0;
      for (int d = 0; d < D; ++d) {
        double e = (double)h[r * D + d] - t[r * D + d];
        s += e * e;
      }
      sse += m[r] * s;
    }
    if (!(msum > 0)) fail(in.path(), ": mask has no valid position: the masked loss is undefined");
    const double denom = msum * D;
    Tensor dh = Tensor::zeros(hidden.shape());
    for (size_t r = 0; r < (size_t)B * L; ++r)
      for (int d = 0; d < D; ++d)
        dh.f32()[r * D + d] = (float)(2.0 * m[r] * ((double)h[r * D + d] - t[r * D + d]) / denom);
    model->zero_grads();
    Buffer dhb = be.alloc((size_t)dh.numel());
    be.upload(dhb.f32(), dh.f32(), (size_t)dh.numel());
    model->backward(dhb.f32());
    loss_t = Tensor::from_f32({(float)(sse / denom)}, {1});
    wr.add("loss", loss_t);
    grads = download_params(model->layout(), model->grads(), be);
    for (auto& [n, g] : grads) wr.add("grad." + n, g);
  }
  wr.write(out_path);
}

}  // namespace

void register_debug(CLI::App& app) {
  auto* dbg = app.add_subcommand("debug", "Debug contracts: run one model on tensors from a file (spec §7–§9)");
  dbg->require_subcommand(1);
  struct Opts { std::string model, inputs, output, matmul = "f32"; };
  auto opts = std::make_shared<Opts>();
  // The Linear GEMMs' arithmetic (ops/backend.h MatmulPrecision): bf16 is what `mixed_precision = "bf16"` trains with.
  auto precision = [](const std::string& m) {
    if (m != "f32" && m != "bf16") fail("--matmul-precision ", m, " is unknown: use f32 or bf16");
    return m == "bf16" ? MatmulPrecision::BF16 : MatmulPrecision::F32;
  };
  auto add_precision = [&](CLI::App* c) {
    c->add_option("--matmul-precision", opts->matmul, "Linear GEMMs in f32 or bf16 (mixed-precision training)")
        ->capture_default_str();
  };
  for (const char* name : {"dit", "dit-grad"}) {
    bool grad = std::string(name) == "dit-grad";
    auto* c = dbg->add_subcommand(name, grad ? "DiT forward + MSE loss against `target` + parameter gradients"
                                             : "DiT forward: x, t, txt, txt_mask -> v");
    c->add_option("--model", opts->model, "DiT model file (.safetensors with oboro.config)")->required();
    c->add_option("--inputs", opts->inputs, "inputs .safetensors (x, t, txt, txt_mask[, target])")->required();
    c->add_option("--output", opts->output, "output .safetensors")->required();
    add_precision(c);
    c->callback([opts, grad, precision] {
      MatmulPrecisionScope scope(cli::backend(), precision(opts->matmul));
      run_dit(opts->model, opts->inputs, opts->output, grad);
    });
  }
  for (const char* name : {"t5", "t5-grad"}) {
    bool grad = std::string(name) == "t5-grad";
    auto* c = dbg->add_subcommand(name, grad ? "T5 encoder forward + masked MSE against `target` + parameter gradients"
                                             : "T5 encoder forward: ids, mask -> hidden (final RMSNorm output)");
    c->add_option("--model", opts->model, "T5 checkpoint: .safetensors file, *.index.json or directory")->required();
    c->add_option("--inputs", opts->inputs, "inputs .safetensors (ids, mask[, target])")->required();
    c->add_option("--output", opts->output, "output .safetensors")->required();
    add_precision(c);
    c->callback([opts, grad, precision] {
      MatmulPrecisionScope scope(cli::backend(), precision(opts->matmul));
      run_t5(opts->model, opts->inputs, opts->output, grad);
    });
  }
}

}  // namespace oboro::cli
