#include "cli/backend_choice.h"
#include "core/error.h"
#include "ops/checked_backend.h"
#include <memory>

namespace oboro::cli {

namespace {
std::string g_name = "cpu";
}

void add_backend_option(CLI::App& app) {
  app.add_option("--backend", g_name,
                 "Compute backend: cpu, or checked (the CPU backend checking every buffer crossing; for tests)")
      ->check(CLI::IsMember({"cpu", "checked"}))
      ->capture_default_str();
  app.fallthrough();
}

const std::string& backend_name() { return g_name; }

Backend& backend() {
  if (g_name == "cpu") return cpu_backend();
  if (g_name == "checked") {
    static std::unique_ptr<Backend> checked = make_checked_backend(cpu_backend());
    return *checked;
  }
  fail("--backend ", g_name, " is unknown: use cpu or checked");
}

}  // namespace oboro::cli
