// Loss kernels: fast path against the double-precision reference, thread-count determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "losses.h"
#include "threading.h"

namespace fastnn {
namespace {

uint64_t next(uint64_t* s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 11;
}

// Values in [lo, hi].
template <class T>
std::vector<T> uniform(int64_t n, uint64_t seed, double lo, double hi) {
  std::vector<T> v(static_cast<size_t>(n));
  uint64_t s = seed;
  for (auto& x : v) x = T(lo + (hi - lo) * double(next(&s)) / double(1ull << 53));
  return v;
}

template <class T>
void expect_near(const std::vector<T>& got, const std::vector<T>& want, double tol,
                 const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    if (!(d <= worst)) worst = d, at = i;
  }
  EXPECT_LE(worst, tol) << what << ": largest difference at " << at << " of " << got.size();
}

template <class T>
void expect_identical(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << what << " at " << i;
}

void expect_loss_near(double got, double want, double rtol, const char* what) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what;
    return;
  }
  EXPECT_NEAR(got, want, rtol * (1 + std::fabs(want))) << what;
}

class LossKernels : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

// ---------------------------------------------------------------------------------------------

template <class T>
void check_cross_entropy(int64_t n, int64_t c, bool weighted, double eps, Reduction reduction,
                         int64_t ignore_index, double scale) {
  SCOPED_TRACE("n=" + std::to_string(n) + " c=" + std::to_string(c) +
               " weighted=" + std::to_string(weighted) + " eps=" + std::to_string(eps) +
               " sum=" + std::to_string(reduction == Reduction::sum) +
               " ignore=" + std::to_string(ignore_index));
  std::vector<T> logits = uniform<T>(n * c, 11 + n + c, -scale, scale);
  if (n * c > 2) logits[0] = T(1000), logits[1] = T(-1000);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  uint64_t s = 5;
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = int64_t(next(&s) % uint64_t(c));
    if (i % 5 == 2) labels[i] = ignore_index;
  }
  const std::vector<T> weight = uniform<T>(c, 3, 0.2, 2.0);
  const T* w = weighted ? weight.data() : nullptr;
  const CrossEntropyOptions options{eps, reduction, ignore_index};
  const double grad_scale = 0.75;

  std::vector<T> probs_ref(n * c), grad_ref(n * c);
  const double loss_ref =
      cross_entropy_forward_reference(probs_ref.data(), logits.data(), labels.data(), w, options,
                                      n, c);
  cross_entropy_backward_reference(grad_ref.data(), probs_ref.data(), labels.data(), w, options,
                                   grad_scale, n, c);
  // Row sums over many classes carry more rounding.
  const double tol = (sizeof(T) == 4 ? 2e-6 : 1e-13) * (1 + double(c) / 10000);
  double loss_one = 0;
  std::vector<T> probs_one, grad_one;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<T> probs(n * c), grad(n * c);
    const double loss =
        cross_entropy_forward(probs.data(), logits.data(), labels.data(), w, options, n, c);
    cross_entropy_backward(grad.data(), probs.data(), labels.data(), w, options, grad_scale, n,
                           c);
    expect_loss_near(loss, loss_ref, tol, "loss");
    expect_near(probs, probs_ref, tol, "probs");
    // Gradient entries are O(1 / n) for "mean": scale the tolerance by the largest entry.
    expect_near(grad, grad_ref, 4 * tol, "gradient");
    // The backward may overwrite probs in place.
    std::vector<T> in_place = probs;
    cross_entropy_backward(in_place.data(), in_place.data(), labels.data(), w, options,
                           grad_scale, n, c);
    expect_identical(in_place, grad, "backward in place");
    if (threads == 1) {
      loss_one = loss, probs_one = probs, grad_one = grad;
    } else {
      if (!std::isnan(loss_one)) EXPECT_EQ(loss, loss_one) << "loss 1 vs 2 threads";
      expect_identical(probs, probs_one, "probs 1 vs 2 threads");
      expect_identical(grad, grad_one, "gradient 1 vs 2 threads");
    }
  }
}

template <class T>
void check_cross_entropy_all() {
  const int64_t shapes[][2] = {{0, 3}, {1, 1}, {7, 5}, {8, 9}, {9, 1000}, {3001, 37}};
  for (const auto& nc : shapes) {
    for (bool weighted : {false, true}) {
      for (double eps : {0.0, 0.1}) {
        for (Reduction red : {Reduction::mean, Reduction::sum}) {
          check_cross_entropy<T>(nc[0], nc[1], weighted, eps, red, -100, 4.0);
        }
      }
    }
  }
  check_cross_entropy<T>(20, 4, true, 0.2, Reduction::mean, 2, 4.0);  // ignore_index a class
  check_cross_entropy<T>(9, 13, true, 0.3, Reduction::mean, -100, 1000.0);  // extreme logits
  check_cross_entropy<T>(3, 100003, false, 0.1, Reduction::sum, -100, 10.0);  // wide rows
}

TEST_F(LossKernels, CrossEntropyMatchesReferenceFloat) { check_cross_entropy_all<float>(); }
TEST_F(LossKernels, CrossEntropyMatchesReferenceDouble) { check_cross_entropy_all<double>(); }

TEST(CrossEntropy, AllRowsIgnoredGivesNanMeanAndZeroGradient) {
  const std::vector<double> logits = {1, 2, 3, 4};
  const std::vector<int64_t> labels = {-100, -100};
  std::vector<double> probs(4), grad(4, 7.0);
  const CrossEntropyOptions options;
  EXPECT_TRUE(std::isnan(
      cross_entropy_forward<double>(probs.data(), logits.data(), labels.data(), nullptr, options,
                                    2, 2)));
  cross_entropy_backward<double>(grad.data(), probs.data(), labels.data(), nullptr, options, 1.0,
                                 2, 2);
  for (double g : grad) EXPECT_EQ(g, 0.0);
}

TEST(CrossEntropy, KnownValue) {
  // Two classes, logits (0, log 3): p = (1/4, 3/4); label 1 -> loss = log(4/3).
  const std::vector<double> logits = {0, std::log(3.0)};
  const std::vector<int64_t> labels = {1};
  std::vector<double> probs(2);
  const double loss =
      cross_entropy_forward<double>(probs.data(), logits.data(), labels.data(), nullptr, {}, 1, 2);
  EXPECT_NEAR(loss, std::log(4.0 / 3.0), 1e-15);
  EXPECT_NEAR(probs[0], 0.25, 1e-15);
}

// ---------------------------------------------------------------------------------------------

template <class T>
void check_elementwise_losses(int64_t count, int64_t c) {
  SCOPED_TRACE("count=" + std::to_string(count) + " c=" + std::to_string(c));
  std::vector<T> x = uniform<T>(count, 21 + count, -8, 8);
  if (count > 3) x[1] = T(1000), x[2] = T(-1000);
  const std::vector<T> t = uniform<T>(count, 22 + count, 0, 1);
  const std::vector<T> pos_weight = uniform<T>(c, 23, 0.5, 3);
  const double tol = sizeof(T) == 4 ? 2e-6 : 1e-13;
  for (Reduction red : {Reduction::mean, Reduction::sum}) {
    for (const T* pw : {static_cast<const T*>(nullptr), pos_weight.data()}) {
      const double bce_ref = bce_with_logits_forward_reference(x.data(), t.data(), pw, red,
                                                               count, c);
      std::vector<T> dbce_ref(count);
      bce_with_logits_backward_reference(dbce_ref.data(), x.data(), t.data(), pw, red, 1.5,
                                         count, c);
      double bce_one = 0;
      std::vector<T> dbce_one;
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        const double bce = bce_with_logits_forward(x.data(), t.data(), pw, red, count, c);
        std::vector<T> dbce(count);
        bce_with_logits_backward(dbce.data(), x.data(), t.data(), pw, red, 1.5, count, c);
        // Summing a million float terms in fixed blocks loses a little relative accuracy.
        expect_loss_near(bce, bce_ref, sizeof(T) == 4 ? 1e-5 : 1e-12, "bce");
        expect_near(dbce, dbce_ref, 4 * tol, "bce gradient");
        if (threads == 1) {
          bce_one = bce, dbce_one = dbce;
        } else {
          if (count) EXPECT_EQ(bce, bce_one) << "bce 1 vs 2 threads";
          expect_identical(dbce, dbce_one, "bce gradient 1 vs 2 threads");
        }
      }
    }
    const double mse_ref = mse_forward_reference(x.data(), t.data(), red, count);
    std::vector<T> dmse_ref(count);
    mse_backward_reference(dmse_ref.data(), x.data(), t.data(), red, 0.5, count);
    double mse_one = 0;
    std::vector<T> dmse_one;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      const double mse = mse_forward(x.data(), t.data(), red, count);
      std::vector<T> dmse(count);
      mse_backward(dmse.data(), x.data(), t.data(), red, 0.5, count);
      expect_loss_near(mse, mse_ref, 1e-13, "mse");
      expect_near(dmse, dmse_ref, 1000 * tol, "mse gradient");
      if (threads == 1) {
        mse_one = mse, dmse_one = dmse;
      } else {
        if (count) EXPECT_EQ(mse, mse_one) << "mse 1 vs 2 threads";
        expect_identical(dmse, dmse_one, "mse gradient 1 vs 2 threads");
      }
    }
  }
}

template <class T>
void check_elementwise_losses_all() {
  for (int64_t count : {0, 1, 7, 8, 9, 1000003}) check_elementwise_losses<T>(count, 1);
  check_elementwise_losses<T>(63, 7);
  check_elementwise_losses<T>(7 * 30011, 7);
}

TEST_F(LossKernels, MseAndBceMatchReferenceFloat) { check_elementwise_losses_all<float>(); }
TEST_F(LossKernels, MseAndBceMatchReferenceDouble) { check_elementwise_losses_all<double>(); }

TEST(BceWithLogits, StableForLargeLogits) {
  const std::vector<float> x = {1000, -1000, 1000, -1000};
  const std::vector<float> t = {1, 0, 0, 1};
  const double loss =
      bce_with_logits_forward<float>(x.data(), t.data(), nullptr, Reduction::sum, 4, 1);
  EXPECT_NEAR(loss, 2000.0, 1e-9);
  std::vector<float> d(4);
  bce_with_logits_backward<float>(d.data(), x.data(), t.data(), nullptr, Reduction::sum, 1.0, 4,
                                  1);
  EXPECT_EQ(d[0], 0.0f);
  EXPECT_EQ(d[1], 0.0f);
  EXPECT_EQ(d[2], 1.0f);
  EXPECT_EQ(d[3], -1.0f);
}

}  // namespace
}  // namespace fastnn
