// The one place the command line chooses the backend (`--backend cpu|checked`, accepted by every command):
// commands get it from cli::backend() and pass it down; library code never picks one itself.
#pragma once
#include "ops/backend.h"
#include <CLI/CLI.hpp>
#include <string>

namespace oboro::cli {

// Adds `--backend` to the root command; subcommands fall through to it, so it may follow any command.
void add_backend_option(CLI::App& app);
// The chosen backend (created on first use): "cpu" (default) or "checked" (the CPU backend under
// ops/checked_backend.h: every op checks its pointers and buffers are poisoned between ops).
Backend& backend();
const std::string& backend_name();

}  // namespace oboro::cli
