// oboro merge: checkpoint merging (A1111 semantics), LoRA baking and LoRA extraction (src/merge/merge.h).
//   oboro merge --mode weighted-sum A B --multiplier M -o OUT
//   oboro merge --mode add-difference A B C --multiplier M -o OUT
//   oboro merge --mode triple-sum A B C --multiplier M --multiplier2 N -o OUT
//   oboro merge --mode no-interpolation A --lora L.safetensors:0.8 -o OUT        (bake LoRAs)
//   oboro merge --mode extract-lora --rank R A B -o LORA                         (LoRA ≈ A − B)
#include "cli/commands.h"
#include "core/error.h"
#include "flow/lora_apply.h"
#include "merge/merge.h"
#include <cmath>
#include <cstdio>

namespace oboro::cli {

void register_merge(CLI::App& app) {
  struct Opts {
    std::string mode = "weighted-sum";
    std::vector<std::string> models, loras;
    merge::MergeOptions opt;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("merge", "Merge checkpoints, bake LoRAs into one, or extract a LoRA (A1111 semantics)");
  c->add_option("models", o->models, "input models A B [C] (.safetensors)")->required();
  c->add_option("--mode", o->mode,
                "weighted-sum: (1-M)*A + M*B; add-difference: A + M*(B - C); triple-sum: (1-M-N)*A + M*B + N*C; "
                "no-interpolation: A (with --lora: bake); extract-lora: a LoRA of rank --rank from A - B")
      ->capture_default_str();
  c->add_option("--multiplier,-M,--alpha", o->opt.multiplier, "M")->capture_default_str();
  c->add_option("--multiplier2,-N,--beta", o->opt.multiplier2, "N (triple-sum)")->capture_default_str();
  c->add_option("--block-weights", o->opt.block_weights,
                "M per group: 'embedders=0.2,00-03=0.5,07=1,blocks=0.8,final=0' (groups: embedders, final, blocks, "
                "NN, NN-MM; others use --multiplier)");
  c->add_option("--lora", o->loras, "bake a LoRA into the result: FILE[:WEIGHT] (repeatable)");
  c->add_option("--rank", o->opt.rank, "extract-lora: the LoRA rank");
  c->add_option("--dtype", o->opt.dtype, "output dtype: f32 (default), bf16, f16");
  c->add_option("-o,--output", o->opt.output, "output .safetensors")->required();
  c->add_flag("--force", o->opt.force, "replace an existing output (never an input)");
  c->callback([o] {
    merge::MergeOptions opt = o->opt;
    opt.mode = merge::parse_mode(o->mode);
    opt.inputs = o->models;
    for (const std::string& a : o->loras) {
      const LoraRequest r = parse_lora_arg(a);
      opt.loras.push_back({r.spec, r.weight});
    }
    const merge::MergeReport rep = merge::run_merge(opt);
    for (const std::string& l : rep.lora_lines) std::fprintf(stderr, "%s", l.c_str());
    if (opt.mode == merge::Mode::ExtractLora) {
      for (const auto& e : rep.energy)
        std::fprintf(stderr, "  %-44s rank %3d  retained energy %.6f\n", e.tensor.c_str(), e.rank, e.retained);
      std::fprintf(stderr, "extracted %zu modules of rank <= %d (%zu weights identical in A and B): retained energy "
                   "%.6f of ||A - B||^2 (relative Frobenius error %.3e)\n",
                   rep.energy.size(), opt.rank, rep.identical, rep.retained(), std::sqrt(std::max(0.0, 1 - rep.retained())));
      if (!rep.lost_1d.empty()) {
        std::fprintf(stderr, "warning: %zu tensors that a LoRA cannot carry (norms, biases) differ between A and B and "
                     "are not in the LoRA:", rep.lost_1d.size());
        for (size_t i = 0; i < rep.lost_1d.size() && i < 8; ++i) std::fprintf(stderr, " %s", rep.lost_1d[i].c_str());
        std::fprintf(stderr, "%s\n", rep.lost_1d.size() > 8 ? " ..." : "");
      }
    } else {
      std::fprintf(stderr, "%s: %zu tensors written\n", merge::mode_name(opt.mode), rep.tensors);
    }
    std::printf("%s\n", opt.output.c_str());
  });
}

}  // namespace oboro::cli
