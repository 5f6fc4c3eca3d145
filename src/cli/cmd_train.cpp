// `oboro train --config run.toml [--resume latest|STATE]`
#include "cli/commands.h"
#include "core/error.h"
#include "train/trainer.h"
#include <cstdio>

namespace oboro::cli {

void register_train(CLI::App& app) {
  struct Opts { std::string config, resume; int64_t stop_after = 0; int threads = 0; bool overwrite = false, no_memory_check = false; };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("train", "Train (or fine-tune) a model with the I-CFM flow-matching objective");
  c->add_option("--config,--config_file", o->config, "training config (kohya-style TOML)")->required()->check(CLI::ExistingFile);
  c->add_option("--resume", o->resume, "continue from a checkpoint: 'latest' or a state file");
  c->add_option("--stop-after", o->stop_after, "stop (with a checkpoint) after N steps of this run");
  c->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  c->add_flag("--overwrite", o->overwrite,
              "a new run into an output_dir that holds an earlier run: delete that run's model, checkpoints, log and samples first");
  c->add_flag("--no-memory-check", o->no_memory_check, "run even when the training memory plan exceeds the available memory");
  c->callback([o] {
    TrainConfig cfg = TrainConfig::from_toml(o->config);
    if (o->threads > 0) cfg.threads = o->threads;
    if (o->overwrite && !o->resume.empty()) fail("--overwrite starts a new run and --resume continues one: give only one");
    cfg.overwrite = o->overwrite;
    cfg.memory_check = !o->no_memory_check;
    TrainResult r = train(cfg, cli::backend(), o->resume, o->stop_after);
    std::printf("trained %lld steps, last loss %.5f\nmodel: %s\ntext encoder: %s\ncheckpoint: %s\n", (long long)r.steps,
                r.final_loss, r.model_path.c_str(), r.text_encoder_path.c_str(), r.state_path.c_str());
  });
}

}  // namespace oboro::cli
