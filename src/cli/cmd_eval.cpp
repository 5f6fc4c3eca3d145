// oboro eval shapes --images DIR [--manifest FILE] [--holdout LIST] [--json] [--per-image]:
// detects coloured shapes in generated images and scores them against their prompts.
#include "cli/commands.h"
#include "core/error.h"
#include "data/shapes_eval.h"

#include <iostream>
#include <memory>
#include <string>

namespace oboro::cli {

void register_eval(CLI::App& app) {
  CLI::App* eval = app.add_subcommand("eval", "Evaluate generated images");
  eval->require_subcommand(1);

  auto o = std::make_shared<shapes::EvalOptions>();
  auto as_json = std::make_shared<bool>(false);
  CLI::App* sub = eval->add_subcommand(
      "shapes",
      "Score images of the shapes task: colour, shape, size, relation, object count and all-correct, "
      "overall and split by seen / held-out combinations. The prompt comes from the PNG `parameters` "
      "chunk (A1111 infotext) or a sidecar .txt");
  sub->add_option("--images", o->images_dir, "Folder of images (searched recursively)")->required();
  sub->add_option("--manifest", o->manifest,
                  "manifest.json of the training dataset (its holdout list; default: DIR/manifest.json if present)");
  sub->add_option("--holdout", o->holdout, "Held-out combinations, e.g. \"red:triangle,blue:circle\" (overrides the manifest)");
  sub->add_flag("--json", *as_json, "Print one JSON object");
  sub->add_flag("--per-image", o->per_image, "With --json: include per-image detections");
  sub->callback([o, as_json] {
    const shapes::EvalResult r = shapes::evaluate_dir(*o);
    if (*as_json) std::cout << r.json << "\n";
    else std::cout << r.text;
    if (r.all.images == 0) fail(o->images_dir, ": no image could be evaluated (see the warnings above)");
  });
}

}  // namespace oboro::cli
