#include "common/thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace tessera {
namespace {

int default_threads() {
  if (const char* env = std::getenv("TESSERA_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

thread_local bool t_in_pool = false;

class Pool {
 public:
  explicit Pool(int n) { start(n); }
  ~Pool() { stop(); }

  int size() const { return nthreads_; }

  void resize(int n) {
    std::lock_guard<std::mutex> run_lock(run_mu_);
    stop();
    start(n);
  }

  void run(int64_t n_tasks, TaskFn fn, void* ctx) {
    std::unique_lock<std::mutex> run_lock(run_mu_, std::try_to_lock);
    if (t_in_pool || !run_lock.owns_lock() || nthreads_ <= 1) {
      for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t);
      return;
    }
    fn_ = fn;
    ctx_ = ctx;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    active_.store((int)workers_.size(), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    t_in_pool = true;
    work();
    t_in_pool = false;
    while (active_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

 private:
  void start(int n) {
    nthreads_ = n < 1 ? 1 : n;
    quit_ = false;
    // Workers start from the current generation, so a run() issued before a worker is scheduled
    // for the first time is still seen by it.
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 1; i < nthreads_; i++) workers_.emplace_back([this, gen] { loop(gen); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void work() {
    for (;;) {
      int64_t t = next_.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_tasks_) break;
      fn_(ctx_, t);
    }
  }

  void loop(uint64_t seen) {
    t_in_pool = true;
    for (;;) {
      // Spin briefly (kernels come in quick succession during decode), then sleep.
      uint64_t g = seen;
      for (int spin = 0; spin < 20000; spin++) {
        g = generation_.load(std::memory_order_acquire);
        if (g != seen) break;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (quit_) return;
      work();
      active_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one kernel at a time owns the pool
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> active_{0};
  bool quit_ = false;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_tasks_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool(default_threads());  // leaked on purpose: no join at process exit
  return *p;
}

}  // namespace

void pool_run(int64_t n_tasks, TaskFn fn, void* ctx) { pool().run(n_tasks, fn, ctx); }
int pool_threads() { return pool().size(); }
void pool_set_threads(int n) { pool().resize(n); }

}  // namespace tessera
