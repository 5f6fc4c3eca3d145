// Progress on stderr for long data jobs: a redrawn bar on a terminal, a plain line every 10 s
// otherwise (logs stay readable). Not thread-safe: call add() from one thread.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace oboro {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  ~Progress();
  void add(int64_t n = 1);
  void set_total(int64_t total) { total_ = total; }
  void note(const std::string& extra) { extra_ = extra; }  // shown after the counts
  void finish();  // final line (also called by the destructor)
  int64_t done() const { return done_; }
  double seconds() const;

 private:
  void draw(bool final);
  std::string label_, extra_;
  int64_t total_ = 0, done_ = 0;
  bool enabled_ = true, tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point t0_, last_;
};

}  // namespace oboro
