#include "serve/models.h"
#include "core/error.h"
#include "io/file_hash.h"
#include "serve/request.h"
#include <algorithm>
#include <filesystem>

namespace oboro::serve {

namespace fs = std::filesystem;
using nlohmann::json;

ModelCatalog::ModelCatalog(const std::string& start_model, const std::string& models_dir) : models_dir_(models_dir) {
  if (!fs::is_regular_file(start_model)) fail(start_model, ": no such model file (--model)");
  start_.path = fs::absolute(start_model).lexically_normal().string();
  start_.name = fs::path(start_model).stem().string();
  current_ = start_.name;
}

std::vector<ModelEntry> ModelCatalog::list() const {
  std::vector<ModelEntry> v = {start_}, more;
  std::error_code ec;
  if (!models_dir_.empty())
    for (auto& e : fs::directory_iterator(fs::path(models_dir_) / "diffusion_models", ec)) {
      if (!e.is_regular_file() || e.path().extension() != ".safetensors") continue;
      ModelEntry m{e.path().stem().string(), fs::absolute(e.path()).lexically_normal().string()};
      if (m.name != start_.name) more.push_back(m);
    }
  std::sort(more.begin(), more.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.name < b.name; });
  v.insert(v.end(), more.begin(), more.end());
  return v;
}

ModelEntry ModelCatalog::find(const std::string& name) const {
  for (const auto& m : list())
    if (m.name == name) return m;
  throw RequestError(404, "model", "model '" + name + "' is not known: GET /sdapi/v1/sd-models lists the models");
}

ModelEntry ModelCatalog::current() const {
  std::string name;
  {
    std::lock_guard<std::mutex> lock(mu_);
    name = current_;
  }
  try {
    return find(name);
  } catch (const RequestError&) {
    return start_;  // the file was removed from models-dir
  }
}

void ModelCatalog::set_current(const std::string& name) {
  find(name);
  std::lock_guard<std::mutex> lock(mu_);
  current_ = name;
}

std::string ModelCatalog::hash10(const std::string& path) {
  try {
    return sha256_file_cached(path).substr(0, 10);
  } catch (const Error&) {
    return "";
  }
}

json ModelCatalog::a1111_list() const {
  json out = json::array();
  for (const auto& m : list()) {
    std::string sha;
    try {
      sha = sha256_file_cached(m.path);
    } catch (const Error&) {
    }
    const std::string h = sha.substr(0, std::min<size_t>(10, sha.size()));
    out.push_back({{"title", h.empty() ? m.name : m.name + " [" + h + "]"}, {"model_name", m.name}, {"hash", h},
                   {"sha256", sha}, {"filename", fs::path(m.path).filename().string()}, {"config", nullptr}});
  }
  return out;
}

}  // namespace oboro::serve
