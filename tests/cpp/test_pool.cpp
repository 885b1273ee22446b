#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "pool.h"
#include "threading.h"

namespace fastnn {
namespace {

template <class T>
std::vector<T> pattern(int64_t count, uint32_t seed) {
  std::vector<T> v(static_cast<size_t>(count));
  uint32_t state = seed * 2654435761u + 777u;
  for (auto& e : v) {
    state = state * 1664525u + 1013904223u;
    // Coarse values so that windows contain ties, which exercises the first-wins rule.
    e = static_cast<T>(static_cast<int>((state >> 16) % 17) - 8) / T(4);
  }
  return v;
}

Pool2dShape make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t stride,
                 int64_t pad, int64_t dil, bool ceil_mode) {
  Pool2dShape s;
  s.n = n, s.c = c, s.h = h, s.w = w, s.kh = s.kw = k, s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = pad, s.dilation_h = s.dilation_w = dil, s.ceil_mode = ceil_mode;
  return s;
}

// Brute-force max pooling from the definition: taps are the in-bounds positions of the dilated
// window; the first strictly greater value wins.
template <class T>
void max_pool_brute(std::vector<T>& y, std::vector<int64_t>& idx, const std::vector<T>& x,
                    const Pool2dShape& s) {
  for (int64_t p = 0; p < s.planes(); ++p) {
    for (int64_t oh = 0; oh < s.oh; ++oh) {
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_i = -1;
        for (int64_t i = 0; i < s.kh; ++i) {
          for (int64_t j = 0; j < s.kw; ++j) {
            const int64_t ih = oh * s.stride_h - s.pad_h + i * s.dilation_h;
            const int64_t iw = ow * s.stride_w - s.pad_w + j * s.dilation_w;
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
            const T v = x[(p * s.h + ih) * s.w + iw];
            if (best_i < 0 || v > best) best = v, best_i = ih * s.w + iw;
          }
        }
        y[(p * s.oh + oh) * s.ow + ow] = best;
        idx[(p * s.oh + oh) * s.ow + ow] = best_i;
      }
    }
  }
}

class Pool : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

std::vector<std::pair<std::string, Pool2dShape>> grid() {
  return {
      {"two_by_two_stride_2", make(4, 3, 26, 26, 2, 2, 0, 1, false)},
      {"odd_input_floor", make(2, 2, 11, 11, 2, 2, 0, 1, false)},
      {"odd_input_ceil_mode", make(2, 2, 11, 11, 2, 2, 0, 1, true)},
      {"kernel_3_stride_2_pad_1", make(2, 3, 9, 10, 3, 2, 1, 1, false)},
      {"ceil_mode_drops_window_in_padding", make(1, 1, 5, 5, 2, 2, 1, 1, true)},
      {"dilation_2", make(2, 2, 9, 9, 3, 1, 1, 2, false)},
      {"stride_3_ceil", make(1, 2, 10, 7, 2, 3, 1, 1, true)},
      {"single_pixel", make(3, 1, 1, 1, 1, 1, 0, 1, false)},
      {"many_planes", make(64, 32, 13, 13, 2, 2, 0, 1, false)},
      // The 2x2 fast path works in runs of 256 outputs: two rows of 145 are one full run that
      // ends mid-row and a part; a 20x20 output plane splits in its 13th row.
      {"two_by_two_rows_longer_than_a_run", make(1, 2, 5, 291, 2, 2, 0, 1, false)},
      {"two_by_two_run_ends_mid_plane", make(2, 2, 40, 41, 2, 2, 0, 1, false)},
  };
}

template <class T>
void check_max_pool() {
  for (auto [name, s] : grid()) {
    ASSERT_TRUE(pool2d_finish_shape(s)) << name;
    const int64_t xs = s.planes() * s.h * s.w, ys = s.planes() * s.oh * s.ow;
    const auto x = pattern<T>(xs, 1), dy = pattern<T>(ys, 2);
    std::vector<T> y_ref(ys);
    std::vector<int64_t> idx_ref(ys);
    max_pool_brute(y_ref, idx_ref, x, s);
    std::vector<T> dx_ref(xs, T(0));
    for (int64_t i = 0; i < ys; ++i) dx_ref[(i / (s.oh * s.ow)) * s.h * s.w + idx_ref[i]] += dy[i];
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      std::vector<T> y(ys), dx(xs, T(NAN));
      std::vector<int64_t> idx(ys);
      max_pool2d_forward(y.data(), idx.data(), x.data(), s);
      max_pool2d_backward(dx.data(), dy.data(), idx.data(), s);
      EXPECT_EQ(y, y_ref) << name;
      EXPECT_EQ(idx, idx_ref) << name;
      EXPECT_EQ(dx, dx_ref) << name;  // exact: each input adds its few gradients in order
    }
  }
}

TEST_F(Pool, MaxPoolMatchesBruteForceFloat) { check_max_pool<float>(); }
TEST_F(Pool, MaxPoolMatchesBruteForceDouble) { check_max_pool<double>(); }

TEST_F(Pool, MaxPoolNanWins) {
  Pool2dShape s = make(1, 1, 2, 2, 2, 2, 0, 1, false);
  ASSERT_TRUE(pool2d_finish_shape(s));
  const std::vector<float> x = {1.0f, NAN, 3.0f, 2.0f};
  std::vector<float> y(1);
  std::vector<int64_t> idx(1);
  max_pool2d_forward(y.data(), idx.data(), x.data(), s);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(idx[0], 1);
  // Several NaNs: the last one's index, in the 2x2 fast path and in the general loop alike.
  const std::vector<float> two_nans = {NAN, 5.0f, NAN, 1.0f};
  max_pool2d_forward(y.data(), idx.data(), two_nans.data(), s);
  EXPECT_EQ(idx[0], 2);
  Pool2dShape general = make(1, 1, 2, 2, 2, 1, 0, 1, false);  // stride 1: not the fast path
  ASSERT_TRUE(pool2d_finish_shape(general));
  max_pool2d_forward(y.data(), idx.data(), two_nans.data(), general);
  EXPECT_EQ(idx[0], 2);
}

template <class T>
void check_avg_pool(bool include_pad, int64_t divisor) {
  for (auto [name, s] : grid()) {
    if (s.dilation_h != 1) continue;
    ASSERT_TRUE(pool2d_finish_shape(s)) << name;
    const int64_t xs = s.planes() * s.h * s.w, ys = s.planes() * s.oh * s.ow;
    const auto x = pattern<T>(xs, 3), dy = pattern<T>(ys, 4);
    std::vector<T> y_ref(ys, T(0)), dx_ref(xs, T(0));
    for (int64_t p = 0; p < s.planes(); ++p) {
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          // Definition: taps inside the padded input count when include_pad; real ones always.
          int64_t real = 0, padded = 0;
          T sum = 0;
          for (int64_t i = 0; i < s.kh; ++i) {
            for (int64_t j = 0; j < s.kw; ++j) {
              const int64_t ih = oh * s.stride_h - s.pad_h + i, iw = ow * s.stride_w - s.pad_w + j;
              if (ih >= s.h + s.pad_h || iw >= s.w + s.pad_w) continue;
              ++padded;
              if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
              ++real;
              sum += x[(p * s.h + ih) * s.w + iw];
            }
          }
          const int64_t div = divisor > 0 ? divisor : include_pad ? padded : real;
          const int64_t o = (p * s.oh + oh) * s.ow + ow;
          y_ref[o] = real ? sum / T(div) : T(0);
          for (int64_t i = 0; real && i < s.kh; ++i) {
            for (int64_t j = 0; j < s.kw; ++j) {
              const int64_t ih = oh * s.stride_h - s.pad_h + i, iw = ow * s.stride_w - s.pad_w + j;
              if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
              dx_ref[(p * s.h + ih) * s.w + iw] += dy[o] / T(div);
            }
          }
        }
      }
    }
    std::vector<T> y_one;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      std::vector<T> y(ys), dx(xs, T(NAN));
      avg_pool2d_forward(y.data(), x.data(), s, include_pad, divisor);
      avg_pool2d_backward(dx.data(), dy.data(), s, include_pad, divisor);
      for (int64_t i = 0; i < ys; ++i) ASSERT_NEAR(y[i], y_ref[i], 1e-5) << name << " y " << i;
      for (int64_t i = 0; i < xs; ++i) ASSERT_NEAR(dx[i], dx_ref[i], 1e-5) << name << " dx " << i;
      if (threads == 1) y_one = y;
      EXPECT_EQ(y, y_one) << name << " differs between 1 and 2 threads";
    }
  }
}

TEST_F(Pool, AvgPoolCountIncludePad) { check_avg_pool<float>(true, 0); }
TEST_F(Pool, AvgPoolExcludePad) { check_avg_pool<double>(false, 0); }
TEST_F(Pool, AvgPoolDivisorOverride) { check_avg_pool<float>(false, 3); }

TEST_F(Pool, AdaptiveAvgPoolWindows) {
  // 5 -> 3: rows [0,2), [1,4), [3,5) (PyTorch's floor/ceil windows overlap).
  const int64_t h = 5, w = 1, oh = 3, ow = 1;
  const std::vector<double> x = {1, 2, 3, 4, 5};
  std::vector<double> y(3), dx(5);
  adaptive_avg_pool2d_forward(y.data(), x.data(), 1, h, w, oh, ow);
  EXPECT_DOUBLE_EQ(y[0], 1.5);
  EXPECT_DOUBLE_EQ(y[1], 3.0);
  EXPECT_DOUBLE_EQ(y[2], 4.5);
  const std::vector<double> dy = {2, 3, 4};
  adaptive_avg_pool2d_backward(dx.data(), dy.data(), 1, h, w, oh, ow);
  const std::vector<double> expected = {1.0, 2.0, 1.0, 3.0, 2.0};
  for (int i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(dx[i], expected[i]) << i;
}

TEST_F(Pool, GlobalAveragePoolIsAdaptiveToOne) {
  const int64_t planes = 6, h = 7, w = 3;
  const auto x = pattern<float>(planes * h * w, 5);
  std::vector<float> y(planes);
  adaptive_avg_pool2d_forward(y.data(), x.data(), planes, h, w, 1, 1);
  for (int64_t p = 0; p < planes; ++p) {
    double sum = 0;
    for (int64_t i = 0; i < h * w; ++i) sum += x[p * h * w + i];
    EXPECT_NEAR(y[p], sum / (h * w), 1e-6);
  }
}

TEST(PoolShape, OutputSizeMatchesPyTorch) {
  EXPECT_EQ(pool_output_size(26, 2, 2, 0, 1, false), 13);
  EXPECT_EQ(pool_output_size(11, 2, 2, 0, 1, false), 5);
  EXPECT_EQ(pool_output_size(11, 2, 2, 0, 1, true), 6);
  EXPECT_EQ(pool_output_size(5, 2, 2, 1, 1, true), 3);  // a fourth window would start in padding
  EXPECT_EQ(pool_output_size(2, 3, 1, 0, 1, false), 0);
}

}  // namespace
}  // namespace fastnn
