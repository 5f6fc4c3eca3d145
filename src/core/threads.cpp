#include "core/threads.h"
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

extern "C" void openblas_set_num_threads(int);

namespace oboro {
namespace {

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return (int)workers_.size() + 1; }

  void resize(int n) {
    stop();
    n = std::max(1, n);
    quit_ = false;
    const uint64_t start = gen_;  // new workers must not pick up the last (finished) job
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this, i, start] { loop(i + 1, start); });
  }

  void run(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
    int nt = size();
    int64_t chunks = std::min<int64_t>(nt, std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
    if (chunks <= 1 || nested_) { fn(0, n); return; }
    std::unique_lock<std::mutex> run_lock(run_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_ = n;
      chunks_ = chunks;
      pending_ = (int)chunks - 1;
      ++gen_;
    }
    cv_.notify_all();
    std::exception_ptr mine;
    nested_ = true;
    try {
      fn(0, n / chunks);  // chunk 0 on the calling thread
    } catch (...) {
      mine = std::current_exception();
    }
    nested_ = false;
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });  // workers may still use fn: wait even on error
    fn_ = nullptr;
    std::exception_ptr err = mine ? mine : worker_error_;
    worker_error_ = nullptr;
    lk.unlock();
    if (err) std::rethrow_exception(err);
  }

 private:
  void loop(int id, uint64_t seen) {
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn;
      int64_t n, chunks;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return quit_ || gen_ != seen; });
        if (quit_) return;
        seen = gen_;
        fn = fn_;
        n = n_;
        chunks = chunks_;
      }
      if (id < chunks) {
        std::exception_ptr err;
        nested_ = true;
        try {
          (*fn)(n * id / chunks, n * (id + 1) / chunks);
        } catch (...) {
          err = std::current_exception();
        }
        nested_ = false;
        std::lock_guard<std::mutex> lk(mu_);
        if (err && !worker_error_) worker_error_ = err;
        if (--pending_ == 0) done_cv_.notify_all();
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunks_ = 0;
  int pending_ = 0;
  uint64_t gen_ = 0;
  bool quit_ = false;
  std::exception_ptr worker_error_;
  static thread_local bool nested_;
};
thread_local bool Pool::nested_ = false;

int default_threads() {
  if (const char* e = std::getenv("OBORO_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  static Pool p = [] {
    openblas_set_num_threads(1);  // GEMMs are split over our pool (ops/cpu/cpu_backend.cpp)
    return Pool(default_threads());
  }();
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  pool().resize(n);
  openblas_set_num_threads(1);  // GEMMs are split over our pool (ops/cpu/cpu_backend.cpp)
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  pool().run(n, fn, grain);
}

}  // namespace oboro
