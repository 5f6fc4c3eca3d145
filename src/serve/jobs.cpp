#include "serve/jobs.h"
#include "core/base64.h"
#include "core/error.h"
#include "io/image.h"
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace oboro::serve {

using nlohmann::json;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const char* status_name(JobStatus s) {
  switch (s) {
    case JobStatus::Queued: return "queued";
    case JobStatus::Running: return "running";
    case JobStatus::Completed: return "completed";
    case JobStatus::Failed: return "failed";
    case JobStatus::Cancelled: return "cancelled";
  }
  return "unknown";
}

namespace {
std::string new_id() {
  static std::mutex mu;
  static std::mt19937_64 gen{std::random_device{}() ^ (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count()};
  std::lock_guard<std::mutex> lock(mu);
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)gen());
  return buf;
}
bool finished(JobStatus s) { return s == JobStatus::Completed || s == JobStatus::Failed || s == JobStatus::Cancelled; }
}  // namespace

JobQueue::JobQueue(Runner run, size_t max_queue, size_t keep_finished, int preview_every, int preview_side)
    : run_(std::move(run)), max_queue_(max_queue), keep_finished_(keep_finished), preview_every_(preview_every),
      preview_side_(preview_side) {
  thread_ = std::thread([this] { worker(); });
}

JobQueue::~JobQueue() { shutdown(); }

void JobQueue::touch(Job& job) {
  ++job.version;
  changed_.notify_all();
}

bool JobQueue::submit(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || queue_.size() >= max_queue_) {
    ++stats_.rejected;
    return false;
  }
  job->id = new_id();
  job->created = unix_now();
  job->status = JobStatus::Queued;
  queue_.push_back(job);
  jobs_[job->id] = job;
  ++stats_.submitted;
  work_.notify_one();
  return true;
}

std::shared_ptr<Job> JobQueue::find(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

JobQueue::CancelResult JobQueue::cancel(const std::string& id) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return CancelResult::Unknown;
  auto job = it->second;
  if (finished(job->status)) return CancelResult::AlreadyFinished;
  job->cancel = true;
  if (job->status == JobStatus::Running) return CancelResult::Stopping;
  for (auto q = queue_.begin(); q != queue_.end(); ++q)
    if (*q == job) { queue_.erase(q); break; }
  for (auto& q : queue_) touch(*q);  // positions moved
  lock.unlock();
  finish(*job, JobStatus::Cancelled, {}, "");
  return CancelResult::Removed;
}

bool JobQueue::interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!running_) return false;
  running_->cancel = true;
  return true;
}

int JobQueue::position_locked(const Job& job) const {
  if (job.status == JobStatus::Running) return 0;
  for (size_t i = 0; i < queue_.size(); ++i)
    if (queue_[i].get() == &job) return (int)i + 1;
  return -1;
}

json JobQueue::snapshot(const Job& job, bool with_preview) const {
  std::lock_guard<std::mutex> lock(mu_);
  json j = {{"id", job.id}, {"status", status_name(job.status)}, {"kind", job.kind}, {"model", job.model},
            {"created", job.created}, {"progress", job.fraction}, {"step", job.step}, {"total", job.total},
            {"pass", job.pass}, {"batch", job.batch}, {"n_batches", job.n_batches}, {"parameters", job.parameters},
            {"version", job.version}, {"preview_no", job.preview_no}};
  const int pos = position_locked(job);
  if (pos >= 0) j["position"] = pos;
  if (job.started > 0) j["started"] = job.started;
  if (job.finished > 0) j["finished"] = job.finished;
  if (job.status == JobStatus::Running && job.fraction > 0) {
    const double el = unix_now() - job.started;
    j["eta_relative"] = el / job.fraction * (1 - job.fraction);
  }
  if (with_preview && !job.preview_b64.empty()) j["preview"] = job.preview_b64;
  json imgs = json::array();
  for (const auto& im : job.images)
    imgs.push_back({{"file", im.file}, {"url", "/oboro/v1/images/" + im.file}, {"seed", im.seed}, {"infotext", im.infotext}});
  j["images"] = imgs;
  if (!job.error.empty()) j["error"] = job.error;
  return j;
}

uint64_t JobQueue::wait(const Job& job, uint64_t seen, double timeout_s) const {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, std::chrono::duration<double>(timeout_s),
                    [&] { return job.version != seen || stopping_.load(); });
  return job.version;
}

std::shared_ptr<Job> JobQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

std::vector<std::shared_ptr<Job>> JobQueue::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Job>> v;
  if (running_) v.push_back(running_);
  v.insert(v.end(), queue_.begin(), queue_.end());
  return v;
}

QueueStats JobQueue::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  QueueStats s = stats_;
  s.queued = queue_.size();
  s.running = running_ != nullptr;
  return s;
}

int JobQueue::retry_after() const {
  const QueueStats s = stats();
  const double per = s.images > 0 ? s.image_seconds / (double)s.images : 1.0;
  return std::max(1, (int)std::ceil(per * std::max<size_t>(1, s.queued / 2)));
}

void JobQueue::on_step(Job& job, const StepEvent& ev) {
  // The preview is made outside the lock (it downloads and rearranges the latents).
  const int every = preview_every_ > 0 ? preview_every_ : std::max(1, ev.total / 8);
  std::string b64;
  if (ev.preview && (ev.step % every == 0 || ev.step == ev.total)) b64 = base64_encode(encode_png(ev.preview(preview_side_)));
  std::lock_guard<std::mutex> lock(mu_);
  job.step = ev.step;
  job.total = ev.total;
  job.pass = ev.pass;
  job.batch = ev.batch;
  job.n_batches = ev.n_batches;
  const int passes = job.rq.hires() ? 2 : 1;
  const double in_batch = (ev.pass + (double)ev.step / std::max(1, ev.total)) / passes;
  job.fraction = std::min(1.0, (ev.batch + in_batch) / std::max(1, ev.n_batches));
  if (!b64.empty()) {
    job.preview_b64 = std::move(b64);
    ++job.preview_no;
  }
  touch(job);
}

void JobQueue::finish(Job& job, JobStatus st, std::vector<ResultImage> images, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  job.status = st;
  job.finished = unix_now();
  job.images = std::move(images);
  job.error = error;
  job.rq.init_image_data = Image{};  // the decoded upload and the last preview are not needed any more
  job.preview_b64.clear();
  job.preview_b64.shrink_to_fit();
  if (st == JobStatus::Completed) {
    job.fraction = 1;
    ++stats_.completed;
    stats_.images += job.images.size();
    stats_.image_seconds += job.finished - job.started;
  } else if (st == JobStatus::Failed) {
    ++stats_.failed;
  } else {
    ++stats_.cancelled;
  }
  finished_order_.push_back(job.id);
  while (finished_order_.size() > keep_finished_) {
    jobs_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
  touch(job);
}

void JobQueue::worker() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] { return stopping_.load() || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      running_ = job;
      job->status = JobStatus::Running;
      job->started = unix_now();
      touch(*job);
      for (auto& q : queue_) touch(*q);  // positions moved
    }
    JobStatus st = JobStatus::Completed;
    std::vector<ResultImage> images;
    std::string error;
    try {
      images = run_(*job, [&](const StepEvent& ev) { on_step(*job, ev); });
      if (job->cancel && images.empty()) st = JobStatus::Cancelled;
    } catch (const Cancelled&) {
      st = JobStatus::Cancelled;
    } catch (const std::bad_alloc&) {
      st = JobStatus::Failed;
      error = "out of memory: use a smaller size or batch";
    } catch (const std::exception& e) {
      st = JobStatus::Failed;
      error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_.reset();
    }
    finish(*job, st, std::move(images), error);
  }
}

void JobQueue::shutdown() {
  std::vector<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_.exchange(true)) {
      dropped.assign(queue_.begin(), queue_.end());
      queue_.clear();
      if (running_) running_->cancel = true;
    }
    work_.notify_all();
    changed_.notify_all();
  }
  for (auto& j : dropped) {
    j->cancel = true;
    finish(*j, JobStatus::Cancelled, {}, "the server is shutting down");
  }
  std::lock_guard<std::mutex> join_lock(join_mu_);
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

}  // namespace oboro::serve
