#include "merge/merge_metadata.h"
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

namespace oboro::merge {

using json = nlohmann::json;

std::map<std::string, std::string> union_provenance(const std::vector<InputFile>& inputs) {
  json all = json::array();
  std::set<std::string> digests;
  auto add = [&](const json& entry) {
    if (!entry.is_object() || !entry.contains("dataset") || !entry["dataset"].is_object()) return;
    const json& d = entry["dataset"];
    const std::string digest = d.contains("digest") && d["digest"].is_string() ? d["digest"].get<std::string>() : "";
    if (!digests.insert(digest).second) return;
    all.push_back(entry);
  };
  for (const InputFile& in : inputs) {
    const std::string name = std::filesystem::path(in.path).stem().string();
    if (auto it = in.metadata.find("oboro.dataset"); it != in.metadata.end()) {
      const json d = json::parse(it->second, nullptr, false);
      if (!d.is_discarded()) add({{"model", name}, {"sha256", in.sha256}, {"dataset", d}});
    }
    if (auto it = in.metadata.find(kDatasetsKey); it != in.metadata.end()) {
      const json arr = json::parse(it->second, nullptr, false);
      if (arr.is_array())
        for (const json& e : arr) add(e);
    }
  }
  std::map<std::string, std::string> md;
  if (all.empty()) return md;
  md[kDatasetsKey] = all.dump();
  if (all.size() == 1) md["oboro.dataset"] = all[0]["dataset"].dump();
  return md;
}

std::string merge_models_json(const std::vector<InputFile>& inputs) {
  json models = json::object();
  for (const InputFile& in : inputs) {
    json e = {{"name", std::filesystem::path(in.path).stem().string()}, {"role", in.role}};
    if (auto it = in.metadata.find("sd_merge_recipe"); it != in.metadata.end()) {
      const json r = json::parse(it->second, nullptr, false);
      e["sd_merge_recipe"] = r.is_discarded() ? json(it->second) : r;
    } else {
      e["sd_merge_recipe"] = nullptr;
    }
    models[in.sha256] = e;
    if (auto it = in.metadata.find("sd_merge_models"); it != in.metadata.end()) {
      const json inner = json::parse(it->second, nullptr, false);
      if (inner.is_object())
        for (const auto& [k, v] : inner.items())
          if (!models.contains(k)) models[k] = v;
    }
  }
  return models.dump();
}

}  // namespace oboro::merge
