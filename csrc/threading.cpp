#include "threading.h"

#include <atomic>

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

}  // namespace fastnn
