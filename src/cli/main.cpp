// oboro: one binary for generate / train / data / convert / eval / bench / info / init / debug.
#include "cli/commands.h"
#include "core/error.h"
#include "flow/memory_plan.h"  // current_rss_bytes
#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  CLI::App app{"oboro — train and run the oboro text-to-image model"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "oboro 0.1.0");
  // A bad flag or value is one line, as every other error (CLI11's default adds a second, "Run with --help ...").
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("oboro: error: ") + e.what() + " (--help lists the options)\n";
  });
  oboro::cli::add_backend_option(app);
  oboro::cli::register_info(app);
  oboro::cli::register_debug(app);
  oboro::cli::register_bench(app);
  oboro::cli::register_bench_formats(app);
  oboro::cli::register_vae_commands(app);
  oboro::cli::register_bench_pipeline(app);
  oboro::cli::register_bench_step(app);
  oboro::cli::register_init(app);
  oboro::cli::register_data(app);
  oboro::cli::register_data_shapes(*app.get_subcommand("data"));
  oboro::cli::register_data_manifest(*app.get_subcommand("data"));
  oboro::cli::register_eval(app);
  oboro::cli::register_train(app);
  oboro::cli::register_supervise(app);
  oboro::cli::register_generate(app);
  oboro::cli::register_serve(app);
  oboro::cli::register_merge(app);
  oboro::cli::register_convert(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const oboro::Error& e) {
    std::fprintf(stderr, "oboro: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // A host allocation outside the backends' allocators (which name their buffer) failed.
    std::fprintf(stderr, "oboro: error: out of memory: a host allocation failed with %zu MiB already in use: use a "
                 "smaller model, batch or image size, or free memory\n", oboro::current_rss_bytes() >> 20);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oboro: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
