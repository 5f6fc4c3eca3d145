// `oboro convert --from-state STATE [--weights ema|raw] -o FILE`: inference files from a training
// checkpoint (weight-format conversion joins this command later).
#include "cli/commands.h"
#include "core/error.h"
#include "train/trainer.h"

namespace oboro::cli {

void register_convert(CLI::App& app) {
  struct Opts { std::string state, weights = "ema", output; };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("convert", "Convert model files (for now: a training state to inference files)");
  c->add_option("--from-state", o->state, "training state (output_dir/state/step-*.safetensors)")->required()->check(CLI::ExistingFile);
  c->add_option("--weights", o->weights, "ema (when the run kept an EMA) or raw")->check(CLI::IsMember({"ema", "raw"}))->capture_default_str();
  c->add_option("--output,-o", o->output, "output model file; the text encoder goes to <name>.t5.safetensors")->required();
  c->callback([o] { export_from_state(o->state, o->weights == "ema", o->output); });
}

}  // namespace oboro::cli
