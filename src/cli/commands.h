// Each subcommand lives in its own cmd_*.cpp and registers itself on the root app.
#pragma once
#include <CLI/CLI.hpp>

namespace oboro::cli {
void register_info(CLI::App& app);   // oboro info FILE [--json]
void register_debug(CLI::App& app);  // oboro debug dit|dit-grad ...
void register_bench(CLI::App& app);  // oboro bench dit ...
void register_init(CLI::App& app);   // oboro init --preset tiny -o FILE
}  // namespace oboro::cli
