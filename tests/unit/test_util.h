// Helpers shared by the unit tests: the message of the oboro::Error a call throws, and a per-process scratch
// folder (removed and recreated on first use, so reruns start clean).
#pragma once
#include "core/error.h"
#include "models/t5.h"
#include "models/text_encoder.h"
#include "models/tokenizer.h"
#include "ops/backend.h"

#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace oboro::test {

// The what() of the oboro::Error `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The PID of a process that has just exited (a fork that exits at once, reaped): no process has it, for now.
inline long dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  ::waitpid(p, nullptr, 0);
  return (long)p;
}

// $TMPDIR/<prefix>_<pid>: created fresh the first time it is asked for in this process.
inline std::filesystem::path process_tmpdir(const std::string& prefix) {
  namespace fs = std::filesystem;
  fs::path p = fs::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()));
  static std::set<std::string> made;
  if (made.insert(prefix).second) {
    fs::remove_all(p);
    fs::create_directories(p);
  }
  return p;
}

// A self-contained tiny text encoder (T5 v1.1 structure, a 40-piece vocabulary trained into `dir`/voc.model,
// the tokenizer in the metadata) written to `path`; returns `path`.
inline std::string write_tiny_text_encoder(const std::filesystem::path& path, const std::filesystem::path& dir) {
  std::vector<std::string> lines;
  const char* w[] = {"a", "red", "green", "blue", "square", "circle", "on", "left", "right", "big", "small", "cat"};
  for (int i = 0; i < 300; ++i) lines.push_back(std::string(w[i % 12]) + " " + w[(i / 12) % 12] + " " + w[(i * 7) % 12]);
  const std::string prefix = (dir / "voc").string();
  train_vocab(lines, 40, prefix);
  T5Config c;
  c.vocab_size = 64;
  c.d_model = 16;
  c.d_kv = 8;
  c.num_heads = 2;
  c.d_ff = 24;
  c.num_layers = 1;
  auto t5 = std::make_unique<T5Encoder>(c, cpu_backend());
  t5->init_weights(3);
  TextEncoder te(Tokenizer::load(prefix + ".model"), std::move(t5));
  te.save(path.string());
  return path.string();
}

}  // namespace oboro::test
