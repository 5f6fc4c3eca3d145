#include "models/convert_weights.h"
#include "core/base64.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include "models/params.h"
#include "models/t5.h"
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace oboro {

void refuse_output_over_input(const std::string& in, const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  // The same file by file-system identity (hard links, "./m" vs "m", symlinks), or a shard of the input checkpoint
  // (a sharded index or HF folder: a .safetensors file there that an index names).
  bool same = fs::equivalent(in, out, ec);
  if (!same && (fs::is_directory(in, ec) || fs::path(in).extension() == ".json")) {
    const fs::path dir = fs::is_directory(in, ec) ? fs::path(in) : fs::path(in).parent_path();
    std::string index;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().string().size() > 11 && e.path().string().ends_with(".index.json")) {
        std::ifstream f(e.path(), std::ios::binary);
        index += std::string(std::istreambuf_iterator<char>(f), {});
      }
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".safetensors" && index.find(e.path().filename().string()) != std::string::npos &&
          fs::equivalent(e.path(), out, ec))
        same = true;
  }
  if (same)
    fail(out, ": is the input (", in, "): convert writes a new file and never replaces its input; choose another "
              "output name");
}

ConvertStats convert_weights(const std::string& in, const std::string& out, WFormat fmt) {
  namespace fs = std::filesystem;
  refuse_output_over_input(in, out);
  TensorSource src = TensorSource::open(in);
  std::map<std::string, std::string> md = src.metadata();
  ConvertStats st;
  const bool dit = md.count("oboro.config") > 0;
  const bool t5 = !dit && (md.count("oboro.t5_config") || src.has("shared.weight") || src.has("encoder.embed_tokens.weight"));
  if (!dit && !t5)
    fail(in, ": not an oboro DiT file (no 'oboro.config' metadata) nor a T5 encoder checkpoint (no shared.weight): "
             "convert --type handles those two");
  st.kind = dit ? "dit" : "t5";
  if (t5) {
    if (!md.count("oboro.t5_config")) md["oboro.t5_config"] = T5Config::infer(src).to_json().dump();
    md.erase("format");  // HF's {"format": "pt"} says nothing about the new file
    if (!md.count("oboro.tokenizer")) {
      fs::path dir = fs::is_directory(in) ? fs::path(in) : fs::path(in).parent_path();
      fs::path sp = dir / "spiece.model";
      if (fs::exists(sp)) {
        std::ifstream f(sp, std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        md["oboro.tokenizer"] = base64_encode(ss.str());
      }
    }
  }
  auto quantizable = [&](const std::string& n) { return dit ? dit_quantizable(n) : t5_quantizable(n); };
  auto is_companion = [&](const std::string& n) {
    return n.size() > 6 && n.compare(n.size() - 6, 6, "_scale") == 0 && src.has(n.substr(0, n.size() - 6));
  };
  std::deque<Tensor> keep;
  SafetensorsWriter wr;
  auto add = [&](const std::string& name, Tensor t) {
    keep.push_back(std::move(t));
    wr.add(name, keep.back());
    st.bytes_out += keep.back().nbytes();
  };
  for (const std::string& name0 : src.names()) {
    std::string name = name0;
    if (is_companion(name)) continue;  // rewritten with its weight
    if (t5) {
      if (name.rfind("decoder.", 0) == 0 || name.rfind("lm_head.", 0) == 0) continue;
      if (name == "encoder.embed_tokens.weight") {
        if (src.has("shared.weight")) continue;
        name = "shared.weight";
      }
    }
    const TensorInfo& info = src.info(name0);
    if (quantizable(name) && info.shape.size() == 2 && fmt != WFormat::F32) {
      QuantizedWeight q = load_weight(src, name0, info.shape, fmt, "convert");
      add(name, q.data);
      if (q.scale.defined() && q.scale.numel() && fmt != WFormat::BF16 && fmt != WFormat::F16)
        add(scale_companion(name), q.scale);
      ++st.quantized;
    } else {
      add(name, read_weight_f32(src, name0, info.shape, "convert"));
      ++st.kept_f32;
    }
  }
  for (const auto& [k, v] : md) wr.set_metadata(k, v);
  wr.set_metadata(kWeightFormatKey, wformat_name(fmt));
  wr.write(out);
  return st;
}

}  // namespace oboro
