#include "models/dit_config.h"
#include "core/error.h"
#include <algorithm>

namespace oboro {

using nlohmann::json;

int DiTConfig::ffn_rule(int D, int multiple_of) {
  int f = (int)(2.0 * 4 * D / 3);
  return (f + multiple_of - 1) / multiple_of * multiple_of;
}

std::vector<int> DiTConfig::mmh_heads(int n) {
  if (n <= 0 || n % 4) fail("the MMH head schedule needs a layer count divisible by 4, got ", n);
  std::vector<int> h;
  const int stage[4] = {8, 16, 24, 48};
  for (int s = 0; s < 4; ++s)
    for (int i = 0; i < n / 4; ++i) h.push_back(stage[s]);
  return h;
}

DiTConfig DiTConfig::preset(const std::string& name, int text_dim, const std::string& schedule) {
  DiTConfig c;
  int layers;
  if (name == "oboro-1b") { c.hidden_size = 1536; layers = 32; c.ffn_hidden_size = ffn_rule(1536, 256); }
  else if (name == "small") { c.hidden_size = 384; layers = 8; c.ffn_hidden_size = ffn_rule(384, 256); }
  else if (name == "tiny") { c.hidden_size = 192; layers = 4; c.ffn_hidden_size = ffn_rule(192, 32); }
  else fail("unknown model preset '", name, "': choose oboro-1b, small or tiny");
  if (schedule == "mmh") c.heads = mmh_heads(layers);
  else if (schedule == "uniform") c.heads.assign(layers, std::max(1, c.hidden_size / 64));  // head dim 64 everywhere: the baseline
  else fail("unknown head schedule '", schedule, "': choose mmh or uniform");
  c.text_dim = text_dim;
  c.extra["name"] = name;
  return c;
}

static int get_int(const json& j, const char* key, const std::string& where, bool required, int def) {
  if (!j.contains(key)) {
    if (required) fail(where, ": oboro.config is missing the required field '", key, "'");
    return def;
  }
  if (!j[key].is_number_integer()) fail(where, ": oboro.config field '", key, "' must be an integer, got ", j[key].dump());
  return j[key].get<int>();
}

static float get_float(const json& j, const char* key, const std::string& where, float def) {
  if (!j.contains(key)) return def;
  if (!j[key].is_number()) fail(where, ": oboro.config field '", key, "' must be a number, got ", j[key].dump());
  return j[key].get<float>();
}

DiTConfig DiTConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": oboro.config must be a JSON object");
  DiTConfig c;
  c.hidden_size = get_int(j, "hidden_size", where, true, 0);
  if (!j.contains("heads")) fail(where, ": oboro.config is missing the required field 'heads'");
  if (!j["heads"].is_array()) fail(where, ": oboro.config field 'heads' must be a list of integers, one per layer");
  for (const auto& h : j["heads"]) {
    if (!h.is_number_integer()) fail(where, ": oboro.config field 'heads' must hold integers, got ", h.dump());
    c.heads.push_back(h.get<int>());
  }
  c.ffn_hidden_size = get_int(j, "ffn_hidden_size", where, true, 0);
  c.text_dim = get_int(j, "text_dim", where, true, 0);
  c.latent_channels = get_int(j, "latent_channels", where, true, 0);
  c.patch_size = get_int(j, "patch_size", where, true, 0);
  c.cond_size = get_int(j, "cond_size", where, false, 0);
  c.norm_eps = get_float(j, "norm_eps", where, 1e-5f);
  c.rope_theta = get_float(j, "rope_theta", where, 10000.f);
  c.icfm_sigma = get_float(j, "icfm_sigma", where, 1e-4f);
  if (j.contains("codec")) {
    if (!j["codec"].is_string()) fail(where, ": oboro.config field 'codec' must be a string");
    c.codec = j["codec"].get<std::string>();
  }
  static const char* known[] = {"hidden_size", "heads", "ffn_hidden_size", "text_dim", "latent_channels", "patch_size",
                                "cond_size", "norm_eps", "rope_theta", "codec", "icfm_sigma"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return it.key() == k; }) == std::end(known))
      c.extra[it.key()] = it.value();
  c.validate(where);
  return c;
}

json DiTConfig::to_json() const {
  json j = extra;
  j["hidden_size"] = hidden_size;
  j["heads"] = heads;
  j["ffn_hidden_size"] = ffn_hidden_size;
  j["text_dim"] = text_dim;
  j["latent_channels"] = latent_channels;
  j["patch_size"] = patch_size;
  j["cond_size"] = cond();
  j["norm_eps"] = norm_eps;
  j["rope_theta"] = rope_theta;
  j["codec"] = codec;
  j["icfm_sigma"] = icfm_sigma;
  return j;
}

void DiTConfig::validate(const std::string& where) const {
  auto bad = [&](const auto&... a) { fail(where, ": invalid oboro.config: ", a...); };
  if (hidden_size <= 0) bad("hidden_size must be positive, got ", hidden_size);
  if (heads.empty()) bad("'heads' is empty: give one head count per layer");
  int mx = 0;
  for (size_t i = 0; i < heads.size(); ++i) {
    if (heads[i] <= 0) bad("heads[", i, "] = ", heads[i], " must be positive");
    mx = std::max(mx, heads[i]);
  }
  if (hidden_size % (4 * mx))
    bad("hidden_size ", hidden_size, " is not divisible by 4·max(heads) = ", 4 * mx,
        " (every head dim must be a multiple of 4 for 2D RoPE): change hidden_size or the head counts");
  if (ffn_hidden_size <= 0) bad("ffn_hidden_size must be positive, got ", ffn_hidden_size);
  if (text_dim <= 0) bad("text_dim must be positive, got ", text_dim);
  if (latent_channels <= 0) bad("latent_channels must be positive, got ", latent_channels);
  if (patch_size <= 0) bad("patch_size must be positive, got ", patch_size);
  if (cond_size < 0) bad("cond_size must be positive, got ", cond_size);
  if (!(norm_eps > 0)) bad("norm_eps must be positive");
  if (!(rope_theta > 1)) bad("rope_theta must be > 1");
}

// dit_param_layout (declared in dit_config.h) is defined in dit.cpp, from the DiT's tensor table.

int64_t DiTConfig::param_count() const {
  int64_t n = 0;
  const ParamLayout layout = dit_param_layout(*this);  // keep alive: views() returns a reference
  for (const auto& v : layout.views()) n += (int64_t)v.numel();
  return n;
}

}  // namespace oboro
