#include "merge/merge.h"
#include "core/error.h"
#include "io/file_hash.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"
#include "lora/lora_merge.h"
#include "merge/merge_metadata.h"
#include "merge/svd.h"
#include "models/dit_config.h"
#include "models/params.h"
#include <filesystem>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

namespace oboro::merge {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Input {
  std::string path, role;
  std::unique_ptr<TensorSource> src;
  DiTConfig cfg;
  json cfg_json;
};

Input open_model(const std::string& path, const std::string& role) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) && !fs::is_directory(path, ec))
    fail("model ", role, " ", path, ": no such file: pass an oboro DiT .safetensors file");
  Input in;
  in.path = path;
  in.role = role;
  in.src = std::make_unique<TensorSource>(TensorSource::open(path));
  auto it = in.src->metadata().find("oboro.config");
  if (it == in.src->metadata().end())
    fail(path, ": no 'oboro.config' metadata: model ", role, " is not an oboro DiT file (a LoRA? pass it with --lora)");
  in.cfg_json = json::parse(it->second, nullptr, false);
  if (in.cfg_json.is_discarded()) fail(path, ": 'oboro.config' metadata is not valid JSON: the file is damaged");
  in.cfg = DiTConfig::from_json(in.cfg_json, path);
  return in;
}

// x has every tensor of layout L with A's shape, and A's config.
void check_same_architecture(const Input& a, const Input& x, const ParamLayout& L) {
  for (const ParamView& v : L.views()) {
    if (!x.src->has(v.name))
      fail(x.path, ": has no tensor ", v.name, " (model ", a.role, " ", a.path, " has ", shape_str(v.shape),
           "): the models are of different architectures and cannot be merged");
    const Shape& s = x.src->info(v.name).shape;
    if (s != v.shape)
      fail(x.path, ": tensor ", v.name, " has shape ", shape_str(s), " but model ", a.role, " ", a.path, " has ",
           shape_str(v.shape), ": the models are of different sizes and cannot be merged");
  }
  const json ja = a.cfg.to_json(), jx = x.cfg.to_json();
  if (ja != jx)
    for (const auto& [k, v] : ja.items())
      if (!jx.contains(k) || jx[k] != v)
        fail(x.path, ": its oboro.config ", k, " is ", jx.contains(k) ? jx[k].dump() : "absent", " but model ", a.role,
             " ", a.path, " has ", v.dump(), ": the models are of different architectures and cannot be merged");
}

DType out_dtype(const std::string& s) {
  if (s.empty() || s == "f32" || s == "F32") return DType::F32;
  if (s == "bf16" || s == "BF16") return DType::BF16;
  if (s == "f16" || s == "F16") return DType::F16;
  fail("--dtype ", s, ": use f32, bf16 or f16 (for q8_0 / f8, convert the merged file with `oboro convert`)");
}
const char* dtype_format_name(DType t) { return t == DType::BF16 ? "bf16" : t == DType::F16 ? "f16" : "f32"; }

Tensor to_dtype(std::vector<float>&& v, const Shape& shape, DType dt) {
  if (dt == DType::F32) return Tensor::from_f32(v, shape);
  Tensor t = Tensor::empty(shape, dt);
  uint16_t* p = t.data<uint16_t>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = dt == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  return t;
}

void check_output(const MergeOptions& opt) {
  if (opt.output.empty()) fail("oboro merge: no output: pass -o OUT.safetensors");
  std::error_code ec;
  for (const std::string& in : opt.inputs)
    if (fs::exists(opt.output, ec) && fs::equivalent(opt.output, in, ec))
      fail(opt.output, ": is an input of this merge; write the result to a new file (-o OTHER.safetensors)");
  for (const MergeLora& l : opt.loras)
    if (fs::exists(opt.output, ec) && fs::equivalent(opt.output, l.path, ec))
      fail(opt.output, ": is a LoRA of this merge; write the result to a new file (-o OTHER.safetensors)");
  if (fs::exists(opt.output, ec) && !opt.force)
    fail(opt.output, ": exists; pass --force to replace it, or choose another -o");
  const fs::path dir = fs::path(opt.output).parent_path();
  if (!dir.empty() && !fs::is_directory(dir, ec))
    fail(opt.output, ": its folder ", dir.string(), " does not exist; create it first");
}

// A's metadata without the keys a merge rewrites.
std::map<std::string, std::string> carried_metadata(const Input& a) {
  std::map<std::string, std::string> md;
  for (const auto& [k, v] : a.src->metadata()) {
    if (k == "sd_merge_recipe" || k == "sd_merge_models" || k == "oboro.dataset" || k == kDatasetsKey ||
        k.rfind("sshs_", 0) == 0 || k == "modelspec.hash_sha256" || k == kWeightFormatKey)
      continue;
    md[k] = v;
  }
  return md;
}

json recipe_json(const MergeOptions& opt, const std::vector<InputFile>& files) {
  static const char* kA1111[] = {"Weighted sum", "Add difference", "Triple sum", "No interpolation", "Extract LoRA"};
  json r = {{"type", "oboro"}, {"mode", mode_name(opt.mode)}, {"interp_method", kA1111[(int)opt.mode]},
            {"multiplier", opt.multiplier}};
  if (opt.mode == Mode::TripleSum) r["multiplier2"] = opt.multiplier2;
  const char* keys[] = {"primary_model_hash", "secondary_model_hash", "tertiary_model_hash"};
  for (size_t i = 0; i < files.size() && i < 3; ++i)
    if (files[i].role != "lora") r[keys[i]] = files[i].sha256;
  if (!opt.block_weights.empty()) r["block_weights"] = opt.block_weights;
  if (opt.mode == Mode::ExtractLora) r["rank"] = opt.rank;
  json loras = json::array();
  size_t li = 0;
  for (const InputFile& f : files)
    if (f.role == "lora") {
      loras.push_back({{"name", fs::path(f.path).stem().string()}, {"sha256", f.sha256}, {"weight", opt.loras[li++].weight}});
    }
  if (!loras.empty()) r["loras"] = loras;
  r["dtype"] = opt.dtype.empty() ? "f32" : opt.dtype;
  return r;
}

MergeReport extract_lora(const MergeOptions& opt, const Input& a, const Input& b, const ParamLayout& L,
                         const std::vector<InputFile>& files) {
  if (opt.rank < 1) fail("--mode extract-lora needs --rank R (R >= 1)");
  const DType dt = out_dtype(opt.dtype);
  const lora::LoraKeyMap map = lora::LoraKeyMap::from_layout(L);
  MergeReport rep;
  std::vector<lora::LoraWriteModule> mods;
  for (const ParamView& v : L.views()) {
    const Tensor ta = read_weight_f32(*a.src, v.name, v.shape, "model A"),
                 tb = read_weight_f32(*b.src, v.name, v.shape, "model B");
    const float *pa = ta.f32(), *pb = tb.f32();
    const size_t n = v.numel();
    bool same = true;
    for (size_t i = 0; i < n && same; ++i) same = pa[i] == pb[i];
    if (!map.find_tensor(v.name)) {
      if (!same) rep.lost_1d.push_back(v.name);
      continue;
    }
    if (same) {
      ++rep.identical;
      continue;
    }
    std::vector<double> D(n);
    for (size_t i = 0; i < n; ++i) D[i] = (double)pa[i] - (double)pb[i];  // ΔW = A − B (N,K)
    const LowRank lr = truncated_svd(D, v.shape[0], v.shape[1], opt.rank);
    rep.energy.push_back({v.name, lr.rank, lr.retained()});
    rep.energy_total += lr.energy_total;
    rep.energy_kept += lr.energy_kept;
    lora::LoraWriteModule m;
    m.tensor = v.name;
    m.down = to_dtype(std::vector<float>(lr.down), {lr.rank, v.shape[1]}, dt);
    m.up = to_dtype(std::vector<float>(lr.up), {v.shape[0], lr.rank}, dt);
    m.alpha = (float)lr.rank;  // scale 1: ΔW ≈ up · down
    mods.push_back(std::move(m));
  }
  if (mods.empty())
    fail(a.path, " and ", b.path, " are equal in every 2-D weight: there is no difference to extract a LoRA from");
  lora::LoraMetadata meta;
  meta.network_dim = opt.rank;
  meta.network_alpha = (float)opt.rank;
  meta.network_args = json({{"extracted_from", fs::path(a.path).stem().string()},
                            {"base", fs::path(b.path).stem().string()}, {"retained_energy", rep.retained()}})
                          .dump();
  meta.base_model_hash = files[1].sha256;
  meta.base_model_name = fs::path(b.path).stem().string();
  for (const auto& [k, v] : union_provenance(files)) meta.extra[k] = v;
  meta.extra["sd_merge_recipe"] = recipe_json(opt, files).dump();
  meta.extra["sd_merge_models"] = merge_models_json(files);
  lora::write_lora(opt.output, mods, meta);
  rep.tensors = 3 * mods.size();
  return rep;
}

}  // namespace

MergeReport run_merge(const MergeOptions& opt) {
  const int want = mode_inputs(opt.mode);
  if ((int)opt.inputs.size() != want)
    fail("--mode ", mode_name(opt.mode), " takes ", want, want == 1 ? " model (A)" : want == 2 ? " models (A B)" : " models (A B C)",
         ", got ", opt.inputs.size());
  if (opt.mode == Mode::ExtractLora && !opt.loras.empty()) fail("--lora cannot be combined with --mode extract-lora");
  if (!std::isfinite(opt.multiplier) || !std::isfinite(opt.multiplier2)) fail("--multiplier must be a finite number");
  const char* roles[] = {"A", "B", "C"};
  std::vector<Input> in;
  for (size_t i = 0; i < opt.inputs.size(); ++i) in.push_back(open_model(opt.inputs[i], roles[i]));
  check_output(opt);
  const ParamLayout L = dit_param_layout(in[0].cfg);
  for (size_t i = 1; i < in.size(); ++i) check_same_architecture(in[0], in[i], L);
  const BlockWeights bw = opt.block_weights.empty() ? BlockWeights() : BlockWeights(opt.block_weights, in[0].cfg.layers());
  const DType dt = out_dtype(opt.dtype);

  // LoRAs, validated against A before anything is written.
  const lora::LoraKeyMap map = lora::LoraKeyMap::from_layout(L);
  std::vector<lora::WeightedLora> loras;
  for (const MergeLora& l : opt.loras) {
    lora::WeightedLora w;
    w.file = lora::read_lora(l.path, map);
    w.weight = l.weight;
    w.name = fs::path(l.path).stem().string();
    loras.push_back(std::move(w));
  }

  std::vector<InputFile> files;
  for (const Input& x : in) files.push_back({x.path, x.role, sha256_file_cached(x.path), x.src->metadata()});
  for (const MergeLora& l : opt.loras) files.push_back({l.path, "lora", sha256_file_cached(l.path), {}});
  for (size_t i = 0; i < loras.size(); ++i) files[in.size() + i].metadata = loras[i].file.metadata;

  if (opt.mode == Mode::ExtractLora) return extract_lora(opt, in[0], in[1], L, files);

  MergeReport rep;
  for (const auto& l : loras) {
    rep.lora_lines.push_back(lora::applied_report(l.file, l.name));
    rep.lora_modules_applied += l.file.modules.size();
  }
  SafetensorsWriter w;
  for (const ParamView& v : L.views()) {
    w.add_lazy(v.name, dt, v.shape, [&, v]() {
      // One tensor of each input (F32, dequantised when stored low-precision), combined, LoRAs added.
      std::vector<Tensor> t;
      for (const Input& x : in) t.push_back(read_weight_f32(*x.src, v.name, v.shape, "model " + x.role));
      std::vector<float> out(v.numel());
      const double m = bw.multiplier(v.name, opt.multiplier);
      combine(opt.mode, t[0].f32(), t.size() > 1 ? t[1].f32() : nullptr, t.size() > 2 ? t[2].f32() : nullptr, m,
              opt.multiplier2, out.data(), out.size());
      t.clear();
      for (const auto& [mod, wgt] : lora::modules_for(loras, v.name)) lora::add_delta(out.data(), *mod, wgt);
      ++rep.tensors;
      return to_dtype(std::move(out), v.shape, dt);
    });
  }
  std::map<std::string, std::string> md = carried_metadata(in[0]);
  md[kWeightFormatKey] = dtype_format_name(dt);
  for (const auto& [k, v] : union_provenance(files)) md[k] = v;
  md["sd_merge_recipe"] = recipe_json(opt, files).dump();
  md["sd_merge_models"] = merge_models_json(files);
  for (const auto& [k, v] : md) w.set_metadata(k, v);
  w.write(opt.output);
  return rep;
}

}  // namespace oboro::merge
