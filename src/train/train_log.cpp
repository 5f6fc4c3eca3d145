#include "train/train_log.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "train/plot.h"
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <utility>
#include <vector>

namespace oboro {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string log_path(const TrainConfig& cfg) { return (fs::path(cfg.output_dir) / "log.jsonl").string(); }

std::string fmt_time(double s) {
  int t = (int)std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}

}  // namespace

// Rewrites log.jsonl (atomically) with its records of steps 1..last_step, in order: the records an
// interrupted run wrote after its last checkpoint go, and so does a torn line.
static void keep_records_until(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  bool changed = false;
  while (std::getline(in, line)) {
    int64_t step = -1;
    try {
      step = json::parse(line).at("step").get<int64_t>();
    } catch (const json::exception&) {
    }
    if (step >= 1 && step <= last_step) kept += line + "\n";
    else changed = true;
  }
  if (changed) write_file_atomic(path, kept);
}

TrainLog::TrainLog(const TrainConfig& cfg, int64_t start_step) : cfg_(cfg), start_step_(start_step) {
  fs::create_directories(cfg.output_dir);
  if (start_step > 0) keep_records_until(log_path(cfg), start_step);
  log_.open(log_path(cfg), start_step > 0 ? std::ios::app : std::ios::trunc);
  if (!log_) fail(log_path(cfg), ": cannot open the training log for writing: check permissions and free space");
  tty_ = cfg.progress && isatty(2);
  start_ = std::chrono::steady_clock::now();
}

void TrainLog::record(const StepRecord& r) {
  json rec = {{"step", r.step},       {"loss", r.loss},   {"loss_ema", r.loss_ema},
              {"lr", r.lr},           {"grad_norm", r.grad_norm}, {"samples_per_s", r.samples_per_s},
              {"epoch", r.epoch},     {"skipped_images", r.skipped_images}};
  log_ << rec.dump() << "\n";
  log_.flush();
  if (!log_) fail(log_path(cfg_), ": writing the training log failed (is the disk full?): free some space and resume with --resume latest");
  if (!cfg_.progress) return;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = el / (double)(r.step - start_step_) * (double)(cfg_.max_train_steps - r.step);
  const int width = 24, filled = (int)(width * r.step / cfg_.max_train_steps);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  if (tty_ || r.step % 50 == 0 || r.step == cfg_.max_train_steps)
    std::fprintf(stderr, "%sstep %lld/%lld [%s] loss %.4f (avg %.4f) lr %.2e %.1f samples/s ETA %s%s", tty_ ? "\r" : "",
                 (long long)r.step, (long long)cfg_.max_train_steps, bar.c_str(), r.loss, r.loss_ema, r.lr,
                 r.samples_per_s, fmt_time(eta).c_str(), tty_ ? "   " : "\n");
}

void TrainLog::event(const std::string& json_line) {
  if (cfg_.progress && tty_) std::fprintf(stderr, "\n");
  log_ << json_line << "\n";
  log_.flush();
}

void TrainLog::end_progress() {
  if (tty_) std::fprintf(stderr, "\n");
}

void TrainLog::write_loss_plot() const {
  // The whole run's curve from the log (it survives resumes).
  std::ifstream f(log_path(cfg_));
  // A step logged again after a rollback replaces its first record; event lines become marks.
  std::map<double, double> by_step;
  std::vector<std::pair<double, std::string>> marks;
  for (std::string l; std::getline(f, l);) {
    try {
      json j = json::parse(l);
      if (j.contains("event")) {
        if (j.at("event") == "rollback") marks.emplace_back(j.at("step").get<double>(), "rollback");
        continue;
      }
      by_step[j.at("step").get<double>()] = j.at("loss").get<double>();
    } catch (...) {
    }
  }
  std::vector<std::pair<double, double>> pts(by_step.begin(), by_step.end());
  if (pts.size() >= 2)
    write_file_atomic((fs::path(cfg_.output_dir) / "loss.svg").string(),
                      plot_loss_svg(pts, cfg_.output_name + ": training loss (light: per step, dark: moving average)",
                                    marks));
}

}  // namespace oboro
