#include <gtest/gtest.h>

#include <vector>

#include "threading.h"

namespace fastnn {
namespace {

class ThreadCount : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

TEST_F(ThreadCount, SetAndGet) {
  set_num_threads(1);
  EXPECT_EQ(get_num_threads(), 1);
  set_num_threads(0);  // clamped: never zero threads
  EXPECT_EQ(get_num_threads(), 1);
  if (openmp_enabled()) {
    set_num_threads(2);
    EXPECT_EQ(get_num_threads(), 2);
  }
}

TEST_F(ThreadCount, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 4096, 100003}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      parallel_for(n, 37, 1 << 10, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i] += 1;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " i=" << i;
    }
  }
}

TEST_F(ThreadCount, DeterministicSumIsIdenticalAcrossThreadCounts) {
  std::vector<float> values(1000003);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 1.0f / float(1 + (i * 7919) % 1013);
  auto sum_with = [&](int threads) {
    set_num_threads(threads);
    return deterministic_sum(static_cast<int64_t>(values.size()), 1, [&](int64_t b, int64_t e) {
      double s = 0;
      for (int64_t i = b; i < e; ++i) s += values[i];
      return s;
    });
  };
  const double one = sum_with(1);
  EXPECT_EQ(one, sum_with(2));
  // The values cycle through 1/j for j = 1..1013 (7919 is coprime to 1013).
  EXPECT_NEAR(one, 1000003 * 0.0074, 1000003 * 0.0002);
}

}  // namespace
}  // namespace fastnn
