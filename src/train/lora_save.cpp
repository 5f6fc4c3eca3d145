#include "train/lora_save.h"
#include "flow/infotext.h"
#include "io/file_hash.h"
#include "lora/lora_file.h"
#include <nlohmann/json.hpp>
#include <cctype>
#include <cstdio>
#include <map>
#include <filesystem>

namespace oboro {

namespace fs = std::filesystem;

void save_lora_model(TrainState& state, const TrainConfig& cfg, const RunData& data) {
  fs::create_directories(cfg.output_dir);
  std::vector<lora::LoraWriteModule> modules;
  {
    EmaWeightsInModels ema(state);  // the LoRA's EMA weights when enabled
    modules = state.lora->write_modules();
  }
  const LoraSettings& s = state.lora->settings();
  lora::LoraMetadata md;
  md.network_module = "networks.lora";
  md.network_dim = s.dim;
  md.network_alpha = s.alpha;
  md.network_args = s.args_json();
  md.steps = state.step;
  md.learning_rate = cfg.learning_rate;
  md.resolution_w = cfg.width;
  md.resolution_h = cfg.height;
  const std::string dir = !cfg.train_data_dir.empty() ? cfg.train_data_dir
                          : !cfg.dataset_config.empty() ? cfg.dataset_config : cfg.cache_dir;
  md.dataset_summary = nlohmann::json{{fs::path(dir).filename().string(),
                                       {{"n_repeats", 1}, {"img_count", data.num_images}}}}.dump();
  md.base_model_hash = sha256_file_cached(cfg.pretrained_model);
  md.base_model_name = fs::path(cfg.pretrained_model).stem().string();
  md.provenance = data.provenance;
  md.tag_frequency = data.tag_frequency;
  md.extra = {{"ss_seed", std::to_string(cfg.seed)},
              {"ss_optimizer", cfg.optimizer_type},
              {"ss_lr_scheduler", cfg.lr_scheduler},
              {"ss_num_train_images", std::to_string(data.num_images)},
              {"ss_batch_size_per_device", std::to_string(cfg.train_batch_size)},
              {"modelspec.title", cfg.output_name},
              {"oboro.train", nlohmann::json{{"steps", state.step},
                                             {"samples_seen", state.samples_seen},
                                             {"loss_ema", state.loss_ema},
                                             {"ema", state.has_ema()}}.dump()}};
  lora::write_lora(model_path(cfg), modules, md);
}

std::string kohya_tag_frequency(const std::string& dataset_dir, const std::vector<std::string>& captions) {
  std::map<std::string, int64_t> counts;
  for (const std::string& caption : captions) {
    size_t start = 0;
    while (start <= caption.size()) {
      size_t end = caption.find(',', start);
      if (end == std::string::npos) end = caption.size();
      size_t a = start, b = end;
      while (a < b && std::isspace((unsigned char)caption[a])) ++a;
      while (b > a && std::isspace((unsigned char)caption[b - 1])) --b;
      if (b > a) ++counts[caption.substr(a, b - a)];
      start = end + 1;
    }
  }
  nlohmann::json tags = nlohmann::json::object();
  for (const auto& [tag, n] : counts) tags[tag] = n;
  return nlohmann::json{{fs::path(dataset_dir).filename().string(), tags}}.dump(-1, ' ', false,
                                                                                 nlohmann::json::error_handler_t::replace);
}

}  // namespace oboro
