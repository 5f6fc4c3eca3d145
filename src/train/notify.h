// Run notifications (`notify_url` in the config, `--notify-url` on the command line): a JSON POST per event —
// start, checkpoint, spike, rollback, restart (from `oboro supervise`), failure, finish — for a chat bot or a
// dashboard. Sending never stops training: a short timeout (2 s to connect, 5 s in all), and one warning line
// on the first failure (later failures are counted silently and reported at the end).
//
// The body: {"event": ..., "time": unix seconds, plus the event's fields}; the trainer adds "run" (output_name),
// "output_dir", "step", "max_train_steps", "loss", "eta_s" and "last_sample" (the newest sample grid, "" if none).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace oboro {

class Notifier {
 public:
  explicit Notifier(std::string url) : url_(std::move(url)) {}
  bool enabled() const { return !url_.empty(); }
  // POSTs {"event": event, "time": …} + fields; never throws.
  void send(const std::string& event, nlohmann::json fields);
  int failures() const { return failures_; }

 private:
  std::string url_;
  int failures_ = 0;
};

// One event to `url` ("" = nothing), for callers without a Notifier (the supervisor).
void notify_event(const std::string& url, const std::string& event, const nlohmann::json& fields);

}  // namespace oboro
