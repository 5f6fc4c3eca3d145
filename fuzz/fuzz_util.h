// Shared helpers of the libFuzzer harnesses (docs/reliability.md, "Fuzzing"): a per-process scratch folder that is
// removed at exit, file writing, splitting one input into several files, and the rule that an
// oboro::Error is a normal outcome (the parser refused the input with a clear message) while any other
// exception, crash, leak or sanitizer report is a finding.
#pragma once
#include "core/error.h"
#include "core/threads.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace oboro::fuzz {

namespace fs = std::filesystem;

// stderr as it was at startup: scripts/fuzz.sh runs with -close_fd_mask=3 so the parsers' warnings do
// not slow fuzzing down, and the harnesses' own diagnostics go here.
inline int& diag_fd() {
  static int fd = 2;
  return fd;
}

// $TMPDIR/oboro-fuzz-<name>-XXXXXX, made on first use and removed when the process exits normally
// (a crashing run leaves it: scripts/fuzz.sh gives each harness its own TMPDIR and removes it).
class ScratchDir {
 public:
  static const fs::path& get(const char* name) {
    static ScratchDir d(name);
    return d.path_;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }

 private:
  explicit ScratchDir(const char* name) {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/oboro-fuzz-" + name + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) {
      dprintf(diag_fd(), "oboro fuzz: mkdtemp %s failed\n", tmpl.c_str());
      std::abort();
    }
    path_ = buf.data();
  }
  fs::path path_;
};

inline void write_file(const fs::path& p, std::string_view bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), (std::streamsize)bytes.size());
  if (!f) {
    dprintf(diag_fd(), "oboro fuzz: cannot write %s\n", p.c_str());
    std::abort();
  }
}

// Removes everything inside `dir` except the names in `keep` (each run starts from the same files).
inline void clear_dir(const fs::path& dir, const std::vector<std::string>& keep = {}) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    bool k = false;
    for (const auto& x : keep) k = k || n == x;
    if (!k) fs::remove_all(e.path(), ec);
  }
}

// Splits `data` at each occurrence of `sep` (inputs that stand for several files).
inline std::vector<std::string_view> split(std::string_view data, std::string_view sep, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    size_t p = data.find(sep);
    if (p == std::string_view::npos) break;
    parts.push_back(data.substr(0, p));
    data.remove_prefix(p + sep.size());
  }
  parts.push_back(data);
  return parts;
}

// A 2x2 RGB PNG (75 bytes). fuzz/make_corpus.sh writes the same bytes and lists their sha256 in the
// manifest.jsonl seeds, so seeds for the harnesses that use it as a dataset image get past the hash check.
inline const std::string_view kTinyPng(
    "\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x02\x00\x00\x00\xfd\xd4\x9a\x73"
    "\x00\x00\x00\x12IDAT\x78\xda\x63\x38\x21\x27\x27\x77\x42\x8e\x01\x42\x01\x00\x1d\xd2\x04\x11\x25\x4e\xcf\xa7"
    "\x00\x00\x00\x00IEND\xae\x42\x60\x82",
    75);

// The one-time setup every harness shares (call from LLVMFuzzerInitialize, which runs before libFuzzer
// closes stderr): one worker thread (fuzzing runs one job per core), the diagnostics fd.
inline void init_common() {
  set_num_threads(1);
  int fd = ::dup(2);
  if (fd >= 0) diag_fd() = fd;
}

// Runs `body`; an oboro::Error (the parser's clear refusal) is an accepted outcome. Anything else
// propagates and libFuzzer reports it (uncaught exception -> abort -> crash + reproducer).
// `check(message)` may abort on a message that breaks the parser's documented promise (e.g. one line
// starting with the file path).
template <class Body>
void accept_errors(Body&& body) {
  try {
    body();
  } catch (const Error&) {
  }
}
template <class Body, class Check>
void accept_errors(Body&& body, Check&& check) {
  try {
    body();
  } catch (const Error& e) {
    check(std::string_view(e.what()));
  }
}

// Aborts (a finding) when `msg` is not one line starting with `prefix`.
inline void require_one_line(std::string_view msg, std::string_view prefix) {
  if (msg.find('\n') != std::string_view::npos || msg.substr(0, prefix.size()) != prefix) {
    dprintf(diag_fd(), "oboro fuzz: error message is not one line starting with \"%.*s\":\n%.*s\n",
            (int)prefix.size(), prefix.data(), (int)msg.size(), msg.data());
    std::abort();
  }
}

}  // namespace oboro::fuzz
