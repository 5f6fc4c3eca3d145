// oboro info FILE [--json]: what is inside a safetensors checkpoint (single file or sharded).
#include "cli/commands.h"
#include "core/error.h"
#include "data/provenance.h"
#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace oboro::cli {

namespace {

using json = nlohmann::ordered_json;  // keep keys in the order written

std::string thousands(uint64_t v) {
  std::string s = std::to_string(v), r;
  int k = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (k && k % 3 == 0) r += ',';
    r += *it;
    ++k;
  }
  return std::string(r.rbegin(), r.rend());
}

struct InfoArgs {
  std::string file;
  bool json = false;
};

void run_info(const InfoArgs& a) {
  TensorSource src = TensorSource::open(a.file);
  const std::vector<std::string> names = src.names();

  uint64_t params = 0;
  struct Hist { uint64_t tensors = 0, params = 0; };
  std::map<std::string, Hist> hist;
  for (const auto& n : names) {
    const TensorInfo& ti = src.info(n);
    uint64_t ne = (uint64_t)shape_numel(ti.shape);
    params += ne;
    auto& h = hist[dtype_name(ti.dtype)];
    h.tensors++;
    h.params += ne;
  }

  // oboro.config is a JSON string; parse it if it is valid.
  const auto& md = src.metadata();
  json config;  // null
  bool config_bad = false;
  auto cit = md.find("oboro.config");
  if (cit != md.end()) {
    config = json::parse(cit->second, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) { config = nullptr; config_bad = true; }
  }

  // oboro.dataset: what the model was trained on (provenance summary, JSON string).
  bool have_dataset = false, dataset_bad = false;
  DatasetSummary dataset;
  if (auto dit = md.find("oboro.dataset"); dit != md.end()) {
    try {
      dataset = DatasetSummary::from_json(dit->second);
      have_dataset = true;
    } catch (const Error&) {
      dataset_bad = true;
    }
  }

  if (a.json) {
    json out = json::object();
    out["file"] = src.path();
    json ts = json::array();
    for (const auto& n : names) {
      const TensorInfo& ti = src.info(n);
      ts.push_back({{"name", n}, {"dtype", dtype_name(ti.dtype)}, {"shape", ti.shape}});
    }
    out["tensors"] = std::move(ts);
    out["parameters"] = params;
    out["metadata"] = md;
    out["config"] = config;
    out["dataset"] = have_dataset ? json::parse(dataset.to_json()) : json(nullptr);
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return;
  }

  std::cout << "file: " << src.path() << "\n";
  if (src.files().size() > 1) std::cout << "shards: " << src.files().size() << "\n";
  std::cout << "tensors: " << names.size() << "\n";
  if (!names.empty()) {
    size_t wn = 4, wd = 5;
    for (const auto& n : names) {
      wn = std::max(wn, n.size());
      wd = std::max(wd, std::string(dtype_name(src.info(n).dtype)).size());
    }
    wn = std::min<size_t>(wn, 80);
    auto pad = [](const std::string& s, size_t w) { return s.size() >= w ? s : s + std::string(w - s.size(), ' '); };
    std::cout << "  " << pad("name", wn) << "  " << pad("dtype", wd) << "  shape\n";
    for (const auto& n : names) {
      const TensorInfo& ti = src.info(n);
      std::cout << "  " << pad(n, wn) << "  " << pad(dtype_name(ti.dtype), wd) << "  " << shape_str(ti.shape) << "\n";
    }
  }
  std::cout << "parameters: " << thousands(params) << "\n";
  if (!hist.empty()) {
    std::cout << "dtypes:\n";
    for (const auto& [d, h] : hist)
      std::cout << "  " << d << ": " << h.tensors << (h.tensors == 1 ? " tensor, " : " tensors, ") << thousands(h.params)
                << " parameters\n";
  }
  bool any_md = false;
  for (const auto& [k, v] : md) {
    if (k == "oboro.config" && !config_bad) continue;
    if (k == "oboro.dataset" && have_dataset) continue;
    if (!any_md) std::cout << "metadata:\n";
    any_md = true;
    std::string shown = v.size() > 400 ? v.substr(0, 400) + str("... (", v.size(), " chars)") : v;
    std::cout << "  " << k << ": " << shown << "\n";
  }
  if (!any_md) std::cout << "metadata: (none)\n";
  if (!config.is_null()) {
    std::string text = config.dump(2, ' ', false, json::error_handler_t::replace);
    std::cout << "config:\n";
    for (size_t pos = 0; pos <= text.size();) {
      size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) nl = text.size();
      std::cout << "  " << text.substr(pos, nl - pos) << "\n";
      pos = nl + 1;
    }
  }
  else if (config_bad) std::cout << "config: (oboro.config is not valid JSON; shown raw under metadata)\n";
  if (have_dataset) {
    std::cout << "dataset: " << thousands(dataset.images) << (dataset.images == 1 ? " image" : " images") << ", digest "
              << dataset.digest << "\n";
    std::cout << "  licences:\n";
    for (const auto& [l, n] : dataset.licenses) std::cout << "    " << l << ": " << thousands(n) << "\n";
    std::cout << "  sources:\n";
    for (const auto& [src_name, n] : dataset.sources) std::cout << "    " << src_name << ": " << thousands(n) << "\n";
    std::cout << "  attribution:\n";
    for (const auto& line : dataset.attribution) std::cout << "    " << line << "\n";
  } else if (dataset_bad) {
    std::cout << "dataset: (oboro.dataset is not a valid provenance summary; shown raw under metadata)\n";
  }
}

}  // namespace

void register_info(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* sub = app.add_subcommand("info", "Show the tensors, parameter count and metadata of a safetensors checkpoint");
  sub->add_option("file", args->file, "A .safetensors file, a *.safetensors.index.json, or a directory holding one")
      ->required();
  sub->add_flag("--json", args->json, "Print one JSON object instead of a table");
  sub->callback([args] { run_info(*args); });
}

}  // namespace oboro::cli
