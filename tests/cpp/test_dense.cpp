// Fused dense kernels against their plain references, float and double, 1 and 2 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "activation_kind.h"
#include "activation_math.h"
#include "dense.h"
#include "threading.h"

namespace fastnn {
namespace {

constexpr Act kAllActs[] = {Act::identity, Act::relu,  Act::leaky_relu, Act::elu,
                            Act::sigmoid,  Act::tanh,  Act::gelu,       Act::gelu_tanh,
                            Act::silu,     Act::softplus};

struct Shape {
  const char* name;
  int64_t n, in, out;
};

const Shape kShapes[] = {
    {"n_eq_1", 1, 33, 21},           {"small_batch", 5, 40, 19},
    {"batch_above_dot_rows", 37, 29, 45}, {"out_below_tile", 20, 17, 3},
    {"in_eq_1", 9, 1, 12},           {"zero_batch", 0, 7, 5},
    {"wider", 70, 130, 90},
};

template <class T>
std::vector<T> random_values(size_t count, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(count);
  for (auto& x : v) x = T(dist(gen));
  return v;
}

template <class T>
double tolerance(int64_t k) {
  return 8.0 * std::numeric_limits<T>::epsilon() * double(k + 4);
}

// Largest |a - b| (infinity if either is NaN where the other is not).
template <class T>
double max_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  return a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

class DenseTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

template <class T>
void check_forward(const Shape& s, Act act, bool with_bias, bool with_z) {
  SCOPED_TRACE(std::string(s.name) + " " + act_name(act) + (with_bias ? " bias" : "") +
               (with_z ? " Z" : "") + (sizeof(T) == 4 ? " float" : " double"));
  const T alpha = act == Act::elu ? T(0.7) : T(0.05);
  const auto x = random_values<T>(size_t(s.n * s.in), 1);
  const auto w = random_values<T>(size_t(s.out * s.in), 2);
  const auto b = random_values<T>(size_t(s.out), 3);
  const size_t ny = size_t(s.n * s.out);
  std::vector<T> y_ref(ny), z_ref(ny);
  dense_forward_reference<T>(y_ref.data(), z_ref.data(), x.data(), w.data(),
                             with_bias ? b.data() : nullptr, s.n, s.in, s.out, act, alpha);
  std::vector<T> y[2], z[2];
  for (int t = 0; t < 2; ++t) {
    set_num_threads(t + 1);
    y[t].assign(ny, std::numeric_limits<T>::quiet_NaN());  // overwritten, never read
    z[t].assign(ny, std::numeric_limits<T>::quiet_NaN());
    dense_forward<T>(y[t].data(), with_z ? z[t].data() : nullptr, x.data(), w.data(),
                     with_bias ? b.data() : nullptr, s.n, s.in, s.out, act, alpha);
  }
  const double tol = tolerance<T>(s.in);
  EXPECT_LE(max_diff(y[0], y_ref), tol) << "Y: largest difference";
  if (with_z) EXPECT_LE(max_diff(z[0], z_ref), tol) << "Z: largest difference";
  EXPECT_TRUE(same_bits(y[0], y[1])) << "Y differs between 1 and 2 threads";
  EXPECT_TRUE(same_bits(z[0], z[1])) << "Z differs between 1 and 2 threads";
}

template <class T>
void check_backward(const Shape& s, Act act, bool accumulate, bool pass_z) {
  SCOPED_TRACE(std::string(s.name) + " " + act_name(act) + (accumulate ? " accumulate" : "") +
               (pass_z ? " Z" : "") + (sizeof(T) == 4 ? " float" : " double"));
  const T alpha = act == Act::elu ? T(0.7) : T(0.05);
  const auto x = random_values<T>(size_t(s.n * s.in), 11);
  const auto w = random_values<T>(size_t(s.out * s.in), 12);
  const auto b = random_values<T>(size_t(s.out), 13);
  const auto dy = random_values<T>(size_t(s.n * s.out), 14);
  std::vector<T> y(size_t(s.n * s.out)), z(size_t(s.n * s.out));
  dense_forward_reference<T>(y.data(), z.data(), x.data(), w.data(), b.data(), s.n, s.in, s.out,
                             act, alpha);
  const T* zp = pass_z ? z.data() : nullptr;
  const auto dw0 = random_values<T>(size_t(s.out * s.in), 15);
  const auto db0 = random_values<T>(size_t(s.out), 16);

  std::vector<T> dx_ref(size_t(s.n * s.in)), dw_ref = dw0, db_ref = db0;
  dense_backward_reference<T>(dx_ref.data(), dw_ref.data(), db_ref.data(), dy.data(), x.data(),
                              w.data(), y.data(), zp, s.n, s.in, s.out, act, alpha, accumulate);
  std::vector<T> dx[2], dw[2], db[2];
  for (int t = 0; t < 2; ++t) {
    set_num_threads(t + 1);
    dx[t].assign(size_t(s.n * s.in), std::numeric_limits<T>::quiet_NaN());
    dw[t] = dw0;
    db[t] = db0;
    if (!accumulate) {  // overwritten outputs must not be read
      for (auto& v : dw[t]) v = std::numeric_limits<T>::quiet_NaN();
      for (auto& v : db[t]) v = std::numeric_limits<T>::quiet_NaN();
    }
    dense_backward<T>(dx[t].data(), dw[t].data(), db[t].data(), dy.data(), x.data(), w.data(),
                      y.data(), zp, s.n, s.in, s.out, act, alpha, accumulate);
  }
  EXPECT_LE(max_diff(dx[0], dx_ref), tolerance<T>(s.out)) << "dX: largest difference";
  EXPECT_LE(max_diff(dw[0], dw_ref), tolerance<T>(s.n)) << "dW: largest difference";
  EXPECT_LE(max_diff(db[0], db_ref), tolerance<T>(s.n)) << "db: largest difference";
  EXPECT_TRUE(same_bits(dx[0], dx[1])) << "dX differs between 1 and 2 threads";
  EXPECT_TRUE(same_bits(dw[0], dw[1])) << "dW differs between 1 and 2 threads";
  EXPECT_TRUE(same_bits(db[0], db[1])) << "db differs between 1 and 2 threads";
}

TEST_F(DenseTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    for (Act act : kAllActs) {
      check_forward<float>(s, act, true, true);
      check_forward<double>(s, act, true, true);
    }
    check_forward<float>(s, Act::identity, false, false);  // the plain-GEMM shortcut
    check_forward<float>(s, Act::relu, false, false);
    check_forward<double>(s, Act::tanh, true, false);
  }
}

TEST_F(DenseTest, ForwardLargeUsesPackedPathWithEpilogue) {
  const Shape big{"large", 130, 300, 517};
  check_forward<float>(big, Act::gelu, true, true);
  check_forward<double>(big, Act::relu, true, true);
}

TEST_F(DenseTest, BackwardMatchesReference) {
  for (const Shape& s : kShapes) {
    for (Act act : kAllActs) {
      // Z is passed when the activation's gradient needs it; for the others both ways work.
      const bool needs_z = !act_derivative_from_output(act, act == Act::elu ? 0.7 : 0.05);
      check_backward<float>(s, act, true, true);
      check_backward<double>(s, act, false, true);
      if (!needs_z) check_backward<float>(s, act, false, false);
    }
  }
}

TEST_F(DenseTest, BackwardSkipsNullOutputs) {
  const int64_t n = 4, in = 6, out = 5;
  const auto x = random_values<float>(n * in, 1), w = random_values<float>(out * in, 2);
  const auto dy = random_values<float>(n * out, 3);
  std::vector<float> y(n * out), db(out, 0.0f), db_ref(out, 0.0f);
  dense_forward_reference<float>(y.data(), nullptr, x.data(), w.data(), nullptr, n, in, out,
                                 Act::relu, 0.0f);
  dense_backward<float>(nullptr, nullptr, db.data(), dy.data(), x.data(), w.data(), y.data(),
                        nullptr, n, in, out, Act::relu, 0.0f, false);
  dense_backward_reference<float>(nullptr, nullptr, db_ref.data(), dy.data(), x.data(),
                                  w.data(), y.data(), nullptr, n, in, out, Act::relu, 0.0f,
                                  false);
  EXPECT_LE(max_diff(db, db_ref), 1e-6);
}

TEST_F(DenseTest, BackwardWithoutNeededZThrows) {
  std::vector<float> buf(16, 0.5f);
  try {
    dense_backward<float>(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), buf.data(),
                          buf.data(), nullptr, 2, 2, 2, Act::gelu, 0.0f, true);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gelu"), std::string::npos) << e.what();
  }
}

TEST_F(DenseTest, BiasAddMatchesReference) {
  for (int64_t rows : {0, 1, 7, 3000}) {
    for (int64_t cols : {1, 5, 300}) {
      const auto b = random_values<double>(size_t(cols), 4);
      auto y = random_values<double>(size_t(rows * cols), 5), y_ref = y;
      set_num_threads(2);
      bias_add(y.data(), b.data(), rows, cols);
      bias_add_reference(y_ref.data(), b.data(), rows, cols);
      EXPECT_TRUE(same_bits(y, y_ref)) << rows << " x " << cols;
    }
  }
}

TEST_F(DenseTest, BiasGradMatchesReferenceAndIsThreadIndependent) {
  for (int64_t rows : {0, 1, 100, 513, 5000}) {
    for (int64_t cols : {1, 7, 300}) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
        const auto dy = random_values<float>(size_t(rows * cols), 6);
        const auto db0 = random_values<float>(size_t(cols), 7);
        std::vector<float> ref = db0, one = db0, two = db0;
        bias_grad_reference(ref.data(), dy.data(), rows, cols, accumulate);
        set_num_threads(1);
        bias_grad(one.data(), dy.data(), rows, cols, accumulate);
        set_num_threads(2);
        bias_grad(two.data(), dy.data(), rows, cols, accumulate);
        EXPECT_LE(max_diff(one, ref), 1e-5 * (1.0 + std::sqrt(double(rows))));
        EXPECT_TRUE(same_bits(one, two));
      }
    }
  }
}

}  // namespace
}  // namespace fastnn
