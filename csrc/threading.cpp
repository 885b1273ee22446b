#include "threading.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace fastnn {
namespace {

int initial_thread_count() {
#ifdef FASTNN_OPENMP
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

std::atomic<int>& thread_count() {
  static std::atomic<int> count{initial_thread_count()};
  return count;
}

// FASTNN_ADAPTIVE_THREADS=0 keeps every kernel on get_num_threads() threads, busy cores or not.
bool adaptive_threads() {
  static const bool enabled = [] {
    const char* value = std::getenv("FASTNN_ADAPTIVE_THREADS");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return enabled;
}

ContentionMonitor& process_monitor() {
  static ContentionMonitor monitor;
  return monitor;
}

}  // namespace

int get_num_threads() {
#ifdef FASTNN_OPENMP
  return thread_count().load(std::memory_order_relaxed);
#else
  return 1;
#endif
}

void set_num_threads(int n) { thread_count().store(std::max(1, n), std::memory_order_relaxed); }

bool openmp_enabled() {
#ifdef FASTNN_OPENMP
  return true;
#else
  return false;
#endif
}

int active_threads() {
  const int threads = get_num_threads();
  if (threads <= 1 || !adaptive_threads()) return threads;
  return process_monitor().paused(detail::now_ns()) ? 1 : threads;
}

void ContentionMonitor::observe(int64_t now_ns, int64_t waited_ns) {
  constexpr auto relaxed = std::memory_order_relaxed;
  int64_t start = window_start_.load(relaxed);
  if (start < 0) {
    window_start_.store(now_ns, relaxed);
    start = now_ns;
  }
  if (now_ns < start) return;  // a region that began before the current pause
  const int64_t waited = waited_in_window_.fetch_add(waited_ns, relaxed) + waited_ns;
  const int64_t elapsed = now_ns - start;
  if (elapsed < kWindowNs) return;
  waited_in_window_.store(0, relaxed);
  if (3 * waited <= elapsed) {
    bad_windows_.store(0, relaxed);
    window_start_.store(now_ns, relaxed);
    return;
  }
  const int bad = std::min(bad_windows_.load(relaxed) + 1, kMaxDoublings + 1);
  bad_windows_.store(bad, relaxed);
  const int64_t until = now_ns + (kFirstPauseNs << (bad - 1));
  pause_until_.store(until, relaxed);
  window_start_.store(until, relaxed);  // the next window measures the threads after the pause
}

namespace detail {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void end_parallel_region(int64_t caller_done_ns) {
  if (!adaptive_threads()) return;
  const int64_t now = now_ns();
  process_monitor().observe(now, std::max<int64_t>(0, now - caller_done_ns));
}

}  // namespace detail
}  // namespace fastnn
