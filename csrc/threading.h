// Thread control and deterministic parallel loops.
//
// Every parallel loop in fastnn splits its range into contiguous chunks whose boundaries depend
// only on the problem size, never on the thread count, and each output element is written by
// exactly one chunk. Reductions sum fixed-size blocks into partials and add the partials in
// block order on one thread. Together these make results bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#ifdef FASTNN_OPENMP
#include <omp.h>
#endif

namespace fastnn {

// Number of threads kernels may use (1 when built without OpenMP). Thread-safe to read.
int get_num_threads();
// n >= 1; values above the hardware's count are allowed, as with OpenMP itself.
void set_num_threads(int n);
// True when this build was compiled with OpenMP.
bool openmp_enabled();
// The threads kernels use now: get_num_threads(), or 1 while another process keeps a core busy
// (see ContentionMonitor). Results do not depend on it.
int active_threads();

// Tells when parallel regions have stopped paying because another process holds a core.
//
// A parallel region ends only when every thread of its team has arrived and finished. When
// another process keeps a core busy, the thread scheduled on that core gets its turn only every
// few milliseconds, so a region whose work takes 100 us can last several milliseconds: with one
// core busy, the MLP benchmark's training step at batch 32 ran 3.5 times slower on two threads
// than on one. The thread that starts a region reports how long it waited for the others after
// finishing its own work (it also takes over work they have not started). When those waits add
// up to more than a third of the wall time of a window, two threads no longer beat one, and
// kernels run on one thread for a while; each further bad window after such a pause doubles it.
// Concurrent callers may race on the counters, which only blurs a heuristic.
class ContentionMonitor {
 public:
  static constexpr int64_t kWindowNs = 50'000'000;        // 50 ms of wall time
  static constexpr int64_t kFirstPauseNs = 200'000'000;   // then one thread for 0.2 s ..
  static constexpr int kMaxDoublings = 4;                 // .. up to 3.2 s

  // A region ended at `now_ns` after its starting thread waited `waited_ns` for the others.
  void observe(int64_t now_ns, int64_t waited_ns);
  // Whether kernels should run on one thread at `now_ns`.
  bool paused(int64_t now_ns) const {
    return now_ns < pause_until_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<int64_t> window_start_{-1};
  std::atomic<int64_t> waited_in_window_{0};
  std::atomic<int64_t> pause_until_{0};
  std::atomic<int> bad_windows_{0};
};

namespace detail {
// A monotonic clock in nanoseconds.
int64_t now_ns();
// Reports to the process's ContentionMonitor a region whose starting thread finished its own
// work at `caller_done_ns`; the region has just ended.
void end_parallel_region(int64_t caller_done_ns);
}  // namespace detail

// Below this many "work units" (roughly flops or element-ops) a loop runs on one thread: waking
// a second core costs a few microseconds, which small kernels never earn back.
constexpr int64_t kParallelMinWork = 1 << 18;

// Calls body(begin, end) over [0, n) in chunks of `grain` items (the last may be shorter).
// Chunks run in parallel when n * cost_per_item >= kParallelMinWork and more than one thread is
// active. Chunk boundaries depend only on n and grain, so any per-chunk output is the same for
// every thread count.
template <class Body>
void parallel_for(int64_t n, int64_t grain, int64_t cost_per_item, Body&& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  (void)cost_per_item;  // only read when OpenMP is on
#ifdef FASTNN_OPENMP
  // The work test comes first: active_threads() reads the clock, which small loops need not.
  const bool worth_threads =
      chunks > 1 && n * std::max<int64_t>(cost_per_item, 1) >= kParallelMinWork;
  const int threads = worth_threads ? active_threads() : 1;
  if (threads > 1) {
    const int use = static_cast<int>(std::min<int64_t>(threads, chunks));
    // Chunks are handed out as threads become free: when another process holds one core, the
    // other thread takes over its share instead of waiting. Which thread runs a chunk never
    // changes what the chunk computes, so results stay bit-identical.
    std::atomic<int64_t> next{0};
    int64_t caller_done = 0;
#pragma omp parallel num_threads(use)
    {
      for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed)) {
        const int64_t begin = c * grain;
        body(begin, std::min(n, begin + grain));
      }
      if (omp_get_thread_num() == 0) caller_done = detail::now_ns();
    }
    detail::end_parallel_region(caller_done);
    return;
  }
#endif
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * grain;
    body(begin, std::min(n, begin + grain));
  }
}

// Calls body(item) for every item in [0, n), in parallel when n * cost_per_item >= kParallelMinWork
// and more than one thread is active. Item i belongs to thread owner(i, threads): each thread
// first runs its own items in order, then takes the items of the others that have not started,
// so a thread slowed by another process hands the rest of its share over. Owners let
// consecutive calls give each thread the same part of the same arrays (its cache holds them);
// which thread runs an item never changes what the item computes.
template <class Owner, class Body>
void parallel_for_owned(int64_t n, int64_t cost_per_item, Owner&& owner, Body&& body) {
  if (n <= 0) return;
  (void)cost_per_item;
  (void)owner;
#ifdef FASTNN_OPENMP
  const bool worth_threads = n > 1 && n * std::max<int64_t>(cost_per_item, 1) >= kParallelMinWork;
  const int threads = worth_threads ? active_threads() : 1;
  if (threads > 1) {
    const int use = static_cast<int>(std::min<int64_t>(threads, n));
    std::vector<std::atomic<bool>> started(static_cast<size_t>(n));
    for (auto& flag : started) flag.store(false, std::memory_order_relaxed);
    int64_t caller_done = 0;
#pragma omp parallel num_threads(use)
    {
      const int me = omp_get_thread_num();
      for (int own = 1; own >= 0; --own) {  // own items first, then anyone's
        for (int64_t i = 0; i < n; ++i) {
          if (own && owner(i, use) != me) continue;
          if (started[static_cast<size_t>(i)].exchange(true, std::memory_order_relaxed)) continue;
          body(i);
        }
      }
      if (me == 0) caller_done = detail::now_ns();
    }
    detail::end_parallel_region(caller_done);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Block size for deterministic reductions: fixed, so the summation order never depends on the
// thread count.
constexpr int64_t kReduceBlock = 4096;

// Sums block_sum(begin, end) over fixed blocks of [0, n), in parallel, adding the partial sums
// in block order. Returns a double so that float32 losses keep their precision.
template <class BlockSum>
double deterministic_sum(int64_t n, int64_t cost_per_item, BlockSum&& block_sum) {
  if (n <= 0) return 0.0;
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  parallel_for(blocks, 1, kReduceBlock * std::max<int64_t>(cost_per_item, 1),
               [&](int64_t b0, int64_t b1) {
                 for (int64_t b = b0; b < b1; ++b) {
                   const int64_t begin = b * kReduceBlock;
                   partial[b] = block_sum(begin, std::min(n, begin + kReduceBlock));
                 }
               });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace fastnn
