#include "flow/lora_apply.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include "models/params.h"
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace oboro {

namespace {
// Text a user gave, as an error message shows it: one line (control characters such as a prompt's newline as '?'),
// at most `max` bytes.
std::string shown(const std::string& text, size_t max = 60) {
  std::string t = text.size() > max ? text.substr(0, max - 3) + "..." : text;
  for (char& c : t)
    if ((unsigned char)c < 0x20 || c == 0x7f) c = '?';
  return t;
}
}  // namespace


namespace fs = std::filesystem;

namespace {

bool parse_float(const std::string& s, float& out) {
  if (s.empty()) return false;
  try {
    size_t pos = 0;
    const float v = std::stof(s, &pos);
    if (pos != s.size() || !std::isfinite(v)) return false;
    out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

ParamLayout model_layout(const std::string& model_path) {
  TensorSource src = TensorSource::open(model_path);
  auto it = src.metadata().find("oboro.config");
  if (it == src.metadata().end()) fail(model_path, ": no 'oboro.config' metadata: not an oboro DiT file");
  const auto j = nlohmann::json::parse(it->second, nullptr, false);
  if (j.is_discarded()) fail(model_path, ": 'oboro.config' metadata is not valid JSON");
  return dit_param_layout(DiTConfig::from_json(j, model_path));
}

std::string display_name(const LoraRequest& r) {
  if (r.from_prompt) return r.spec;
  return fs::path(r.spec).stem().string();
}

}  // namespace

LoraRequest parse_lora_arg(const std::string& arg) {
  LoraRequest r;
  r.spec = arg;
  const size_t c = arg.rfind(':');
  if (c != std::string::npos && c > 0) {
    float w;
    if (parse_float(arg.substr(c + 1), w)) {
      r.spec = arg.substr(0, c);
      r.weight = w;
    }
  }
  if (r.spec.empty()) fail("--lora ", shown(arg, 4096), ": no file: pass --lora FILE[:WEIGHT], e.g. --lora style.safetensors:0.8");
  return r;
}

std::string strip_prompt_loras(const std::string& prompt, std::vector<LoraRequest>& found) {
  std::string out;
  size_t i = 0;
  while (i < prompt.size()) {
    const size_t b = prompt.find("<lora:", i);
    if (b == std::string::npos) {
      out += prompt.substr(i);
      break;
    }
    const size_t e = prompt.find('>', b);
    if (e == std::string::npos)
      fail("prompt: ", shown(prompt.substr(b, 40)), " is not closed: write <lora:NAME:WEIGHT>");
    out += prompt.substr(i, b - i);
    const std::string tag = prompt.substr(b, e - b + 1);
    std::vector<std::string> parts;
    std::string body = prompt.substr(b + 6, e - b - 6);
    for (size_t s = 0;;) {
      const size_t c = body.find(':', s);
      parts.push_back(body.substr(s, c == std::string::npos ? std::string::npos : c - s));
      if (c == std::string::npos) break;
      s = c + 1;
    }
    LoraRequest r;
    r.from_prompt = true;
    r.spec = parts[0];
    if (r.spec.empty()) fail("prompt: ", shown(tag), " names no LoRA: write <lora:NAME:WEIGHT>");
    if (parts.size() > 3) fail("prompt: ", shown(tag), " has too many fields: write <lora:NAME:WEIGHT>");
    for (size_t k = 1; k < parts.size(); ++k) {
      // A1111: <lora:name:te:unet> (named te=/unet= too); the DiT weight is unet when given, else te.
      std::string v = parts[k];
      if (v.rfind("te=", 0) == 0) v = v.substr(3);
      else if (v.rfind("unet=", 0) == 0) v = v.substr(5);
      float w;
      if (!parse_float(v, w)) fail("prompt: ", shown(tag), ": ", shown(parts[k]), " is not a number: write <lora:NAME:WEIGHT>");
      r.weight = w;
    }
    found.push_back(r);
    i = e + 1;
  }
  return out;
}

std::string lora_dir_or_default(const std::string& flag, const std::string& models_dir) {
  if (!flag.empty()) return flag;
  std::error_code ec;
  if (!models_dir.empty() && fs::is_directory(fs::path(models_dir) / "loras", ec))
    return (fs::path(models_dir) / "loras").string();
  return "models/loras";
}

std::string locate_lora(const LoraRequest& r, const std::string& lora_dir) {
  std::error_code ec;
  std::vector<fs::path> tried;
  if (!r.from_prompt) tried.push_back(r.spec);
  if (r.spec.find('/') == std::string::npos) {
    tried.push_back(fs::path(lora_dir) / (r.spec + ".safetensors"));
    tried.push_back(fs::path(lora_dir) / r.spec);
  }
  for (const auto& p : tried)
    if (fs::is_regular_file(p, ec)) return p.string();
  std::string list;
  for (const auto& p : tried) list += (list.empty() ? "" : ", ") + fs::absolute(p, ec).string();
  fail(shown(r.from_prompt ? "<lora:" + r.spec + ">" : "--lora " + r.spec, 4096), ": no such LoRA file (looked at ", list,
       "): check the name, or pass --lora-dir DIR with the folder that holds NAME.safetensors");
}

std::vector<LoraListing> list_loras(const std::string& dir) {
  std::vector<LoraListing> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec) || e.path().extension() != ".safetensors") continue;
    LoraListing l;
    l.name = e.path().stem().string();
    l.path = e.path().string();
    try {
      l.metadata = SafetensorsFile::open(l.path)->metadata();
    } catch (const Error&) {
      continue;  // not a readable safetensors file: not offered
    }
    out.push_back(std::move(l));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::string LoraSet::key() const {
  std::string k;
  for (size_t i = 0; i < loras.size(); ++i) k += paths[i] + "@" + str(loras[i].weight) + ";";
  return k;
}

std::string LoraSet::infotext_hashes() const {
  std::string s;
  for (size_t i = 0; i < loras.size(); ++i) {
    std::string name;
    for (char c : loras[i].name)
      if (c != ':' && c != ',') name += c;
    s += (s.empty() ? "" : ", ") + name + ": " + lora::lora_short_hash(paths[i]);
  }
  return s;
}

std::string LoraSet::report() const {
  std::string s;
  for (const auto& l : loras) s += lora::applied_report(l.file, l.name);
  return s;
}

LoraSet read_lora_set(const std::vector<LoraRequest>& reqs, const std::string& lora_dir, const std::string& model_path) {
  LoraSet set;
  if (reqs.empty()) return set;
  const lora::LoraKeyMap map = lora::LoraKeyMap::from_layout(model_layout(model_path));
  for (const LoraRequest& r : reqs) {
    const std::string path = locate_lora(r, lora_dir);
    lora::WeightedLora w;
    w.file = lora::read_lora(path, map);
    w.weight = r.weight;
    w.name = display_name(r);
    set.loras.push_back(std::move(w));
    set.paths.push_back(path);
  }
  return set;
}

void apply_loras_f32(DiT& dit, const LoraSet& set) {
  if (dit.weight_format() != WFormat::F32) fail("internal error: apply_loras_f32 on a low-precision DiT");
  Backend& be = dit.backend();
  std::vector<float> host;
  for (const ParamView& v : dit.layout().views()) {
    const auto mods = lora::modules_for(set.loras, v.name);
    if (mods.empty()) continue;
    host.resize(v.numel());
    be.download(host.data(), dit.params() + v.offset, host.size());  // W (N,K)
    for (const auto& [m, w] : mods) lora::add_delta(host.data(), *m, w);
    be.upload(dit.params() + v.offset, host.data(), host.size());
  }
}

std::unique_ptr<DiT> load_dit_with_loras(const std::string& path, Backend& be, std::optional<WFormat> type,
                                         const LoraSet& set) {
  if (set.empty()) return DiT::load(path, be, type);
  const WFormat fmt = type ? *type : file_weight_format(TensorSource::open(path));
  auto dit = DiT::load(path, be, WFormat::F32);
  apply_loras_f32(*dit, set);
  if (fmt == WFormat::F32) return dit;
  return dit->converted(fmt);
}

}  // namespace oboro
