// The models a server offers: the one it started with (`--model`, or the bundled default) and every
// `.safetensors` DiT in `<models-dir>/diffusion_models`. Clients name models by their bare name (A1111's
// `sd_model_checkpoint`, OpenAI's `model`); a name is only ever matched against this list, so no client string
// becomes a path.
#pragma once
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace oboro::serve {

struct ModelEntry {
  std::string name;   // file stem: "oboro-default"
  std::string path;   // absolute
};

class ModelCatalog {
 public:
  ModelCatalog(const std::string& start_model, const std::string& models_dir);
  std::vector<ModelEntry> list() const;  // the start model first, then models-dir's, by name (rescanned)
  // The entry of a client's name (already cleaned by clean_model_name): RequestError(404) when unknown.
  ModelEntry find(const std::string& name) const;
  ModelEntry current() const;
  void set_current(const std::string& name);  // RequestError(404) when unknown
  // A1111 sd-models entries: title "name [hash10]", model_name, hash, sha256, filename, config.
  nlohmann::json a1111_list() const;
  static std::string hash10(const std::string& path);  // first 10 hex digits of the SHA-256 (cached)

 private:
  ModelEntry start_;
  std::string models_dir_;
  mutable std::mutex mu_;
  std::string current_;
};

}  // namespace oboro::serve
