// The server's job queue: one worker thread runs the jobs one at a time (one generation worker per device), in
// submission order; a bounded queue (full → the caller answers 429); cancel (a queued job is removed at once, a
// running one stops at its next sampling step); per-job progress with a small preview image; waiters (SSE streams,
// synchronous requests) block on a version number that changes whenever a job does. The generation itself is a
// Runner passed in, so the queue is tested without a model.
#pragma once
#include "flow/generate.h"
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace oboro::serve {

enum class JobStatus { Queued, Running, Completed, Failed, Cancelled };
const char* status_name(JobStatus s);

// One written image: its file under the outputs folder (e.g. "2025-01-31/00012-42.png"), seed and infotext.
struct ResultImage {
  std::string file;
  uint64_t seed = 0;
  std::string infotext;
};

struct Job {
  std::string id;
  std::string kind;              // "txt2img" | "img2img"
  GenerateRequest rq;            // model resolved to a path by the server
  std::string model;             // its catalogue name
  nlohmann::json parameters;     // A1111 `parameters` echo
  double created = 0;            // unix seconds
  std::atomic<bool> cancel{false};
  // Guarded by the queue's mutex (read them through JobQueue::snapshot).
  JobStatus status = JobStatus::Queued;
  double started = 0, finished = 0;
  int step = 0, total = 0, pass = 0, batch = 0, n_batches = 1;
  double fraction = 0;           // of the whole job
  std::string preview_b64;       // latest preview (PNG, base64)
  int preview_no = 0;            // how many previews so far
  std::vector<ResultImage> images;
  std::string error;
  uint64_t version = 0;          // bumped on every change
};

// Runs one job: generate, write the images, return them. `on_step` reports progress (call it from the runner's
// generate hooks). Throws Cancelled when the job's cancel flag stopped it, oboro::Error (or any exception) on failure.
using Runner = std::function<std::vector<ResultImage>(Job& job, const std::function<void(const StepEvent&)>& on_step)>;

struct QueueStats {
  uint64_t submitted = 0, completed = 0, failed = 0, cancelled = 0, rejected = 0, images = 0;
  double image_seconds = 0;      // generation time of the completed jobs
  size_t queued = 0;
  bool running = false;
};

class JobQueue {
 public:
  // max_queue: queued (not running) jobs at most; keep_finished: finished jobs remembered for GET (oldest dropped).
  JobQueue(Runner run, size_t max_queue, size_t keep_finished = 4096, int preview_every = 0, int preview_side = 128);
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Queues the job (its id is assigned here); false when the queue is full or shutting down.
  bool submit(const std::shared_ptr<Job>& job);
  std::shared_ptr<Job> find(const std::string& id) const;
  enum class CancelResult { Unknown, Removed, Stopping, AlreadyFinished };
  CancelResult cancel(const std::string& id);
  // Stops the running job (A1111's interrupt); false when none runs.
  bool interrupt();
  // The job as JSON: id, status, position (0 = running, 1.. = queued, absent when finished), progress, step/total,
  // eta_relative, preview (only with_preview), images (files, seeds, infotexts), error, parameters, times.
  nlohmann::json snapshot(const Job& job, bool with_preview = false) const;
  // Blocks until the job's version differs from `seen`, the job queue shuts down, or timeout_s passes.
  uint64_t wait(const Job& job, uint64_t seen, double timeout_s) const;
  std::shared_ptr<Job> running() const;
  std::vector<std::shared_ptr<Job>> active() const;  // running + queued, in order
  QueueStats stats() const;
  // Seconds a client should wait before submitting again (from the queue length and the seconds per image).
  int retry_after() const;
  // Stop accepting, cancel queued jobs and the running one, wake every waiter, join the worker. Idempotent.
  void shutdown();
  bool stopping() const { return stopping_.load(); }

 private:
  void worker();
  void on_step(Job& job, const StepEvent& ev);
  void finish(Job& job, JobStatus st, std::vector<ResultImage> images, const std::string& error);
  void touch(Job& job);  // version++ (lock held)
  int position_locked(const Job& job) const;

  Runner run_;
  size_t max_queue_, keep_finished_;
  int preview_every_, preview_side_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_, work_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> running_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::string> finished_order_;
  QueueStats stats_;
  std::atomic<bool> stopping_{false};
  std::mutex join_mu_;
  std::thread thread_;
};

double unix_now();

}  // namespace oboro::serve
