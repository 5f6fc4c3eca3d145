// DiT configuration (spec §5, §9): stored as JSON in the model file's `oboro.config` metadata.
#pragma once
#include "models/params.h"
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace oboro {

struct DiTConfig {
  int hidden_size = 0;          // D
  std::vector<int> heads;       // one entry per layer (MMH schedule or uniform)
  int ffn_hidden_size = 0;      // F
  int text_dim = 0;             // d_text
  int latent_channels = 16;
  int patch_size = 2;
  int cond_size = 0;            // C; 0 = min(D, 1024)
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  std::string codec = "flux-vae";
  float icfm_sigma = 1e-4f;
  nlohmann::json extra = nlohmann::json::object();  // unknown fields, kept and written back

  int layers() const { return (int)heads.size(); }
  int cond() const { return cond_size > 0 ? cond_size : (hidden_size < 1024 ? hidden_size : 1024); }
  int features() const { return latent_channels * patch_size * patch_size; }
  int64_t param_count() const;

  // `where` names the source (file path) in error messages.
  static DiTConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;
  void validate(const std::string& where) const;

  // Presets of §5: "oboro-1b", "small", "tiny"; `schedule` "mmh" (8/16/24/48 in 4 stages) or "uniform".
  static DiTConfig preset(const std::string& name, int text_dim = 4096, const std::string& schedule = "mmh");
  static std::vector<int> mmh_heads(int n_layers);
  static int ffn_rule(int D, int multiple_of);  // round_up(int(2·4D/3), multiple_of)
};

ParamLayout dit_param_layout(const DiTConfig& cfg);

}  // namespace oboro
