// Each subcommand lives in its own cmd_*.cpp and registers itself on the root app.
#pragma once
#include <CLI/CLI.hpp>
#include "cli/backend_choice.h"

namespace oboro::cli {
void register_info(CLI::App& app);   // oboro info FILE [--json]
void register_debug(CLI::App& app);  // oboro debug dit|dit-grad ...
void register_bench(CLI::App& app);  // oboro bench dit ...
void register_bench_formats(CLI::App& app);  // oboro bench formats (cmd_bench_formats.cpp; after bench)
void register_init(CLI::App& app);   // oboro init --preset tiny -o FILE
void register_data(CLI::App& app);   // oboro data vocab|shapes ...      (cmd_data.cpp)
void register_data_shapes(CLI::App& data_group);  // oboro data shapes ... (cmd_data_shapes.cpp)
void register_data_manifest(CLI::App& data_group);  // oboro data ingest|dedup|list|... (cmd_data_manifest.cpp)
void register_data_manifest_copy(CLI::App& data_group);  // oboro data manifest copy SRC DST (cmd_data_copy.cpp)
void register_eval(CLI::App& app);   // oboro eval shapes ...            (cmd_eval.cpp)
void register_train(CLI::App& app);  // oboro train --config run.toml    (cmd_train.cpp)
void register_supervise(CLI::App& app);  // oboro supervise -- COMMAND...  (cmd_supervise.cpp)
// `oboro train --supervise`: `command` under the supervisor's defaults; returns its exit code.
int run_supervised(std::vector<std::string> command);
void register_convert(CLI::App& app);  // oboro convert --from-state ...    (cmd_convert.cpp)
void register_generate(CLI::App& app);  // oboro generate ...            (cmd_generate.cpp)
void register_serve(CLI::App& app);     // oboro serve ...               (cmd_serve.cpp)
void register_merge(CLI::App& app);     // oboro merge --mode ... A B [C] -o OUT (cmd_merge.cpp)
// The bundled default model (cmd_generate.cpp): $OBORO_DEFAULT_MODEL, beside the binary, or in the source tree.
std::string default_model();
void register_vae_commands(CLI::App& app);  // oboro debug vae, oboro bench vae (cmd_vae.cpp; after debug, bench)
void register_bench_pipeline(CLI::App& app);  // oboro bench pipeline (cmd_bench_pipeline.cpp; after bench)
void register_bench_step(CLI::App& app);  // oboro bench step|t5|attention (cmd_bench_step.cpp; after bench)
}  // namespace oboro::cli
