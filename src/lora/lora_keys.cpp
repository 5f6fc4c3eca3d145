#include "lora/lora_keys.h"
#include "core/error.h"
#include "models/params.h"

namespace oboro::lora {

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
bool starts_with(const std::string& s, const std::string& pre) { return s.compare(0, pre.size(), pre) == 0; }

const char* const kPeftPrefixes[] = {"transformer.", "diffusion_model."};
}  // namespace

std::string module_of(const std::string& tensor) {
  if (!ends_with(tensor, ".weight") || tensor.size() <= 7)
    fail("internal error: LoRA target ", tensor, " is not a tensor name ending in .weight");
  return tensor.substr(0, tensor.size() - 7);
}

std::string kohya_stem(const std::string& tensor) {
  std::string m = module_of(tensor);
  for (char& c : m)
    if (c == '.') c = '_';
  return kKohyaPrefix + m;
}

std::string kohya_key(const std::string& tensor, KeyPart part) {
  const std::string s = kohya_stem(tensor);
  switch (part) {
    case KeyPart::Down: return s + ".lora_down.weight";
    case KeyPart::Up: return s + ".lora_up.weight";
    case KeyPart::Alpha: return s + ".alpha";
  }
  return s;
}

std::string peft_key(const std::string& tensor, KeyPart part, const std::string& prefix) {
  if (part == KeyPart::Alpha) fail("internal error: the PEFT layout has no alpha key (its scale is 1)");
  return prefix + module_of(tensor) + (part == KeyPart::Down ? ".lora_A.weight" : ".lora_B.weight");
}

std::optional<ParsedKey> parse_key(const std::string& key) {
  if (starts_with(key, kKohyaPrefix)) {
    static const std::pair<const char*, KeyPart> suf[] = {
        {".lora_down.weight", KeyPart::Down}, {".lora_up.weight", KeyPart::Up}, {".alpha", KeyPart::Alpha}};
    for (const auto& [s, p] : suf)
      if (ends_with(key, s) && key.size() > std::string(s).size() + std::string(kKohyaPrefix).size())
        return ParsedKey{KeyLayout::Kohya, key.substr(0, key.size() - std::string(s).size()), p};
    return std::nullopt;
  }
  static const std::pair<const char*, KeyPart> suf[] = {{".lora_A.weight", KeyPart::Down},
                                                        {".lora_B.weight", KeyPart::Up}};
  for (const auto& [s, p] : suf) {
    if (!ends_with(key, s)) continue;
    std::string m = key.substr(0, key.size() - std::string(s).size());
    for (const char* pre : kPeftPrefixes)
      if (starts_with(m, pre)) {
        m = m.substr(std::string(pre).size());
        break;
      }
    if (m.empty()) return std::nullopt;
    return ParsedKey{KeyLayout::Peft, m, p};
  }
  return std::nullopt;
}

TensorPlace place_of(const std::string& t) {
  TensorPlace p;
  if (starts_with(t, "final_layer.")) return p.family = Family::Final, p;
  for (const char* e : {"t_embedder.", "bos_embedder.", "cap_embedder.", "x_embedder."})
    if (starts_with(t, e)) return p.family = Family::Embedder, p;
  if (!starts_with(t, "layers.")) return p;
  size_t e = 7;
  while (e < t.size() && t[e] >= '0' && t[e] <= '9') ++e;
  if (e == 7 || e >= t.size() || t[e] != '.') return p;
  p.block = std::stoi(t.substr(7, e - 7));
  const std::string rest = t.substr(e + 1);
  if (starts_with(rest, "attention.")) p.family = Family::Attention;
  else if (starts_with(rest, "feed_forward.")) p.family = Family::FeedForward;
  else if (starts_with(rest, "adaLN_modulation.")) p.family = Family::Modulation;
  return p;
}

const char* family_name(Family f) {
  switch (f) {
    case Family::Embedder: return "embedder";
    case Family::Attention: return "attention";
    case Family::FeedForward: return "feed_forward";
    case Family::Modulation: return "modulation";
    case Family::Final: return "final";
    case Family::Other: return "other";
  }
  return "other";
}

LoraKeyMap::LoraKeyMap(const std::vector<Target>& all) {
  for (const Target& t : all) {
    if (t.shape.size() != 2 || !ends_with(t.tensor, ".weight") || t.tensor.size() <= 7) continue;
    const size_t i = targets_.size();
    targets_.push_back(t);
    if (!by_kohya_.emplace(kohya_stem(t.tensor), i).second)
      fail("internal error: two model tensors share the kohya LoRA key ", kohya_stem(t.tensor),
           " (the second is ", t.tensor, ")");
    by_module_.emplace(module_of(t.tensor), i);
    by_tensor_.emplace(t.tensor, i);
  }
}

LoraKeyMap LoraKeyMap::from_layout(const ParamLayout& layout) {
  std::vector<Target> all;
  for (const ParamView& v : layout.views()) all.push_back({v.name, v.shape});
  return LoraKeyMap(all);
}

const Target* LoraKeyMap::find(const ParsedKey& k) const {
  const auto& m = k.layout == KeyLayout::Kohya ? by_kohya_ : by_module_;
  auto it = m.find(k.module);
  return it == m.end() ? nullptr : &targets_[it->second];
}

const Target* LoraKeyMap::find_tensor(const std::string& tensor) const {
  auto it = by_tensor_.find(tensor);
  return it == by_tensor_.end() ? nullptr : &targets_[it->second];
}

}  // namespace oboro::lora
