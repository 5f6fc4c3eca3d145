#include "data/progress.h"

#include <algorithm>
#include <cstdio>
#include <unistd.h>

namespace oboro {

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(2) != 0) {
  t0_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

void Progress::add(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since >= (tty_ ? 0.2 : 10.0)) {
    last_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

void Progress::draw(bool final) {
  const double s = seconds();
  const double rate = s > 0 ? done_ / s : 0;
  char counts[160];
  if (total_ > 0) {
    const double f = (double)done_ / total_;
    const double eta = rate > 0 ? (total_ - done_) / rate : 0;
    std::snprintf(counts, sizeof counts, "%lld/%lld (%.0f%%) %.0f/s %s %.0fs", (long long)done_, (long long)total_,
                  100 * f, rate, final ? "in" : "eta", final ? s : eta);
  } else {
    std::snprintf(counts, sizeof counts, "%lld %.0f/s %.0fs", (long long)done_, rate, s);
  }
  std::string bar;
  if (tty_ && total_ > 0) {
    const int w = 24, fill = (int)(w * std::min(1.0, (double)done_ / total_));
    bar.assign(1, '[');
    bar.append((size_t)fill, '#');
    bar.append((size_t)(w - fill), '.');
    bar += "] ";
  }
  std::fprintf(stderr, "%s%s: %s%s%s%s", tty_ ? "\r\033[K" : "", label_.c_str(), bar.c_str(), counts,
               extra_.empty() ? "" : (", " + extra_).c_str(), (final || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace oboro
