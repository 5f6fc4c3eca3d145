// `oboro debug dit|dit-grad`: the spec §9 debug contract used by the twin tests.
#include "cli/commands.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/dit.h"
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
  Backend& be = cpu_backend();
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

  Tensor v = Tensor::zeros(x.shape());
  model->forward(v.f32(), x.f32(), t.f32(), txt.f32(), mask.f32(), B, L, h, w, grad);
  SafetensorsWriter wr;
  wr.add("v", v);
  Tensor loss_t;
  std::vector<std::pair<std::string, Tensor>> grads;
  if (grad) {
    Tensor target = input(in, "target", 4, "(B, latent_channels, h, w) like x");
    if (target.shape() != x.shape())
      fail(in_path, ": target has shape ", shape_str(target.shape()), ", expected ", shape_str(x.shape()));
    double loss = be.mse_forward(v.f32(), target.f32(), (size_t)v.numel());
    Tensor dv = Tensor::zeros(v.shape());
    be.mse_backward(dv.f32(), v.f32(), target.f32(), (size_t)v.numel(), 1.f);
    model->zero_grads();
    model->backward(dv.f32());
    loss_t = Tensor::from_f32({(float)loss}, {1});
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
  struct Opts { std::string model, inputs, output; };
  auto opts = std::make_shared<Opts>();
  for (const char* name : {"dit", "dit-grad"}) {
    bool grad = std::string(name) == "dit-grad";
    auto* c = dbg->add_subcommand(name, grad ? "DiT forward + MSE loss against `target` + parameter gradients"
                                             : "DiT forward: x, t, txt, txt_mask -> v");
    c->add_option("--model", opts->model, "DiT model file (.safetensors with oboro.config)")->required();
    c->add_option("--inputs", opts->inputs, "inputs .safetensors (x, t, txt, txt_mask[, target])")->required();
    c->add_option("--output", opts->output, "output .safetensors")->required();
    c->callback([opts, grad] { run_dit(opts->model, opts->inputs, opts->output, grad); });
  }
}

}  // namespace oboro::cli
