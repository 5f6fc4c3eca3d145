#include "train/train_config.h"
#include "core/error.h"
#include "data/sql_db.h"
#include "flow/flow.h"
#include "flow/infotext.h"
#include "train/optim.h"
#include <nlohmann/json.hpp>
#include <cmath>
#include <limits>
#include <toml++/toml.h>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <type_traits>
#include <variant>

namespace oboro {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------- the field table

// TOML `resolution` = N or "W,H": sets width and height (the JSON holds "width" and "height" instead).
struct Resolution {};

// A field's kind is the type of its member: std::string → string, int/int64_t/uint64_t/float/double → number
// (TOML integer or float, cast to the member's type), bool → bool, std::vector<std::string> → array of
// non-empty strings, Resolution → resolution.
using Member = std::variant<std::string TrainConfig::*, int TrainConfig::*, int64_t TrainConfig::*,
                            uint64_t TrainConfig::*, float TrainConfig::*, double TrainConfig::*, bool TrainConfig::*,
                            std::vector<std::string> TrainConfig::*, Resolution>;

enum Use : unsigned {
  kToml = 1,  // read from the TOML file
  kJson = 2,  // written by to_json() (checkpoints, model metadata) and read by from_json()
  kPath = 4,  // a path: taken relative to the TOML file's folder
};

// The valid values of a numeric setting: [lo, hi], with `open` bit 1 making lo exclusive and bit 2 hi exclusive.
// Checked on every number the TOML gives (and by validate(), for settings that came another way); the message names
// the key, the range and what it means.
enum Open : unsigned { kClosed = 0, kOpenLo = 1, kOpenHi = 2 };
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Field {
  const char* key;
  Member member;
  unsigned use;
  double lo = -kInf, hi = kInf;
  unsigned open = kClosed;
  const char* meaning = "";
};

#define OBORO_FIELD(name, use) Field{#name, &TrainConfig::name, use}
#define OBORO_FIELD_R(name, use, lo, hi, open, meaning) Field{#name, &TrainConfig::name, use, lo, hi, open, meaning}

// In the order the TOML reader checks them (the first bad key is the one reported).
// `progress` is API/CLI only and has no row.
const Field kFields[] = {
    OBORO_FIELD(pretrained_model, kToml | kJson | kPath),
    OBORO_FIELD(model_preset, kToml | kJson),
    OBORO_FIELD(head_schedule, kToml | kJson),
    OBORO_FIELD_R(hidden_size, kToml | kJson, 0, 65536, kClosed, " (0 = the preset's)"),
    OBORO_FIELD_R(num_layers, kToml | kJson, 0, 1024, kClosed, " (0 = the preset's)"),
    OBORO_FIELD_R(ffn_hidden_size, kToml | kJson, 0, 262144, kClosed, " (0 = the preset's)"),
    OBORO_FIELD(codec, kToml | kJson),
    OBORO_FIELD(vae, kToml | kJson | kPath),
    OBORO_FIELD_R(pixels_stride, kToml | kJson, 1, 64, kClosed, ""),
    OBORO_FIELD_R(patch_size, kToml | kJson, 1, 64, kClosed, ""),
    OBORO_FIELD(network_module, kToml | kJson),
    OBORO_FIELD_R(network_dim, kToml | kJson, 1, 65536, kClosed, " (the LoRA rank)"),
    OBORO_FIELD_R(network_alpha, kToml | kJson, 0, 1e6, kClosed, " (0 = network_dim)"),
    OBORO_FIELD(network_args, kToml | kJson),
    OBORO_FIELD(network_weights, kToml | kJson | kPath),
    OBORO_FIELD(text_encoder, kToml | kJson | kPath),
    OBORO_FIELD(train_text_encoder, kToml | kJson),
    OBORO_FIELD_R(vocab_size, kToml | kJson, 2, 1048576, kClosed, ""),
    OBORO_FIELD_R(t5_d_model, kToml | kJson, 1, 65536, kClosed, ""),
    OBORO_FIELD_R(t5_layers, kToml | kJson, 1, 1024, kClosed, ""),
    OBORO_FIELD_R(t5_heads, kToml | kJson, 1, 1024, kClosed, ""),
    OBORO_FIELD_R(t5_d_kv, kToml | kJson, 1, 65536, kClosed, ""),
    OBORO_FIELD_R(t5_d_ff, kToml | kJson, 1, 262144, kClosed, ""),
    OBORO_FIELD_R(max_token_length, kToml | kJson, 1, 4096, kClosed, " tokens"),
    OBORO_FIELD(train_data_dir, kToml | kJson | kPath),
    OBORO_FIELD(dataset_config, kToml | kJson | kPath),
    OBORO_FIELD(manifest, kToml | kJson | kPath),
    OBORO_FIELD(cache_dir, kToml | kJson | kPath),
    OBORO_FIELD_R(cache_stage, kToml | kJson, 1, 2, kClosed, " (the --stage of oboro data bucket)"),
    OBORO_FIELD(license_allow, kToml | kJson),
    OBORO_FIELD(require_license, kToml | kJson),
    Field{"resolution", Resolution{}, kToml},
    OBORO_FIELD(width, kJson),
    OBORO_FIELD(height, kJson),
    OBORO_FIELD(output_dir, kToml | kPath),
    OBORO_FIELD(output_name, kToml),
    OBORO_FIELD_R(train_batch_size, kToml | kJson, 1, 65536, kClosed, ""),
    OBORO_FIELD_R(gradient_accumulation_steps, kToml | kJson, 1, 65536, kClosed, ""),
    OBORO_FIELD_R(max_train_steps, kToml | kJson, 1, 1e12, kClosed, ""),
    OBORO_FIELD_R(learning_rate, kToml | kJson, 0, kInf, kOpenLo | kOpenHi, " (a positive number)"),
    OBORO_FIELD(lr_scheduler, kToml | kJson),
    OBORO_FIELD_R(lr_warmup_steps, kToml | kJson, 0, 1e12, kClosed, " (steps, or a fraction of max_train_steps when < 1)"),
    OBORO_FIELD_R(min_lr_ratio, kToml | kJson, 0, 1, kClosed, " (a fraction of learning_rate)"),
    OBORO_FIELD(optimizer_type, kToml | kJson),
    OBORO_FIELD_R(adam_beta1, kToml | kJson, 0, 1, kOpenHi, ""),
    OBORO_FIELD_R(adam_beta2, kToml | kJson, 0, 1, kOpenHi, ""),
    OBORO_FIELD_R(adam_epsilon, kToml | kJson, 0, 1, kOpenLo, ""),
    OBORO_FIELD_R(weight_decay, kToml | kJson, 0, 10, kClosed, ""),
    OBORO_FIELD_R(max_grad_norm, kToml | kJson, 0, 1e6, kClosed, " (0 = no clipping)"),
    OBORO_FIELD_R(ema_decay, kToml | kJson, 0, 1, kOpenHi, " (0 = no EMA; e.g. 0.999)"),
    OBORO_FIELD(seed, kToml | kJson),
    OBORO_FIELD_R(caption_dropout_rate, kToml | kJson, 0, 1, kClosed, " (the fraction of captions dropped)"),
    OBORO_FIELD(timestep_sampling, kToml | kJson),
    OBORO_FIELD(mixed_precision, kToml | kJson),
    OBORO_FIELD_R(save_every_n_steps, kToml, 0, 1e12, kClosed, " (0 = only at the end)"),
    OBORO_FIELD_R(save_last_n_steps, kToml, 0, 1e12, kClosed, " (0 = keep all)"),
    OBORO_FIELD(sample_prompts, kToml | kPath),
    OBORO_FIELD_R(sample_every_n_steps, kToml, 0, 1e12, kClosed, " (0 = no samples)"),
    OBORO_FIELD_R(sample_steps, kToml, 1, 1000, kClosed, ""),
    OBORO_FIELD_R(sample_cfg, kToml, 0, 100, kClosed, ""),
    OBORO_FIELD_R(threads, kToml, 0, 4096, kClosed, " (0 = all cores)"),
    OBORO_FIELD_R(collective_timeout, kToml, 0, 1e7, kOpenLo, " (seconds)"),
    OBORO_FIELD(notify_url, kToml),
    OBORO_FIELD_R(spike_max_rollbacks, kToml, 0, 1000000, kClosed, " (0 = off)"),
    OBORO_FIELD_R(spike_factor, kToml, 0, 1e6, kClosed, " (0 = only non-finite losses count as spikes)"),
    OBORO_FIELD_R(spike_window, kToml, 1, 1000000, kClosed, " (steps)"),
    OBORO_FIELD_R(spike_lr_factor, kToml, 0, 1, kOpenLo, ""),
};

#undef OBORO_FIELD
#undef OBORO_FIELD_R

void check_range(const Field& f, double x, const std::string& where) {
  const bool lo_ok = (f.open & kOpenLo) ? x > f.lo : x >= f.lo, hi_ok = (f.open & kOpenHi) ? x < f.hi : x <= f.hi;
  if (std::isfinite(x) && lo_ok && hi_ok) return;
  fail(where, " must be in ", (f.open & kOpenLo) ? "(" : "[", py_float(f.lo), ", ", py_float(f.hi), (f.open & kOpenHi) ? ")" : "]",
       f.meaning, ", got ", py_float(x));
}

// The value of TOML node `v` into field `f` of `c`; `where` = "file: key" for errors.
void read_toml_value(TrainConfig& c, const Field& f, const toml::node& v, const std::string& where) {
  std::visit(
      [&](auto m) {
        using M = decltype(m);
        if constexpr (std::is_same_v<M, Resolution>) {
          if (auto i = v.as_integer()) c.width = c.height = (int)i->get();
          else if (auto s = v.as_string()) {
            if (std::sscanf(s->get().c_str(), "%d,%d", &c.width, &c.height) != 2) fail(where, " must be N or \"W,H\"");
          } else fail(where, " must be N or \"W,H\"");
        } else {
          using T = std::remove_reference_t<decltype(c.*m)>;
          T& dst = c.*m;
          if constexpr (std::is_same_v<T, std::string>) {
            if (!v.is_string()) fail(where, " must be a string");
            dst = v.as_string()->get();
          } else if constexpr (std::is_same_v<T, bool>) {
            if (!v.is_boolean()) fail(where, " must be true or false");
            dst = v.as_boolean()->get();
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            // (the one array setting is license_allow: the messages name what it holds)
            const toml::array* a = v.as_array();
            if (!a) fail(where, " must be an array of SPDX licence ids, e.g. [\"CC0-1.0\", \"CC-BY-4.0\"]");
            for (const auto& e : *a) {
              if (!e.is_string() || e.as_string()->get().empty())
                fail(where, " must hold non-empty strings (SPDX licence ids such as \"CC-BY-4.0\")");
              dst.push_back(e.as_string()->get());
            }
          } else if constexpr (std::is_integral_v<T>) {  // an integer setting: integral values in T's range only
            using Lim = std::numeric_limits<T>;
            const long double lo = (long double)Lim::min(), hi = (long double)Lim::max();
            long double x;
            if (auto i = v.as_integer()) x = (long double)i->get();
            else if (auto d = v.as_floating_point()) x = (long double)d->get();
            else fail(where, " must be a number");
            if (!std::isfinite(x) || x != std::floor(x) || x < lo || x > hi)
              fail(where, " must be an integer in [", Lim::min(), ", ", Lim::max(), "], got ", py_float((double)x));
            check_range(f, (double)x, where);
            dst = (T)x;
          } else {  // a real setting
            double x;
            if (auto i = v.as_integer()) x = (double)i->get();
            else if (auto d = v.as_floating_point()) x = d->get();
            else fail(where, " must be a number");
            if (!std::isfinite(x)) fail(where, " must be a finite number, got ", py_float(x));
            check_range(f, x, where);
            dst = (T)x;
          }
        }
      },
      f.member);
}

}  // namespace

// ---------------------------------------------------------------- TOML

TrainConfig TrainConfig::from_toml(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    fail(path, ":", e.source().begin.line, ": invalid TOML: ", e.description());
  }
  // Flat kohya-style keys; tables ([model], [train], ...) are only grouping and are flattened.
  std::map<std::string, const toml::node*> keys;
  std::function<void(const toml::table&)> flatten = [&](const toml::table& t) {
    for (auto&& [k, v] : t) {
      if (v.is_table()) flatten(*v.as_table());
      else keys[std::string(k.str())] = &v;
    }
  };
  flatten(root);
  TrainConfig c;
  std::set<std::string> used;
  for (const Field& f : kFields) {
    if (!(f.use & kToml)) continue;
    auto it = keys.find(f.key);
    if (it == keys.end()) continue;
    used.insert(f.key);
    read_toml_value(c, f, *it->second, str(path, ": ", f.key));
  }
  std::string unknown;
  for (auto& [k, v] : keys)
    if (!used.count(k)) unknown += (unknown.empty() ? "" : ", ") + k;
  if (!unknown.empty()) fail(path, ": unknown setting(s): ", unknown, " — check the spelling (see docs/training.md)");
  // Paths relative to the config file.
  const fs::path base = fs::path(path).parent_path();
  for (const Field& f : kFields) {
    if (!(f.use & kPath)) continue;
    std::string& p = c.*std::get<std::string TrainConfig::*>(f.member);
    if (!p.empty() && fs::path(p).is_relative() && !sql::is_postgres_target(p)) p = (base / p).lexically_normal().string();
  }
  return c;
}

// ---------------------------------------------------------------- JSON

std::string TrainConfig::to_json() const {
  json j = json::object();
  for (const Field& f : kFields) {
    if (!(f.use & kJson)) continue;
    std::visit(
        [&](auto m) {
          if constexpr (!std::is_same_v<decltype(m), Resolution>) j[f.key] = this->*m;
        },
        f.member);
  }
  return j.dump();
}

TrainConfig TrainConfig::from_json(const json& config) {
  TrainConfig c;
  for (const Field& f : kFields) {
    if (!(f.use & kJson) || !config.contains(f.key)) continue;
    std::visit(
        [&](auto m) {
          if constexpr (!std::is_same_v<decltype(m), Resolution>) config.at(f.key).get_to(c.*m);
        },
        f.member);
  }
  return c;
}

// ---------------------------------------------------------------- validation

void TrainConfig::validate() const {
  for (const Field& f : kFields)  // every numeric setting in its range, however it was set (TOML, CLI, JSON)
    std::visit(
        [&](auto m) {
          if constexpr (!std::is_same_v<decltype(m), Resolution>) {
            using T = std::remove_reference_t<decltype(this->*m)>;
            if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) check_range(f, (double)(this->*m), f.key);
          }
        },
        f.member);
  if (width < 1 || height < 1 || width > 16384 || height > 16384)
    fail("resolution must be N or \"W,H\" with sides from 1 to 16384, got ", width, "x", height);
  if (optimizer_type != "AdamW" && optimizer_type != "adamw")
    fail("optimizer_type '", optimizer_type, "' is not supported: use AdamW");
  LrSchedule::validate_kind(lr_scheduler);
  timestep_sampling_from_name(timestep_sampling);
  if (mixed_precision == "fp16")
    fail("mixed_precision = \"fp16\" is not supported (the CPU has no F16 GEMM, and F16's range needs loss "
         "scaling): use \"bf16\" (F32's range, BF16 GEMMs) or \"no\" (F32)");
  if (mixed_precision != "no" && mixed_precision != "bf16")
    fail("mixed_precision = \"", mixed_precision, "\" is unknown: use \"no\" (F32) or \"bf16\"");
  if (codec != "pixels" && codec != "flux-vae") fail("codec '", codec, "' is unknown: use pixels or flux-vae");
  if (codec == "flux-vae" && vae.empty())
    fail("codec 'flux-vae' needs vae = \"ae.safetensors\" (the FLUX.1 VAE that encodes the training images)");
  if (train_batch_size < 1) fail("train_batch_size must be at least 1");
  if (gradient_accumulation_steps < 1) fail("gradient_accumulation_steps must be at least 1");
  if (max_train_steps < 1) fail("max_train_steps must be at least 1");
  if (!(collective_timeout > 0))
    fail("collective_timeout must be a positive number of seconds (default 600): how long ranks wait for each other");
  if (spike_max_rollbacks < 0) fail("spike_max_rollbacks must be 0 (no loss-spike rollback) or more");
  if (spike_factor < 0 || (spike_factor > 0 && spike_factor <= 1))
    fail("spike_factor must be 0 (only non-finite losses count as spikes) or above 1 (e.g. 3: a loss above 3 × the "
         "running median)");
  if (spike_window < 1) fail("spike_window must be at least 1 step");
  if (!(spike_lr_factor > 0 && spike_lr_factor <= 1)) fail("spike_lr_factor must be in (0, 1] (e.g. 0.5)");
  const int m = (codec == "flux-vae" ? 8 : pixels_stride) * patch_size;
  if (width % m || height % m)
    fail("resolution ", width, "x", height, " must be a multiple of the codec stride·patch_size = ", m);
  const int sources = !train_data_dir.empty() + !dataset_config.empty() + !cache_dir.empty();
  if (sources != 1)
    fail("set exactly one of train_data_dir (a folder of images + .txt captions), dataset_config (a dataset TOML) "
         "or cache_dir + manifest (latents from `oboro data cache`)");
  if (cache_dir.empty() != manifest.empty())
    fail("cache_dir and manifest go together: cache_dir = the --out of `oboro data cache`, manifest = its --manifest");
  if (lora()) {
    if (network_module != "lora" && network_module != "networks.lora")
      fail("network_module = \"", network_module, "\" is not supported: use \"lora\" (kohya's networks.lora)");
    if (pretrained_model.empty())
      fail("network_module = \"lora\" adapts a pretrained model: set pretrained_model = \"BASE.safetensors\"");
    if (text_encoder.empty())
      fail("LoRA training keeps the text encoder frozen: set text_encoder (the base model's .t5.safetensors)");
    if (network_dim < 1 || network_dim > 4096) fail("network_dim must be between 1 and 4096, got ", network_dim);
    if (network_alpha < 0) fail("network_alpha must be 0 (= network_dim) or positive, got ", network_alpha);
  } else if (!network_weights.empty() || !network_args.empty()) {
    fail("network_weights / network_args need network_module = \"lora\"");
  }
  if (!cache_dir.empty() && cache_stage != 1 && cache_stage != 2)
    fail("cache_stage must be 1 (256² crops) or 2 (~512² buckets), as in `oboro data bucket --stage`");
}

}  // namespace oboro
