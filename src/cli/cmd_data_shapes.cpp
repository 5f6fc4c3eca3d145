// oboro data shapes --out DIR [--count N] [--size PX] [--seed S] [--holdout LIST] [--split train|test]:
// the procedural compositional dataset (coloured shapes with relations), CC0.
// Registered on the `data` group (created by register_data in cmd_data.cpp) from main.cpp.
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "data/shapes.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

namespace oboro::cli {

void register_data_shapes(CLI::App& data_group) {
  auto o = std::make_shared<shapes::GenerateOptions>();
  CLI::App* sub = data_group.add_subcommand(
      "shapes", "Write the procedural shapes dataset: PNG + caption per image, manifest.json, eval prompt lists");
  sub->add_option("--out,-o", o->out_dir, "Output folder")->required();
  sub->add_option("--count,-n", o->count, "Number of images")->capture_default_str()
      ->check(int_in(1, 100000000));
  sub->add_option("--size", o->size, "Image side in pixels")->capture_default_str()
      ->check(int_in(8, 16384));
  sub->add_option("--seed", o->seed, "Seed; the dataset is a pure function of seed and options")->capture_default_str()
      ->check(int_in(0, 4294967295));
  sub->add_option("--holdout", o->holdout,
                  "Attribute combinations never shown in training, e.g. \"red:triangle,blue:circle\" "
                  "(colour:shape, also size words: large:circle)");
  sub->add_option("--split", o->split,
                  "train: no held-out combination appears; test: half the images contain one (for evaluation)")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  sub->add_option("--prompts", o->prompts, "Lines written to prompts_seen.txt and prompts_heldout.txt")->capture_default_str();
  sub->add_option("--two-fraction", o->two_fraction, "Share of images with two objects and a relation")->capture_default_str()
      ->check(real_in(0, 1));
  sub->add_flag("--force", o->force, "Replace a shapes dataset already in --out");
  sub->callback([o] {
    const auto t0 = std::chrono::steady_clock::now();
    const shapes::GenerateSummary s = shapes::generate_dataset(*o);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %d images (%dx%d, split %s, %d with a held-out combination) to %s in %.1f s\n", s.images,
                o->size, o->size, o->split.c_str(), s.heldout_images, o->out_dir.c_str(), sec);
    std::printf("prompts: %d seen (prompts_seen.txt), %d held-out (prompts_heldout.txt); licence: %s\n",
                s.seen_prompts, s.heldout_prompts, shapes::kLicence);
  });
}

}  // namespace oboro::cli
