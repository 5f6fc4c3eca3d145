#include "train/run_folder.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace oboro {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The PID written in the lock file by its holder (0 when unreadable).
long lock_holder(int fd) {
  char buf[32] = {0};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::atol(buf) : 0;
}

bool is_checkpoint_name(const std::string& n) {
  long long s;
  return n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0 &&
         std::sscanf(n.c_str(), "step-%lld.safetensors", &s) == 1;
}

void remove_earlier_run(const TrainConfig& cfg) {
  const fs::path out = cfg.output_dir;
  std::error_code ec;
  for (const std::string& f : earlier_run_files(cfg)) fs::remove(f, ec);
  for (const char* n : {"loss.svg", "tokenizer.model", "tokenizer.vocab"}) fs::remove(out / n, ec);
  fs::remove_all(out / "samples", ec);
}

}  // namespace

std::string run_lock_path(const TrainConfig& cfg) { return (fs::path(cfg.output_dir) / ".oboro.lock").string(); }

RunFolder::RunFolder(const TrainConfig& cfg, bool resuming) {
  std::error_code ec;
  fs::create_directories(cfg.output_dir, ec);
  if (!fs::is_directory(cfg.output_dir))
    fail(cfg.output_dir, ": cannot create the output folder (output_dir): ", ec ? ec.message() : "not a directory");
  const std::string lock = run_lock_path(cfg);
  fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(lock, ": cannot create the output folder's lock file: ", std::strerror(errno), " (check permissions)");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    const long pid = lock_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (e == EWOULDBLOCK)
      fail(cfg.output_dir, ": another oboro run", pid > 0 ? str(" (PID ", pid, ")") : std::string(),
           " is training into this output folder: wait for it to finish or stop it, or give this run another output_dir");
    fail(lock, ": cannot lock the output folder: ", std::strerror(e));
  }
  const std::string me = std::to_string((long)::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != (ssize_t)me.size()) {
    // The PID only improves the refusal message of a second run; the lock itself is held.
  }
  for (const fs::path& d : {fs::path(cfg.output_dir), fs::path(state_dir(cfg)), fs::path(cfg.output_dir) / "samples"})
    if (int n = remove_stale_temps(d.string()))
      std::fprintf(stderr, "removed %d temp file(s) of an interrupted save in %s\n", n, d.string().c_str());
  if (resuming) return;
  const std::vector<std::string> earlier = earlier_run_files(cfg);
  if (earlier.empty()) return;
  if (!cfg.overwrite) {
    std::string names;
    for (size_t i = 0; i < earlier.size() && i < 3; ++i)
      names += (i ? ", " : "") + fs::path(earlier[i]).lexically_relative(cfg.output_dir).string();
    if (earlier.size() > 3) names += str(" and ", earlier.size() - 3, " more");
    ::close(fd_);
    fd_ = -1;
    fail(cfg.output_dir, ": holds an earlier run (", names, "): continue it with --resume latest, give this run "
         "another output_dir, or pass --overwrite to delete the earlier run's files");
  }
  std::fprintf(stderr, "--overwrite: removing the earlier run's files in %s\n", cfg.output_dir.c_str());
  remove_earlier_run(cfg);
}

RunFolder::~RunFolder() {
  if (fd_ < 0) return;
  if (::ftruncate(fd_, 0) != 0) {  // the PID is the holder's only while it holds the lock
  }
  ::close(fd_);  // closing releases the flock
}

std::vector<std::string> earlier_run_files(const TrainConfig& cfg) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const std::string& f : {model_path(cfg), text_encoder_path(cfg), (fs::path(cfg.output_dir) / "log.jsonl").string()})
    if (fs::exists(f, ec)) out.push_back(f);
  std::vector<std::string> steps;
  for (fs::directory_iterator it(state_dir(cfg), ec), end; !ec && it != end; it.increment(ec))
    if (is_checkpoint_name(it->path().filename().string())) steps.push_back(it->path().string());
  std::sort(steps.begin(), steps.end());
  out.insert(out.end(), steps.begin(), steps.end());
  return out;
}

const std::vector<std::string>& model_setting_keys() {
  static const std::vector<std::string> keys = {
      "pretrained_model", "model_preset", "head_schedule", "hidden_size",  "num_layers", "ffn_hidden_size",
      "codec",            "pixels_stride", "patch_size",   "text_encoder", "train_text_encoder", "vocab_size",
      "t5_d_model",       "t5_layers",     "t5_heads",     "t5_d_kv",      "t5_d_ff",    "max_token_length",
      "network_module",   "network_dim",   "network_alpha", "network_args"};
  return keys;
}

void check_resume_config(const std::string& state_path, const TrainConfig& cfg) {
  auto f = SafetensorsFile::open(state_path);
  auto it = f->metadata().find("oboro.train_state");
  if (it == f->metadata().end()) return;  // load_state reports it
  json old;
  try {
    old = json::parse(it->second).at("config");
  } catch (const json::exception&) {
    return;  // load_state reports it
  }
  const json now = json::parse(cfg.to_json());
  auto shown = [](const json& v) { return v.is_string() && v.get<std::string>().empty() ? std::string("\"\" (unset)") : v.dump(); };
  for (const std::string& k : model_setting_keys()) {
    if (!old.contains(k) || !now.contains(k) || old[k] == now[k]) continue;
    fail("--resume: the config sets ", k, " = ", shown(now[k]), " but the checkpoint ", state_path, " was trained with ",
         k, " = ", shown(old[k]), ": a resumed run keeps its model; set ", k, " back to ", shown(old[k]),
         " to resume, or start a new run (another output_dir, or --overwrite)");
  }
  const bool ema_old = old.value("ema_decay", 0.0) > 0, ema_now = cfg.ema_decay > 0;
  if (ema_old != ema_now)
    fail("--resume: the config ", ema_now ? "turns on" : "turns off", " the EMA (ema_decay = ", now.value("ema_decay", json()).dump(),
         ") but the checkpoint ", state_path, " was trained ", ema_old ? "with" : "without",
         " one: a resumed run keeps its EMA setting; set ema_decay back to ", old.value("ema_decay", json()).dump(),
         " to resume, or start a new run");
}

}  // namespace oboro
