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

// Synthetic clocks: regions of `work` ns each, whose starting thread then waited `wait` ns, until
// `until` or until the monitor pauses threads. Returns the time the last region ended.
int64_t run_regions(ContentionMonitor& monitor, int64_t start, int64_t until, int64_t work,
                    int64_t wait) {
  int64_t now = start;
  while (now < until && !monitor.paused(now)) {
    now += work + wait;
    monitor.observe(now, wait);
  }
  return now;
}

// A window from the first region on, and a little more.
constexpr int64_t kWindowAndRegion = ContentionMonitor::kWindowNs + 4'000'000;

constexpr int64_t kMs = 1'000'000;

TEST(ContentionMonitor, QuietRegionsNeverPause) {
  ContentionMonitor monitor;
  // 100 us regions with a 20 us wait each: a sixth of the time lost, less than a third.
  const int64_t end = run_regions(monitor, 0, 10'000 * kMs, 100'000, 20'000);
  EXPECT_FALSE(monitor.paused(end));
}

TEST(ContentionMonitor, RareLongWaitsDoNotPause) {
  ContentionMonitor monitor;
  int64_t now = 0;
  for (int burst = 0; burst < 20; ++burst) {
    now = run_regions(monitor, now, now + 200 * kMs, 100'000, 2'000);
    now += 5 * kMs;  // the other core taken away once for 5 ms, every 200 ms
    monitor.observe(now, 5 * kMs);
    EXPECT_FALSE(monitor.paused(now)) << "burst " << burst;
  }
}

TEST(ContentionMonitor, BusyCorePausesThenRetriesWithDoublingPauses) {
  ContentionMonitor monitor;
  // 100 us of work, then 3 ms waiting for a thread that shares its core with another process.
  int64_t now = run_regions(monitor, 0, kWindowAndRegion, 100'000, 3 * kMs);
  ASSERT_TRUE(monitor.paused(now));
  int64_t expected_pause = ContentionMonitor::kFirstPauseNs;
  for (int retry = 0; retry < 6; ++retry) {
    const int64_t pause_start = now;
    while (monitor.paused(now)) now += kMs;
    EXPECT_NEAR(double(now - pause_start), double(expected_pause), double(kMs)) << retry;
    // Still busy: the next window on two threads is as bad, and the next pause twice as long,
    // up to the cap.
    now = run_regions(monitor, now, now + kWindowAndRegion, 100'000, 3 * kMs);
    ASSERT_TRUE(monitor.paused(now)) << retry;
    expected_pause = std::min(2 * expected_pause,
                              ContentionMonitor::kFirstPauseNs << ContentionMonitor::kMaxDoublings);
  }
}

TEST(ContentionMonitor, AGoodWindowAfterAPauseResetsThePause) {
  ContentionMonitor monitor;
  int64_t now = run_regions(monitor, 0, kWindowAndRegion, 100'000, 3 * kMs);
  ASSERT_TRUE(monitor.paused(now));
  for (int round = 0; round < 2; ++round) {  // a second bad window: 0.4 s pause
    while (monitor.paused(now)) now += kMs;
    now = run_regions(monitor, now, now + kWindowAndRegion, 100'000, 3 * kMs);
  }
  while (monitor.paused(now)) now += kMs;
  now = run_regions(monitor, now, now + 2 * kWindowAndRegion, 100'000, 1'000);
  EXPECT_FALSE(monitor.paused(now));
  // The core is busy again: the pause starts over from the first length.
  now = run_regions(monitor, now, now + kWindowAndRegion, 100'000, 3 * kMs);
  const int64_t pause_start = now;
  while (monitor.paused(now)) now += kMs;
  EXPECT_NEAR(double(now - pause_start), double(ContentionMonitor::kFirstPauseNs), double(kMs));
}

TEST_F(ThreadCount, ActiveThreadsNeverExceedTheSetting) {
  set_num_threads(1);
  EXPECT_EQ(active_threads(), 1);
  if (openmp_enabled()) {
    set_num_threads(2);
    EXPECT_GE(active_threads(), 1);
    EXPECT_LE(active_threads(), 2);
  }
}

}  // namespace
}  // namespace fastnn
