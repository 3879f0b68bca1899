// The native thread pool every kernel parallelises on. Size: TESSERA_THREADS, else the number
// of available cores; pool_set_threads() changes it at run time. Calls from inside a pool task,
// or while another JS thread holds the pool, run serially on the caller (never deadlock).
#pragma once
#include <cstdint>
#include <type_traits>

namespace tessera {

using TaskFn = void (*)(void* ctx, int64_t task);

// Runs fn(ctx, t) for t in [0, n_tasks), spread over the pool (dynamic scheduling). Blocks.
void pool_run(int64_t n_tasks, TaskFn fn, void* ctx);
int pool_threads();
void pool_set_threads(int n);

// parallel_for(n, [&](int64_t t) {...}): one call per task index. The template is instantiated
// per lambda type, so it is safe to use from ISA-specific translation units.
template <class F>
inline void parallel_for(int64_t n_tasks, F&& f) {
  if (n_tasks <= 0) return;
  if (n_tasks == 1) { f(int64_t(0)); return; }
  using Fn = typename std::remove_reference<F>::type;
  pool_run(n_tasks, [](void* c, int64_t t) { (*static_cast<Fn*>(c))(t); }, (void*)&f);
}

// Splits [0, n) into about `chunks_per_thread * threads` contiguous ranges of at least `grain`.
template <class F>
inline void parallel_range(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int64_t threads = pool_threads();
  int64_t chunk = (n + threads * 4 - 1) / (threads * 4);
  if (chunk < grain) chunk = grain;
  int64_t tasks = (n + chunk - 1) / chunk;
  parallel_for(tasks, [&](int64_t t) {
    int64_t b = t * chunk, e = b + chunk < n ? b + chunk : n;
    f(b, e);
  });
}

}  // namespace tessera
