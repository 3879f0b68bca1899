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

// Jobs are claimed through one 64-bit word: job tag (high 32 bits) | next task index (low 32).
// The caller returns as soon as every task has *finished*, without waiting for workers to check
// in, so a worker that the OS has descheduled (another process on a busy core) never stalls the
// caller; it simply finds the job over when it runs. A claim succeeds only while the word still
// carries the worker's job tag, and a job's parameters (in slot tag & 1) are only rewritten two
// jobs later, so a late worker can never run a stale or half-written job.
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
    if (t_in_pool || !run_lock.owns_lock() || nthreads_ <= 1 || n_tasks >= (int64_t(1) << 31)) {
      for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t);
      return;
    }
    uint32_t tag = ++tag_;
    Job& job = jobs_[tag & 1];
    job.fn = fn;
    job.ctx = ctx;
    job.n = n_tasks;
    job.done.store(0, std::memory_order_relaxed);
    state_.store((uint64_t)tag << 32, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    t_in_pool = true;
    work(tag);
    t_in_pool = false;
    for (int spin = 0; job.done.load(std::memory_order_acquire) != n_tasks; spin++) {
      if (spin < 4096) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  struct Job {
    TaskFn fn = nullptr;
    void* ctx = nullptr;
    int64_t n = 0;
    std::atomic<int64_t> done{0};
  };

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

  // Claims and runs tasks of job `tag` until none are left or the job is over.
  void work(uint32_t tag) {
    Job& job = jobs_[tag & 1];
    for (;;) {
      uint64_t v = state_.load(std::memory_order_acquire);
      if ((uint32_t)(v >> 32) != tag) return;
      int64_t idx = (int64_t)(v & 0xffffffffu);
      if (idx >= job.n) return;
      if (!state_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
      job.fn(job.ctx, idx);
      job.done.fetch_add(1, std::memory_order_acq_rel);
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
      work((uint32_t)(state_.load(std::memory_order_acquire) >> 32));
    }
  }

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one kernel at a time owns the pool
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> state_{0};
  uint32_t tag_ = 0;
  Job jobs_[2];
  bool quit_ = false;
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
