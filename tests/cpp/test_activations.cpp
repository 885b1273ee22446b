// Activation and softmax kernels: fast path against the reference, thread-count determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "activations.h"
#include "cpu.h"
#include "threading.h"

namespace fastnn {
namespace {

constexpr Act kAllActs[] = {Act::identity, Act::relu, Act::leaky_relu, Act::elu,
                            Act::sigmoid,  Act::tanh, Act::gelu,       Act::gelu_tanh,
                            Act::silu,     Act::softplus};

// Deterministic values in [-scale, scale], with a few extremes and exact zeros mixed in.
template <class T>
std::vector<T> sample(int64_t n, uint64_t seed, double scale = 6.0) {
  std::vector<T> v(static_cast<size_t>(n));
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double u = double(s >> 11) / double(1ull << 53);
    v[i] = T((2 * u - 1) * scale);
    if (i % 97 == 3) v[i] = T(1000);
    if (i % 97 == 5) v[i] = T(-1000);
    if (i % 97 == 7) v[i] = T(0);
    if (i % 97 == 11) v[i] = T(20.5);  // just above the softplus threshold
  }
  return v;
}

// Bitwise comparison that also accepts +0 == -0 (a select and a multiply by zero may differ in
// the sign of zero only).
template <class T>
void expect_same(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << what << " at " << i;
    } else {
      ASSERT_EQ(got[i], want[i]) << what << " at " << i << " of " << got.size();
    }
  }
}

template <class T>
void expect_near(const std::vector<T>& got, const std::vector<T>& want, double rtol,
                 double atol, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  size_t worst_i = 0;
  bool bad = false;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    const double excess = d - (atol + rtol * std::fabs(double(want[i])));
    if (!(excess <= 0) && !(std::isnan(got[i]) && std::isnan(want[i]))) bad = true;
    if (d > worst) {
      worst = d;
      worst_i = i;
    }
  }
  EXPECT_FALSE(bad) << what << ": largest difference " << worst << " at " << worst_i << " (got "
                    << got[worst_i] << ", want " << want[worst_i] << ")";
}

class ActivationKernels : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

template <class T>
void check_activation(Act kind, double alpha, int64_t n) {
  const Activation act{kind, alpha};
  // Some float activations use a vectorised exp or tanh (a few ulp) where AVX2 is available.
  const bool approximate = sizeof(T) == 4 && (kind == Act::sigmoid || kind == Act::silu ||
                                              kind == Act::tanh || kind == Act::gelu_tanh);
  const std::vector<T> x = sample<T>(n, 1 + n);
  const std::vector<T> dy = sample<T>(n, 2 + n, 1.0);
  std::vector<T> y_ref(x.size()), dx_ref(x.size());
  activation_forward_reference(y_ref.data(), x.data(), n, act);
  activation_backward_reference(dx_ref.data(), dy.data(), x.data(), y_ref.data(), n, act);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<T> y(x.size()), dx(x.size());
    activation_forward(y.data(), x.data(), n, act);
    if (approximate) {
      // gelu_tanh's 1 + tanh(u) cancels for negative x, so its error is absolute, ~ulp(1) * |x|.
      expect_near(y, y_ref, 5e-7, 2e-6, act_name(kind));
    } else {
      expect_same(y, y_ref, act_name(kind));
    }
    activation_backward(dx.data(), dy.data(), x.data(), y.data(), n, act);
    // The fast backward may take the derivative from y where the reference uses x; the two
    // formulas agree to rounding (|dy| <= 1, so an absolute term covers derivatives near 0).
    expect_near(dx, dx_ref, sizeof(T) == 4 ? 1e-6 : 1e-14,
                sizeof(T) == 4 ? (approximate ? 4e-6 : 2e-7) : 1e-16, act_name(kind));
    std::vector<T> in_place = x;
    activation_forward(in_place.data(), in_place.data(), n, act);
    expect_same(in_place, y, "in place");
  }
}

template <class T>
void check_all_activations() {
  for (int64_t n : {0, 1, 7, 8, 9, 1000}) {
    for (Act kind : kAllActs) check_activation<T>(kind, 0.0, n);
    check_activation<T>(Act::leaky_relu, 0.01, n);
    check_activation<T>(Act::leaky_relu, -0.5, n);
    check_activation<T>(Act::elu, 1.0, n);
    check_activation<T>(Act::elu, 0.3, n);
  }
}

TEST_F(ActivationKernels, MatchReferenceFloat) { check_all_activations<float>(); }
TEST_F(ActivationKernels, MatchReferenceDouble) { check_all_activations<double>(); }

TEST_F(ActivationKernels, LargeArrayIdenticalAcrossThreadCounts) {
  for (Act kind : {Act::relu, Act::gelu, Act::softplus, Act::silu}) {
    check_activation<float>(kind, 0.0, 1000003);
    check_activation<double>(kind, 0.0, 1000003);
  }
  check_activation<float>(Act::elu, 1.0, 1000003);
}

TEST(Activations, KnownValues) {
  const std::vector<double> x = {-1000, -1, 0, 1, 30};
  std::vector<double> y(x.size());
  activation_forward(y.data(), x.data(), 5, Activation{Act::sigmoid, 0});
  EXPECT_EQ(y[0], 0.0);
  EXPECT_DOUBLE_EQ(y[2], 0.5);
  EXPECT_DOUBLE_EQ(y[3], 1 / (1 + std::exp(-1.0)));
  activation_forward(y.data(), x.data(), 5, Activation{Act::softplus, 0});
  EXPECT_EQ(y[0], 0.0);
  EXPECT_DOUBLE_EQ(y[2], std::log(2.0));
  EXPECT_EQ(y[4], 30.0);
  activation_forward(y.data(), x.data(), 5, Activation{Act::gelu, 0});
  EXPECT_EQ(y[0], -0.0);
  EXPECT_NEAR(y[3], 0.8413447460685429, 1e-15);
}

#ifdef FASTNN_HAVE_AVX2_KERNELS
TEST(ActivationsAvx2, VectorExpWithinThreeUlpAndFlushesBelowNormalRange) {
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "no AVX2+FMA on this CPU";
  // Every 97th float bit pattern in [-87.3, 0] (about 11 million values), plus the edges.
  std::vector<float> x;
  for (uint32_t bits = 0x80000000u; bits <= 0xC2AEAC4Fu; bits += 97) {
    float v;
    std::memcpy(&v, &bits, sizeof v);
    x.push_back(v);
  }
  x.insert(x.begin(), {-0.0f, 0.0f, -87.3365f, -87.34f, -100.0f, -1000.0f, -INFINITY, NAN});
  std::vector<float> y(x.size());
  const int64_t n = static_cast<int64_t>(x.size());
  const int64_t done = detail::exp_shifted_avx2(y.data(), x.data(), 0.0f, n);
  ASSERT_GE(done, n - 7);
  double worst = 0;
  for (int64_t i = 0; i < done; ++i) {
    const double want = std::exp(double(x[i]));
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(y[i]));
    } else if (want < 1.1754944e-38) {
      EXPECT_EQ(y[i], 0.0f) << "x = " << x[i];
    } else {
      const double ulp = std::nextafter(float(want), INFINITY) - float(want);
      worst = std::max(worst, std::fabs(double(y[i]) - want) / ulp);
    }
  }
  EXPECT_LE(worst, 3.0) << "largest error in ulp";
}

TEST(ActivationsAvx2, VectorTanhWithinFourUlp) {
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "no AVX2+FMA on this CPU";
  std::vector<float> x = {-0.0f, 0.0f, 1e-30f, -1e-8f, 0.62499994f, 0.625f, -0.625f,
                          9.0f, -9.5f, 1000.0f, -INFINITY, INFINITY, NAN, 3e-39f, 0.3f, -2.0f};
  for (int i = -200000; i <= 200000; ++i) x.push_back(float(i) * 5e-5f);  // [-10, 10]
  for (int i = 1; i <= 1000; ++i) x.push_back(float(i) * 1e-7f);          // tiny arguments
  std::vector<float> y(x.size());
  const int64_t n = static_cast<int64_t>(x.size());
  const int64_t done = detail::tanh_forward_avx2(y.data(), x.data(), n);
  ASSERT_GE(done, n - 7);
  double worst = 0;
  for (int64_t i = 0; i < done; ++i) {
    const double want = std::tanh(double(x[i]));
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(y[i]));
      continue;
    }
    const float wf = float(want);
    const double ulp = std::max(double(std::nextafter(std::fabs(wf), INFINITY) - std::fabs(wf)),
                                1e-45);
    worst = std::max(worst, std::fabs(double(y[i]) - want) / ulp);
    if (x[i] == 0) EXPECT_EQ(std::signbit(y[i]), std::signbit(x[i]));
  }
  EXPECT_LE(worst, 4.0) << "largest error in ulp";
}
#endif

// ---------------------------------------------------------------------------------------------
// Softmax.

template <class T>
void check_softmax(int64_t rows, int64_t cols, double scale) {
  const int64_t n = rows * cols;
  const std::vector<T> x = sample<T>(n, 7 + n, scale);
  const std::vector<T> dy = sample<T>(n, 8 + n, 1.0);
  std::vector<T> s_ref(n), ls_ref(n), ds_ref(n), dls_ref(n);
  softmax_forward_reference(s_ref.data(), x.data(), rows, cols);
  log_softmax_forward_reference(ls_ref.data(), x.data(), rows, cols);
  softmax_backward_reference(ds_ref.data(), dy.data(), s_ref.data(), rows, cols);
  log_softmax_backward_reference(dls_ref.data(), dy.data(), ls_ref.data(), rows, cols);
  const double eps = sizeof(T) == 4 ? 1e-6 : 1e-14;
  const double wide = double(std::max<int64_t>(cols, 1));
  std::vector<T> first[4];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<T> s(n), ls(n), ds(n), dls(n);
    softmax_forward(s.data(), x.data(), rows, cols);
    log_softmax_forward(ls.data(), x.data(), rows, cols);
    softmax_backward(ds.data(), dy.data(), s.data(), rows, cols);
    log_softmax_backward(dls.data(), dy.data(), ls.data(), rows, cols);
    // float rows may use a vectorised exp (a few ulp); the tolerance covers it.
    expect_near(s, s_ref, 8 * eps, eps, "softmax");
    expect_near(ls, ls_ref, 8 * eps, 8 * eps * (1 + std::log(wide)), "log_softmax");
    expect_near(ds, ds_ref, 8 * eps, 8 * eps * wide, "softmax_backward");
    expect_near(dls, dls_ref, 8 * eps, 8 * eps * wide, "log_softmax_backward");
    if (threads == 1) {
      first[0] = s, first[1] = ls, first[2] = ds, first[3] = dls;
    } else {
      expect_same(s, first[0], "softmax 1 vs 2 threads");
      expect_same(ls, first[1], "log_softmax 1 vs 2 threads");
      expect_same(ds, first[2], "softmax_backward 1 vs 2 threads");
      expect_same(dls, first[3], "log_softmax_backward 1 vs 2 threads");
    }
    std::vector<T> in_place = x;
    softmax_forward(in_place.data(), in_place.data(), rows, cols);
    expect_same(in_place, s, "softmax in place");
    in_place = x;
    log_softmax_forward(in_place.data(), in_place.data(), rows, cols);
    expect_same(in_place, ls, "log_softmax in place");
  }
}

template <class T>
void check_softmax_shapes() {
  check_softmax<T>(0, 5, 3);          // zero_rows
  check_softmax<T>(4, 0, 3);          // zero_width
  check_softmax<T>(1, 1, 3);          // width_1
  check_softmax<T>(9, 1, 3);          // width_1, many rows
  check_softmax<T>(3, 7, 3);
  check_softmax<T>(5, 8, 3);
  check_softmax<T>(5, 9, 3);
  check_softmax<T>(7, 33, 1000);      // extreme logits (+-1000 within a row)
  check_softmax<T>(2, 100003, 10);    // wide rows
  check_softmax<T>(4099, 37, 5);      // enough rows to split across threads
}

TEST_F(ActivationKernels, SoftmaxMatchesReferenceFloat) { check_softmax_shapes<float>(); }
TEST_F(ActivationKernels, SoftmaxMatchesReferenceDouble) { check_softmax_shapes<double>(); }

TEST(Softmax, ExtremeLogitsStayFinite) {
  const std::vector<float> x = {1000, -1000, 0, 999};
  std::vector<float> y(4), ly(4);
  softmax_forward(y.data(), x.data(), 1, 4);
  log_softmax_forward(ly.data(), x.data(), 1, 4);
  EXPECT_NEAR(y[0], 1 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_NEAR(ly[0], -std::log1p(std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(ly[1], -2000 - std::log1p(std::exp(-1.0)), 1e-3);
  for (float v : ly) EXPECT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace fastnn
