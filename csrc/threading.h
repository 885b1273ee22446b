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

// Below this many "work units" (roughly flops or element-ops) a loop runs on one thread: waking
// a second core costs a few microseconds, which small kernels never earn back.
constexpr int64_t kParallelMinWork = 1 << 18;

// Calls body(begin, end) over [0, n) in chunks of `grain` items (the last may be shorter).
// Chunks run in parallel when n * cost_per_item >= kParallelMinWork and more than one thread is
// allowed. Chunk boundaries depend only on n and grain, so any per-chunk output is the same for
// every thread count.
template <class Body>
void parallel_for(int64_t n, int64_t grain, int64_t cost_per_item, Body&& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  (void)cost_per_item;  // only read when OpenMP is on
#ifdef FASTNN_OPENMP
  const int threads = get_num_threads();
  if (threads > 1 && chunks > 1 && n * std::max<int64_t>(cost_per_item, 1) >= kParallelMinWork) {
    const int use = static_cast<int>(std::min<int64_t>(threads, chunks));
    // Chunks are handed out as threads become free: when another process holds one core, the
    // other thread takes over its share instead of waiting. Which thread runs a chunk never
    // changes what the chunk computes, so results stay bit-identical.
#pragma omp parallel for schedule(dynamic, 1) num_threads(use)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * grain;
      body(begin, std::min(n, begin + grain));
    }
    return;
  }
#endif
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * grain;
    body(begin, std::min(n, begin + grain));
  }
}

// Calls body(item) for every item in [0, n), in parallel when n * cost_per_item >= kParallelMinWork
// and more than one thread is allowed. Item i belongs to thread owner(i, threads): each thread
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
  const int threads = get_num_threads();
  if (threads > 1 && n > 1 && n * std::max<int64_t>(cost_per_item, 1) >= kParallelMinWork) {
    const int use = static_cast<int>(std::min<int64_t>(threads, n));
    std::vector<std::atomic<bool>> started(static_cast<size_t>(n));
    for (auto& flag : started) flag.store(false, std::memory_order_relaxed);
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
    }
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
