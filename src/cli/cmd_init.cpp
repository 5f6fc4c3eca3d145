// `oboro init`: write a freshly initialised DiT model file (a preset or explicit sizes).
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "models/dit.h"
#include "ops/backend.h"
#include <cstdio>

namespace oboro::cli {

void register_init(CLI::App& app) {
  struct Opts {
    std::string preset = "tiny", schedule = "mmh", output, title;
    int text_dim = 4096, latent_channels = 16, patch = 2;
    uint64_t seed = 0;
    bool random_all = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("init", "Write a freshly initialised oboro DiT model file");
  c->add_option("--preset", o->preset, "oboro-1b, small or tiny")->capture_default_str();
  c->add_option("--schedule", o->schedule, "head schedule: mmh (8/16/24/48) or uniform")->capture_default_str();
  c->add_option("--text-dim", o->text_dim, "text encoder width (4096 = T5-XXL)")->capture_default_str()
      ->check(int_in(1, 65536));
  c->add_option("--latent-channels", o->latent_channels, "latent channels (16 = FLUX VAE)")->capture_default_str()
      ->check(int_in(1, 1024));
  c->add_option("--patch", o->patch, "patch size")->capture_default_str()->check(int_in(1, 64));
  c->add_option("--seed", o->seed, "initialisation seed")->capture_default_str()
      ->check(int_in(0, 4294967295));
  c->add_flag("--random-all", o->random_all, "randomise every tensor, zero-init layers included (for tests)");
  c->add_option("--title", o->title, "modelspec.title");
  c->add_option("--output,-o", o->output, "output .safetensors")->required();
  c->callback([o] {
    DiTConfig cfg = DiTConfig::preset(o->preset, o->text_dim, o->schedule);
    cfg.latent_channels = o->latent_channels;
    cfg.patch_size = o->patch;
    cfg.validate("--preset " + o->preset);
    DiT model(cfg, cli::backend());
    if (o->random_all) model.init_random_all(o->seed);
    else model.init_weights(o->seed);
    model.save(o->output, {{"modelspec.title", o->title.empty() ? "oboro-" + o->preset + "-init" : o->title}});
    std::printf("wrote %s: %s, %lld parameters\n", o->output.c_str(), o->preset.c_str(),
                (long long)cfg.param_count());
  });
}

}  // namespace oboro::cli
