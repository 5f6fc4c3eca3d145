#include "lora/lora_file.h"
#include "core/error.h"
#include "core/sha256.h"
#include "io/safetensors.h"
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace oboro::lora {

namespace {

struct Halves {
  std::string down_key, up_key, alpha_key;
};

bool is_text_encoder_key(const std::string& k) { return k.rfind("lora_te", 0) == 0; }

float read_alpha(const SafetensorsFile& f, const std::string& key) {
  const TensorInfo& ti = f.info(key);
  if (shape_numel(ti.shape) != 1)
    fail(f.path(), ": ", key, " has shape ", shape_str(ti.shape), ", but a LoRA alpha is one number: the file is not a "
         "kohya LoRA; re-export it");
  const float a = f.tensor_f32(key).f32()[0];
  if (!std::isfinite(a) || a < 0)
    fail(f.path(), ": ", key, " is ", a, ", but a LoRA alpha must be a finite number >= 0: re-export the LoRA");
  return a;
}

}  // namespace

LoraFile read_lora(const std::string& path, const LoraKeyMap& map) {
  auto f = SafetensorsFile::open(path);
  LoraFile out;
  out.path = path;
  out.metadata = f->metadata();
  out.tensors = f->tensors().size();
  if (auto it = out.metadata.find(kArchitectureKey); it != out.metadata.end() && it->second != kLoraArchitecture)
    fail(path, ": ", kArchitectureKey, " is \"", it->second, "\", not \"", kLoraArchitecture,
         "\": this LoRA was made for another model family and cannot be applied to an oboro DiT");
  if (out.tensors == 0) fail(path, ": holds no tensors: it is not a LoRA; pass a LoRA .safetensors file");

  // Group the keys by target tensor, refusing the first key that is not a LoRA key of this model.
  std::map<std::string, Halves> by_tensor;
  std::set<KeyLayout> layouts;
  std::vector<std::string> names;
  for (const TensorInfo& ti : f->tensors()) names.push_back(ti.name);
  std::sort(names.begin(), names.end());  // "first bad key" is the first in sorted order, independent of the layout
  for (const std::string& key : names) {
    if (is_text_encoder_key(key)) {
      out.unused.push_back(key);
      continue;
    }
    const auto pk = parse_key(key);
    if (!pk)
      fail(path, ": ", key, " is not a LoRA key (kohya lora_unet_<module>.lora_down.weight / .lora_up.weight / .alpha "
           "or PEFT <module>.lora_A.weight / .lora_B.weight): the file is not a LoRA for an oboro DiT");
    const Target* t = map.find(*pk);
    if (!t)
      fail(path, ": ", key, " names no 2-D weight of this model (", pk->module, "): the LoRA was made for another "
           "model or model size; use a LoRA trained on this base model");
    layouts.insert(pk->layout);
    Halves& h = by_tensor[t->tensor];
    std::string& slot = pk->part == KeyPart::Down ? h.down_key : pk->part == KeyPart::Up ? h.up_key : h.alpha_key;
    if (!slot.empty())
      fail(path, ": ", key, " and ", slot, " both adapt ", t->tensor, ": a LoRA holds each module once; re-export it");
    slot = key;
  }
  if (by_tensor.empty())
    fail(path, ": none of its ", out.tensors, " tensors adapts this model (first key ", names.front(),
         "): it is not a LoRA for an oboro DiT");
  if (layouts.size() > 1)
    fail(path, ": mixes kohya (lora_unet_*) and PEFT (lora_A/lora_B) keys: re-export it in one layout");
  out.layout = *layouts.begin();

  // Each module: both halves, shapes against the model, alpha. In the model's target order.
  for (const Target& t : map.targets()) {
    auto it = by_tensor.find(t.tensor);
    if (it == by_tensor.end()) continue;
    const Halves& h = it->second;
    const std::string& any = !h.down_key.empty() ? h.down_key : !h.up_key.empty() ? h.up_key : h.alpha_key;
    if (h.down_key.empty() || h.up_key.empty())
      fail(path, ": ", any, " has no ", h.down_key.empty() ? "down (lora_down / lora_A)" : "up (lora_up / lora_B)",
           " half: each module needs both; re-export the LoRA");
    const Shape& ds = f->info(h.down_key).shape;
    const Shape& us = f->info(h.up_key).shape;
    const int64_t N = t.shape[0], K = t.shape[1];
    if (ds.size() != 2 || ds[1] != K || ds[0] < 1)
      fail(path, ": ", h.down_key, " has shape ", shape_str(ds), ", but ", t.tensor, " of this model is ",
           shape_str(t.shape), " so down must be (rank, ", K, "): the LoRA was made for another model size");
    if (us.size() != 2 || us[0] != N || us[1] != ds[0])
      fail(path, ": ", h.up_key, " has shape ", shape_str(us), ", but ", t.tensor, " of this model is ",
           shape_str(t.shape), " and the down half has rank ", ds[0], " so up must be (", N, ", ", ds[0],
           "): the LoRA was made for another model size");
    LoraModule m;
    m.tensor = t.tensor;
    m.key = h.down_key;
    m.down = f->tensor_f32(h.down_key);
    m.up = f->tensor_f32(h.up_key);
    const float r = (float)ds[0];
    m.alpha = h.alpha_key.empty() ? r : read_alpha(*f, h.alpha_key);
    if (m.alpha == 0) m.alpha = r;  // kohya: alpha 0 / None → alpha = dim
    m.scale = m.alpha / r;
    for (const Tensor* x : {&m.down, &m.up})
      for (int64_t i = 0; i < x->numel(); ++i)
        if (!std::isfinite(x->f32()[i]))
          fail(path, ": ", x == &m.down ? h.down_key : h.up_key, " holds a non-finite value (NaN or inf): the LoRA is "
               "damaged (a diverged training run?); use another one");
    out.modules.push_back(std::move(m));
  }
  return out;
}

std::vector<float> lora_delta(const LoraModule& m) {
  const int64_t N = m.up.dim(0), r = m.up.dim(1), K = m.down.dim(1);
  const float* U = m.up.f32();
  const float* Dn = m.down.f32();
  std::vector<float> d((size_t)(N * K));
  std::vector<double> row((size_t)K);
  for (int64_t n = 0; n < N; ++n) {
    std::fill(row.begin(), row.end(), 0.0);
    for (int64_t j = 0; j < r; ++j) {
      const double u = U[n * r + j];
      const float* dr = Dn + j * K;
      for (int64_t k = 0; k < K; ++k) row[k] += u * dr[k];
    }
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      const float v = (float)(row[k] * m.scale);
      finite = finite && std::isfinite(v);
      d[(size_t)(n * K + k)] = v;
    }
    // Finite halves whose product overflows float32 (fuzz_lora): the delta would turn the model's weights into inf.
    if (!finite)
      fail("LoRA tensor ", m.key, ": scale·up·down overflows float32 in row ", n, " of ", m.tensor,
           " (scale ", m.scale, "): the LoRA's values are out of range — the file is damaged or was not trained for "
           "this model");
  }
  return d;
}

std::string lora_addnet_hash(const std::string& path) {
  {
    auto f = SafetensorsFile::open(path);  // validates the file (and reads sshs_model_hash)
    auto it = f->metadata().find("sshs_model_hash");
    if (it != f->metadata().end() && !it->second.empty()) return it->second;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open the LoRA to hash it: check the path and permissions");
  uint8_t hdr[8];
  in.read((char*)hdr, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | hdr[i];
  in.seekg((std::streamoff)(8 + n));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), (std::streamsize)buf.size());
    if (in.gcount() > 0) h.update(buf.data(), (size_t)in.gcount());
  }
  return h.hex();
}

std::string lora_short_hash(const std::string& path) { return lora_addnet_hash(path).substr(0, 12); }

// ---- writing ----

namespace {
std::string fmt_num(double v) {
  std::string s = nlohmann::json(v).dump();
  return s;
}
}  // namespace

void write_lora(const std::string& path, const std::vector<LoraWriteModule>& modules, const LoraMetadata& meta) {
  if (modules.empty()) fail(path, ": a LoRA needs at least one module; nothing was written");
  SafetensorsWriter w;
  std::vector<Tensor> alphas;
  alphas.reserve(modules.size());
  std::set<std::string> seen;
  int rank = 0;
  for (const LoraWriteModule& m : modules) {
    if (!seen.insert(m.tensor).second) fail("internal error: LoRA module ", m.tensor, " written twice");
    if (m.down.ndim() != 2 || m.up.ndim() != 2 || m.up.dim(1) != m.down.dim(0))
      fail("internal error: LoRA module ", m.tensor, " has down ", shape_str(m.down.shape()), " and up ",
           shape_str(m.up.shape()), " (want (r, K) and (N, r))");
    rank = std::max(rank, (int)m.down.dim(0));
    w.add(kohya_key(m.tensor, KeyPart::Down), m.down);
    w.add(kohya_key(m.tensor, KeyPart::Up), m.up);
    alphas.push_back(Tensor::from_f32({m.alpha > 0 ? m.alpha : (float)m.down.dim(0)}, Shape{}));
    w.add(kohya_key(m.tensor, KeyPart::Alpha), alphas.back());
  }
  const int dim = meta.network_dim > 0 ? meta.network_dim : rank;
  const float alpha = meta.network_alpha > 0 ? meta.network_alpha : (float)dim;
  std::map<std::string, std::string> md = meta.extra;
  md[kArchitectureKey] = kLoraArchitecture;
  md["modelspec.sai_model_spec"] = "1.0.0";
  md["ss_network_module"] = meta.network_module;
  md["ss_network_dim"] = std::to_string(dim);
  md["ss_network_alpha"] = fmt_num(alpha);
  if (!meta.network_args.empty()) md["ss_network_args"] = meta.network_args;
  if (meta.steps > 0) md["ss_steps"] = md["ss_max_train_steps"] = std::to_string(meta.steps);
  if (meta.learning_rate > 0) md["ss_learning_rate"] = md["ss_unet_lr"] = fmt_num(meta.learning_rate);
  if (meta.resolution_w > 0)
    md["ss_resolution"] = "(" + std::to_string(meta.resolution_w) + ", " + std::to_string(meta.resolution_h) + ")";
  if (!meta.dataset_summary.empty()) md["ss_dataset_dirs"] = meta.dataset_summary;
  if (!meta.tag_frequency.empty()) md["ss_tag_frequency"] = meta.tag_frequency;
  if (!meta.base_model_hash.empty()) md["ss_new_sd_model_hash"] = md["oboro.base_model"] = meta.base_model_hash;
  if (!meta.base_model_name.empty()) md["ss_sd_model_name"] = meta.base_model_name;
  if (!meta.provenance.empty()) md["oboro.dataset"] = meta.provenance;
  for (const auto& [k, v] : md) w.set_metadata(k, v);
  // kohya records the addnet hash of the tensors (the data section, which metadata does not change): write, hash,
  // write again with it (a LoRA is small).
  w.write(path);
  const std::string h = lora_addnet_hash(path);
  w.set_metadata("sshs_model_hash", h);
  w.write(path);
}

}  // namespace oboro::lora
