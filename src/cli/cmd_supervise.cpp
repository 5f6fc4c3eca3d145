// `oboro supervise [options] -- COMMAND...`: runs a training command (`oboro train ...` or `mpirun -np N oboro
// train ...`) and restarts it from the last complete checkpoint (`--resume latest` added) after a crash, a kill
// or a hang, with a restart budget and exponential back-off (docs/distributed.md, "Supervisor").
//   hang  = the heartbeat file (output_dir/log.jsonl: one line per step) has not grown for --hang-timeout s;
//           the whole process group of the command (mpirun and its ranks) is then stopped (TERM, then KILL).
//   log   = one line on stderr and one JSON line in output_dir/supervise.jsonl per start, exit and restart.
#include "cli/commands.h"
#include "core/error.h"
#include "train/notify.h"
#include "train/run_folder.h"
#include "train/train_config.h"
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

namespace oboro::cli {

namespace {

namespace fs = std::filesystem;
using clock_t_ = std::chrono::steady_clock;

struct SuperviseOpts {
  int max_restarts = 10;
  double backoff = 10, max_backoff = 600;  // seconds: the first wait, doubled per restart up to max_backoff
  double hang_timeout = 1800;              // seconds without heartbeat growth; 0 = no hang detection
  std::string heartbeat;                   // default: output_dir/log.jsonl of the command's --config
  std::string notify_url;
  std::vector<std::string> command;
};

volatile sig_atomic_t g_stop_signal = 0;
void on_signal(int s) { g_stop_signal = s; }

// The value after `flag` in `cmd` ("" when absent).
std::string arg_after(const std::vector<std::string>& cmd, const std::string& flag) {
  for (size_t i = 0; i + 1 < cmd.size(); ++i)
    if (cmd[i] == flag || (flag == "--config" && cmd[i] == "--config_file")) return cmd[i + 1];
  return "";
}

intmax_t file_size_or(const std::string& p, intmax_t none) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? none : (intmax_t)n;
}

// Stops the process group `pg`: SIGTERM, then SIGKILL after 10 s.
void stop_group(pid_t pg, pid_t child, int& status) {
  ::kill(-pg, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    if (::waitpid(child, &status, WNOHANG) == child) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(-pg, SIGKILL);
  ::waitpid(child, &status, 0);
}

class Supervisor {
 public:
  explicit Supervisor(SuperviseOpts o) : o_(std::move(o)) {
    const std::string config = arg_after(o_.command, "--config");
    if (!config.empty()) {
      const TrainConfig cfg = TrainConfig::from_toml(config);
      output_dir_ = cfg.output_dir;
      if (o_.notify_url.empty()) o_.notify_url = cfg.notify_url;
      // A new run into a folder that holds no earlier run: files found there on a restart are this supervised
      // run's own, so a restart before its first checkpoint starts again with --overwrite (train refuses to write
      // over an earlier run otherwise). A folder that already held a run is never overwritten by the supervisor.
      const bool new_run = arg_after(o_.command, "--resume").empty();
      const bool overwrite = std::find(o_.command.begin(), o_.command.end(), "--overwrite") != o_.command.end();
      if (new_run && !overwrite && !earlier_run_files(cfg).empty())
        fail("supervise: ", cfg.output_dir, " holds an earlier run: add --resume latest to the supervised command to "
             "continue it, give the run another output_dir, or add --overwrite to delete the earlier run's files");
      own_folder_ = new_run && earlier_run_files(cfg).empty();
    }
    if (o_.heartbeat.empty() && !output_dir_.empty()) o_.heartbeat = (fs::path(output_dir_) / "log.jsonl").string();
    if (o_.hang_timeout > 0 && o_.heartbeat.empty())
      fail("supervise: no heartbeat file: pass --heartbeat FILE (e.g. output_dir/log.jsonl) or a command with "
           "--config, or --hang-timeout 0 to watch only for exits");
  }

  int run() {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    double wait = o_.backoff;
    for (int attempt = 0;; ++attempt) {
      std::vector<std::string> cmd = o_.command;
      if (attempt > 0 && has_checkpoint() && arg_after(cmd, "--resume").empty())
        cmd.insert(cmd.end(), {"--resume", "latest"});
      else if (attempt > 0 && own_folder_ && std::find(cmd.begin(), cmd.end(), "--overwrite") == cmd.end())
        cmd.push_back("--overwrite");  // killed before its first checkpoint: start this run again
      event("start", attempt, cmd_line(cmd), 0);
      const auto [code, why] = run_once(cmd);
      if (g_stop_signal) {
        event("stopped", attempt, str("supervise received signal ", (int)g_stop_signal), code);
        return 128 + g_stop_signal;
      }
      if (code == 0) {
        event("finished", attempt, "the command exited 0", 0);
        return 0;
      }
      if (attempt >= o_.max_restarts) {
        event("gave_up", attempt, str(why, "; the restart budget (--max-restarts ", o_.max_restarts, ") is spent"), code);
        std::fprintf(stderr, "oboro supervise: error: the command failed %d times (last: %s); giving up — see %s\n",
                     attempt + 1, why.c_str(), log_path().empty() ? "the output above" : log_path().c_str());
        return 1;
      }
      event("restart", attempt + 1, str(why, "; restarting in ", wait, " s"), code);
      for (double t = 0; t < wait && !g_stop_signal; t += 0.1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (g_stop_signal) return 128 + g_stop_signal;
      wait = std::min(o_.max_backoff, std::max(wait * 2, 1.0));
    }
  }

 private:
  bool has_checkpoint() const {
    if (output_dir_.empty()) return true;  // unknown: let `--resume latest` decide
    std::error_code ec;
    for (auto& e : fs::directory_iterator(fs::path(output_dir_) / "state", ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("step-", 0) == 0 && n.size() > 12 && n.substr(n.size() - 12) == ".safetensors") return true;
    }
    return false;
  }

  // Runs `cmd` in its own process group; returns its exit code (128 + signal) and why it ended.
  std::pair<int, std::string> run_once(const std::vector<std::string>& cmd) {
    std::vector<char*> argv;
    for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t child = ::fork();
    if (child < 0) fail("supervise: fork failed");
    if (child == 0) {
      ::setpgid(0, 0);
      ::execvp(argv[0], argv.data());
      std::fprintf(stderr, "oboro supervise: cannot run %s: %s\n", argv[0], std::strerror(errno));
      std::_Exit(127);
    }
    ::setpgid(child, child);
    intmax_t beat = file_size_or(o_.heartbeat, -1);
    auto last_beat = clock_t_::now();
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(child, &status, WNOHANG);
      if (r == child) break;
      if (g_stop_signal) {
        stop_group(child, child, status);
        break;
      }
      const intmax_t now = file_size_or(o_.heartbeat, -1);
      if (now != beat) beat = now, last_beat = clock_t_::now();
      const double quiet = std::chrono::duration<double>(clock_t_::now() - last_beat).count();
      if (o_.hang_timeout > 0 && quiet > o_.hang_timeout) {
        stop_group(child, child, status);
        return {124, str("hang: ", o_.heartbeat, " did not grow for ", o_.hang_timeout, " s (stopped)")};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (WIFEXITED(status)) return {WEXITSTATUS(status), str("exit code ", WEXITSTATUS(status))};
    if (WIFSIGNALED(status)) return {128 + WTERMSIG(status), str("killed by signal ", WTERMSIG(status))};
    return {1, "ended abnormally"};
  }

  std::string log_path() const {
    return output_dir_.empty() ? "" : (fs::path(output_dir_) / "supervise.jsonl").string();
  }

  static std::string cmd_line(const std::vector<std::string>& cmd) {
    std::string s;
    for (const std::string& a : cmd) s += (s.empty() ? "" : " ") + a;
    return s;
  }

  // One stderr line, one JSON line in output_dir/supervise.jsonl, and a notification for restarts and failures.
  void event(const char* kind, int attempt, const std::string& detail, int code) {
    std::fprintf(stderr, "oboro supervise: %s (attempt %d): %s\n", kind, attempt + 1, detail.c_str());
    nlohmann::json j = {{"event", kind}, {"attempt", attempt + 1}, {"detail", detail}, {"exit_code", code},
                        {"time", (int64_t)std::time(nullptr)}};
    if (!log_path().empty()) {
      fs::create_directories(output_dir_);
      std::ofstream(log_path(), std::ios::app) << j.dump() << "\n";
    }
    const std::string k = kind;
    if (k == "restart" || k == "gave_up") notify_event(o_.notify_url, k == "restart" ? "restart" : "failure", j);
  }

  SuperviseOpts o_;
  std::string output_dir_;
  bool own_folder_ = false;  // output_dir held no earlier run when supervision began (see the constructor)
};

}  // namespace

int run_supervised(std::vector<std::string> command) {
  SuperviseOpts o;
  o.command = std::move(command);
  return Supervisor(std::move(o)).run();
}

void register_supervise(CLI::App& app) {
  auto o = std::make_shared<SuperviseOpts>();
  auto* c = app.add_subcommand("supervise",
                               "Run a training command and restart it from the last complete checkpoint after a crash, "
                               "kill or hang: oboro supervise [options] -- COMMAND...");
  c->add_option("--max-restarts", o->max_restarts, "restart budget (default 10)")->check(CLI::NonNegativeNumber);
  c->add_option("--backoff", o->backoff, "seconds before the first restart, doubled each time (default 10)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-backoff", o->max_backoff, "longest wait between restarts in seconds (default 600)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--hang-timeout", o->hang_timeout,
                "seconds without heartbeat growth that count as a hang (default 1800; 0 = off)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--heartbeat", o->heartbeat, "file whose growth shows progress (default: output_dir/log.jsonl)");
  c->add_option("--notify-url", o->notify_url, "JSON POST on each restart and on giving up (default: notify_url)");
  c->add_option("command", o->command, "the command to run (after --)")->required();
  c->callback([o] {
    const int rc = Supervisor(*o).run();
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace oboro::cli
