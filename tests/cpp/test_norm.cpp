#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "norm.h"
#include "threading.h"

namespace fastnn {
namespace {

template <class T>
std::vector<T> pattern(int64_t count, uint32_t seed, double offset = 0.0) {
  std::vector<T> v(static_cast<size_t>(count));
  uint32_t state = seed * 2654435761u + 99u;
  for (auto& e : v) {
    state = state * 1664525u + 1013904223u;
    e = static_cast<T>(offset + static_cast<double>(state >> 8) / double(1 << 24) * 2.0 - 1.0);
  }
  return v;
}

template <class T>
double max_abs_diff(const std::vector<T>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - b[i]);
    if (!(d <= worst)) worst = d;
  }
  return worst;
}

class Norm : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

// Batch norm from its definition, in double: forward statistics, then the textbook gradient
// dx = g * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
struct BatchNormRef {
  std::vector<double> y, mean, invstd, rm, rv, dx, dgamma, dbeta;
};

BatchNormRef batch_norm_ref(const std::vector<double>& x, const std::vector<double>& gamma,
                            const std::vector<double>& beta, const std::vector<double>& dy,
                            int64_t n, int64_t c, int64_t s, double eps, double momentum) {
  BatchNormRef r;
  const double m = double(n * s);
  r.y.resize(x.size()), r.dx.resize(x.size());
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0, sdy = 0, sdyx = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t k = 0; k < s; ++k) sum += x[(i * c + ch) * s + k];
    }
    const double mu = sum / m;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t k = 0; k < s; ++k) sq += std::pow(x[(i * c + ch) * s + k] - mu, 2);
    }
    const double is = 1.0 / std::sqrt(sq / m + eps);
    r.mean.push_back(mu), r.invstd.push_back(is);
    r.rm.push_back(0.5 * (1 - momentum) + momentum * mu);
    r.rv.push_back(2.0 * (1 - momentum) + momentum * sq / (m - 1));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t k = 0; k < s; ++k) {
        const int64_t e = (i * c + ch) * s + k;
        const double xhat = (x[e] - mu) * is;
        r.y[e] = xhat * gamma[ch] + beta[ch];
        sdy += dy[e], sdyx += dy[e] * xhat;
      }
    }
    r.dgamma.push_back(sdyx), r.dbeta.push_back(sdy);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t k = 0; k < s; ++k) {
        const int64_t e = (i * c + ch) * s + k;
        const double xhat = (x[e] - mu) * is;
        r.dx[e] = gamma[ch] * is * (dy[e] - sdy / m - xhat * sdyx / m);
      }
    }
  }
  return r;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

template <class T>
void check_batch_norm(int64_t n, int64_t c, int64_t s, double offset, double tol) {
  const double eps = 1e-5, momentum = 0.1;
  const auto x = pattern<T>(n * c * s, 1, offset), gamma = pattern<T>(c, 2);
  const auto beta = pattern<T>(c, 3), dy = pattern<T>(n * c * s, 4);
  const BatchNormRef ref =
      batch_norm_ref(widen(x), widen(gamma), widen(beta), widen(dy), n, c, s, eps, momentum);
  std::vector<T> first_dx;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<T> y(x.size()), mean(c), invstd(c), rm(c, T(0.5)), rv(c, T(2.0));
    batch_norm_forward_train(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                             x.data(), gamma.data(), beta.data(), n, c, s, eps, momentum);
    EXPECT_LE(max_abs_diff(y, ref.y), tol) << "y n=" << n << " c=" << c << " s=" << s;
    EXPECT_LE(max_abs_diff(mean, ref.mean), tol) << "mean";
    EXPECT_LE(max_abs_diff(invstd, ref.invstd), tol * 10) << "invstd";
    EXPECT_LE(max_abs_diff(rm, ref.rm), tol) << "running_mean";
    EXPECT_LE(max_abs_diff(rv, ref.rv), tol) << "running_var";
    std::vector<T> dx(x.size()), dgamma(c, T(1)), dbeta(c, T(1));
    batch_norm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(), mean.data(),
                        invstd.data(), gamma.data(), n, c, s, true, true);
    std::vector<double> dgamma_ref = ref.dgamma, dbeta_ref = ref.dbeta;
    for (auto& v : dgamma_ref) v += 1;  // accumulated onto the initial 1
    for (auto& v : dbeta_ref) v += 1;
    EXPECT_LE(max_abs_diff(dx, ref.dx), tol * 10) << "dx n=" << n << " c=" << c << " s=" << s;
    EXPECT_LE(max_abs_diff(dgamma, dgamma_ref), tol * 100) << "dgamma";
    EXPECT_LE(max_abs_diff(dbeta, dbeta_ref), tol * 100) << "dbeta";
    if (threads == 1) first_dx = dx;
    EXPECT_EQ(dx, first_dx) << "dx differs between 1 and 2 threads";
  }
}

TEST_F(Norm, BatchNorm2dFloat) { check_batch_norm<float>(8, 3, 49, 0.0, 2e-5); }
TEST_F(Norm, BatchNorm2dDouble) { check_batch_norm<double>(5, 4, 33, 0.0, 1e-12); }
TEST_F(Norm, BatchNorm1dNoSpatial) { check_batch_norm<double>(7, 5, 1, 0.0, 1e-12); }
TEST_F(Norm, BatchNormLargeWorkSplitsAcrossThreads) {
  check_batch_norm<float>(64, 16, 169, 0.0, 5e-5);
}
// A large common offset: a one-pass E[x^2] - E[x]^2 in float would lose the variance entirely.
TEST_F(Norm, BatchNormLargeOffsetStaysAccurate) {
  check_batch_norm<float>(6, 2, 50, 1000.0, 2e-3);
}

TEST_F(Norm, BatchNormEvalAndItsBackward) {
  const int64_t n = 3, c = 2, s = 4;
  const auto x = pattern<double>(n * c * s, 5), dy = pattern<double>(n * c * s, 6);
  const std::vector<double> rm = {0.25, -0.5}, rv = {1.5, 0.75}, gamma = {2.0, -1.0};
  const std::vector<double> beta = {0.1, 0.2};
  std::vector<double> y(x.size()), dx(x.size()), invstd(c), dgamma(c), dbeta(c);
  batch_norm_forward_eval(y.data(), x.data(), rm.data(), rv.data(), gamma.data(), beta.data(),
                          n, c, s, 1e-5);
  for (int64_t ch = 0; ch < c; ++ch) invstd[ch] = 1.0 / std::sqrt(rv[ch] + 1e-5);
  batch_norm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(), rm.data(),
                      invstd.data(), gamma.data(), n, c, s, false, false);
  for (int64_t e = 0; e < n * c * s; ++e) {
    const int64_t ch = (e / s) % c;
    EXPECT_NEAR(y[e], (x[e] - rm[ch]) * invstd[ch] * gamma[ch] + beta[ch], 1e-12);
    EXPECT_NEAR(dx[e], dy[e] * gamma[ch] * invstd[ch], 1e-12);
  }
}

TEST_F(Norm, LayerNormMatchesDefinition) {
  const int64_t rows = 300, d = 37;  // more rows than the reduction's block count
  const auto x = pattern<double>(rows * d, 7, 3.0), dy = pattern<double>(rows * d, 8);
  const auto gamma = pattern<double>(d, 9), beta = pattern<double>(d, 10);
  std::vector<double> y_ref(x.size()), dx_ref(x.size()), dg_ref(d, 0.0), db_ref(d, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0, a = 0, b = 0;
    for (int64_t i = 0; i < d; ++i) mu += x[r * d + i] / d;
    for (int64_t i = 0; i < d; ++i) var += std::pow(x[r * d + i] - mu, 2) / d;
    const double rs = 1 / std::sqrt(var + 1e-5);
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = (x[r * d + i] - mu) * rs;
      y_ref[r * d + i] = xhat * gamma[i] + beta[i];
      a += dy[r * d + i] * gamma[i] / d, b += dy[r * d + i] * gamma[i] * xhat / d;
      dg_ref[i] += dy[r * d + i] * xhat, db_ref[i] += dy[r * d + i];
    }
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = (x[r * d + i] - mu) * rs;
      dx_ref[r * d + i] = rs * (dy[r * d + i] * gamma[i] - a - xhat * b);
    }
  }
  std::vector<double> first_dg;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<double> y(x.size()), mean(rows), rstd(rows), dx(x.size()), dg(d), db(d);
    layer_norm_forward(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(),
                       rows, d, 1e-5);
    layer_norm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), mean.data(),
                        rstd.data(), gamma.data(), rows, d, false);
    EXPECT_LE(max_abs_diff(y, y_ref), 1e-12);
    EXPECT_LE(max_abs_diff(dx, dx_ref), 1e-12);
    EXPECT_LE(max_abs_diff(dg, dg_ref), 1e-11);
    EXPECT_LE(max_abs_diff(db, db_ref), 1e-11);
    if (threads == 1) first_dg = dg;
    EXPECT_EQ(dg, first_dg) << "dgamma differs between 1 and 2 threads";
  }
}

TEST_F(Norm, LayerNormWithoutAffine) {
  const int64_t rows = 4, d = 6;
  const auto x = pattern<float>(rows * d, 11);
  std::vector<float> y(x.size()), mean(rows), rstd(rows);
  layer_norm_forward<float>(y.data(), mean.data(), rstd.data(), x.data(), nullptr, nullptr, rows,
                            d, 1e-5);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0, sq = 0;
    for (int64_t i = 0; i < d; ++i) s += y[r * d + i], sq += double(y[r * d + i]) * y[r * d + i];
    EXPECT_NEAR(s / d, 0.0, 1e-6);
    EXPECT_NEAR(sq / d, 1.0, 1e-3);  // eps keeps it just under 1
  }
}

TEST_F(Norm, Dropout2dScalesWholePlanes) {
  const int64_t n = 2, c = 3, s = 5;
  const auto x = pattern<float>(n * c * s, 12);
  const std::vector<float> mask = {1, 0, 1, 0, 0, 1};
  std::vector<float> y(x.size());
  dropout2d_apply(y.data(), x.data(), mask.data(), n, c, s, 2.0f);
  for (int64_t e = 0; e < n * c * s; ++e) EXPECT_EQ(y[e], x[e] * mask[e / s] * 2.0f);
}

}  // namespace
}  // namespace fastnn
