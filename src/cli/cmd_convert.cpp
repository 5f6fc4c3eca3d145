// `oboro convert --from-state STATE [--weights ema|raw] -o FILE`: inference files from a training checkpoint.
// `oboro convert --type q8_0|f8|bf16|f16|f32 IN OUT`: weight-format conversion of a DiT or T5 file
// (docs/formats.md).
#include "cli/commands.h"
#include "core/error.h"
#include "models/convert_weights.h"
#include "train/trainer.h"
#include <cstdio>

namespace oboro::cli {

void register_convert(CLI::App& app) {
  struct Opts { std::string state, weights = "ema", output, type, in, out; };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("convert",
                               "Convert model files: a training state to inference files (--from-state), or the "
                               "weight format of a DiT / T5 file (--type FMT IN OUT)");
  c->add_option("--from-state", o->state, "training state (output_dir/state/step-*.safetensors)")->check(CLI::ExistingFile);
  c->add_option("--weights", o->weights, "ema (when the run kept an EMA) or raw")->check(CLI::IsMember({"ema", "raw"}))->capture_default_str();
  c->add_option("--output,-o", o->output, "output model file; the text encoder goes to <name>.t5.safetensors");
  c->add_option("--type", o->type,
                "weight format of the Linear weights: f32, bf16, f16, f8 (E4M3 + per-tensor scale), q8_0 (int8 blocks "
                "of 32 + scales); norms, biases, embedders and the final layer stay f32");
  c->add_option("in", o->in, "input DiT or T5 file (T5: also a sharded index or a Hugging Face directory)");
  c->add_option("out", o->out, "output file (written atomically)");
  c->callback([o] {
    if (!o->state.empty()) {
      if (!o->type.empty() || !o->in.empty())
        fail("convert: give either --from-state STATE -o FILE or --type FMT IN OUT, not both "
             "(convert the exported files with --type afterwards)");
      if (o->output.empty()) fail("convert --from-state needs --output/-o FILE");
      refuse_output_over_input(o->state, o->output);
      export_from_state(cli::backend(), o->state, o->weights == "ema", o->output);
      return;
    }
    if (o->type.empty())
      fail("convert: nothing to do — give --type FMT IN OUT (FMT one of ", wformat_list(),
           ") or --from-state STATE -o FILE");
    const WFormat fmt = parse_wformat(o->type, "--type");
    std::string out = o->out.empty() ? o->output : o->out;
    if (o->in.empty() || out.empty()) fail("convert --type ", o->type, " needs an input and an output file: IN OUT");
    ConvertStats st = convert_weights(o->in, out, fmt);
    std::printf("%s: %s weights, %d Linear weights in %s, %d tensors kept f32, %.1f MiB -> %s\n", o->in.c_str(),
                st.kind.c_str(), st.quantized, wformat_name(fmt), st.kept_f32, st.bytes_out / 1048576.0, out.c_str());
  });
}

}  // namespace oboro::cli
