// `oboro train --config run.toml [--resume latest|STATE]`, one process or every rank of
// `mpirun -np N oboro train ...` (docs/distributed.md).
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "dist/communicator.h"
#include "train/trainer.h"
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace oboro::cli {

namespace {

// This process's command line (/proc/self/cmdline) without `drop`, argv[0] replaced by this executable's path.
std::vector<std::string> own_command_without(const std::string& drop) {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string a; std::getline(f, a, '\0');)
    if (a != drop) args.push_back(a);
  if (args.empty()) fail("--supervise: cannot read this process's command line (/proc/self/cmdline)");
  args[0] = std::filesystem::read_symlink("/proc/self/exe").string();
  return args;
}

}  // namespace

void register_train(CLI::App& app) {
  struct Opts {
    std::string config, resume, notify_url;
    int64_t stop_after = 0;
    int threads = 0;
    bool supervise = false, overwrite = false, no_memory_check = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("train", "Train (or fine-tune) a model with the I-CFM flow-matching objective");
  c->add_option("--config,--config_file", o->config, "training config (kohya-style TOML)")->required()->check(CLI::ExistingFile);
  c->add_option("--resume", o->resume, "continue from a checkpoint: 'latest' or a state file");
  c->add_option("--stop-after", o->stop_after, "stop (with a checkpoint) after N steps of this run")
      ->check(int_in(1, 1000000000000LL));
  c->add_option("--threads", o->threads, "CPU threads (default: all cores; per rank under mpirun)")
      ->check(int_in(1, 4096));
  c->add_option("--notify-url", o->notify_url, "JSON POST on start, checkpoint, spike, rollback, failure, finish");
  c->add_flag("--supervise", o->supervise,
              "one process: rerun this command with --resume latest after a crash, kill or hang (oboro supervise's "
              "defaults; under mpirun, wrap mpirun in `oboro supervise --` instead)");
  c->add_flag("--overwrite", o->overwrite,
              "a new run into an output_dir that holds an earlier run: delete that run's model, checkpoints, log and samples first");
  c->add_flag("--no-memory-check", o->no_memory_check, "run even when the training memory plan exceeds the available memory");
  c->callback([o] {
    if (o->supervise) {
      if (dist::launched_with_mpi())
        fail("--supervise supervises one process: for an MPI run use `oboro supervise -- mpirun ... oboro train ...`");
      std::exit(run_supervised(own_command_without("--supervise")));
    }
    TrainConfig cfg = TrainConfig::from_toml(o->config);
    if (o->threads > 0) cfg.threads = o->threads;
    if (!o->notify_url.empty()) cfg.notify_url = o->notify_url;
    if (o->overwrite && !o->resume.empty()) fail("--overwrite starts a new run and --resume continues one: give only one");
    cfg.overwrite = o->overwrite;
    cfg.memory_check = !o->no_memory_check;
    // The world: one process, or the ranks of an MPI launcher (MPI initialised only then).
    std::unique_ptr<dist::Communicator> comm = dist::open_world(cfg.collective_timeout);
    TrainResult r;
    try {
      r = train(cfg, cli::backend(), o->resume, o->stop_after, comm.get());
    } catch (const dist::CollectiveError& e) {
      if (comm->size() == 1) throw;
      // Every rank raised it: rank 0 reports it, then all leave together (mpirun kills the job at the first exit).
      if (comm->rank() == 0) std::fprintf(stderr, "oboro: error: %s\n", e.what()), std::fflush(stderr);
      comm->barrier();
      std::exit(1);
    } catch (const std::exception& e) {
      if (comm->size() == 1) throw;
      // One rank failed alone: stop the others now instead of letting them wait for the timeout.
      comm->abort(str("oboro: error: rank ", comm->rank(), " of ", comm->size(), ": ", e.what()), 1);
    }
    if (comm->rank() != 0) return;
    std::printf("trained %lld steps, last loss %.5f\nmodel: %s\ntext encoder: %s\ncheckpoint: %s\n", (long long)r.steps,
                r.final_loss, r.model_path.c_str(), r.text_encoder_path.c_str(), r.state_path.c_str());
  });
}

}  // namespace oboro::cli
