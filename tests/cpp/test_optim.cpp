// Optimizer steps and list utilities: fast multi-tensor path against the one-element-at-a-time
// reference, over awkward tensor sizes, float and double, 1 and 2 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "optim.h"
#include "threading.h"

namespace fastnn {
namespace {

// One list of tensors: sizes 0, 1, 7, 8, 9 and a large one, so chunk edges and the threading
// threshold are crossed.
const std::vector<int64_t> kSizes = {0, 1, 7, 8, 9, 1000003, 3};

template <class T>
std::vector<T> values(int64_t n, uint64_t seed, double lo, double hi) {
  std::vector<T> v(static_cast<size_t>(n));
  uint64_t s = seed * 2654435761u + 1;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = T(lo + (hi - lo) * double(s >> 11) / double(1ull << 53));
  }
  return v;
}

// Per-tensor buffers: param, grad and up to three state arrays.
template <class T>
struct Buffers {
  std::vector<std::vector<T>> param, grad, s0, s1, s2;
  explicit Buffers(uint64_t seed) {
    for (size_t i = 0; i < kSizes.size(); ++i) {
      const int64_t n = kSizes[i];
      param.push_back(values<T>(n, seed + 10 * i, -1, 1));
      grad.push_back(values<T>(n, seed + 10 * i + 1, -1, 1));
      s0.push_back(values<T>(n, seed + 10 * i + 2, -0.1, 0.1));
      s1.push_back(values<T>(n, seed + 10 * i + 3, 0, 0.01));
      s2.push_back(values<T>(n, seed + 10 * i + 4, 0, 0.02));
    }
  }
  // New gradients for the next step: a cheap deterministic map that keeps them in [-1, 1].
  void next_grads() {
    for (auto& g : grad) {
      for (auto& x : g) x = T(-0.8) * x + T(0.15);
    }
  }
};

// Generating a million values per array is slow; each test copies one set made once.
template <class T>
const Buffers<T>& initial_buffers() {
  static const Buffers<T> buffers(1);
  return buffers;
}

template <class T>
void expect_close(const Buffers<T>& got, const Buffers<T>& want, double ulps, const char* what) {
  const double eps = sizeof(T) == 4 ? 1.2e-7 : 2.3e-16;
  auto cmp = [&](const std::vector<std::vector<T>>& a, const std::vector<std::vector<T>>& b,
                 const char* which) {
    for (size_t t = 0; t < a.size(); ++t) {
      double worst = 0;
      size_t at = 0;
      for (size_t i = 0; i < a[t].size(); ++i) {
        const double d = std::fabs(double(a[t][i]) - double(b[t][i])) /
                         (eps * std::max(1.0, std::fabs(double(b[t][i]))));
        if (!(d <= worst)) worst = d, at = i;
      }
      ASSERT_LE(worst, ulps) << what << " " << which << "[" << t << "] differs at " << at;
    }
  };
  cmp(got.param, want.param, "param");
  cmp(got.s0, want.s0, "state0");
  cmp(got.s1, want.s1, "state1");
  cmp(got.s2, want.s2, "state2");
}

template <class T>
void expect_identical(const Buffers<T>& a, const Buffers<T>& b, const char* what) {
  expect_close(a, b, 0.0, what);
}

class OptimKernels : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

// Runs `steps` steps with the fast kernel (1 and 2 threads) and the reference, and compares.
template <class T, class Fast, class Ref>
void run_steps(int steps, Fast&& fast, Ref&& ref, const std::string& what) {
  Buffers<T> want = initial_buffers<T>();
  for (int s = 0; s < steps; ++s) {
    ref(want, s);
    want.next_grads();
  }
  Buffers<T> first = want;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Buffers<T> got = initial_buffers<T>();
    for (int s = 0; s < steps; ++s) {
      fast(got, s);
      got.next_grads();
    }
    expect_close(got, want, 2.0, what.c_str());
    if (threads == 1) {
      first = got;
    } else {
      expect_identical(got, first, (what + " 1 vs 2 threads").c_str());
    }
  }
}

template <class T>
std::vector<SgdTensor<T>> sgd_list(Buffers<T>& b, bool momentum) {
  std::vector<SgdTensor<T>> v;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    v.push_back({b.param[i].data(), b.grad[i].data(), momentum ? b.s0[i].data() : nullptr,
                 kSizes[i]});
  }
  return v;
}

template <class T>
void check_sgd() {
  struct Case {
    double momentum, dampening, weight_decay;
    bool nesterov, maximize;
  };
  for (const Case& c : {Case{0, 0, 0, false, false}, Case{0.9, 0, 0, false, false},
                        Case{0.9, 0.1, 1e-2, false, true}, Case{0.8, 0, 1e-3, true, false}}) {
    SgdOptions o;
    o.lr = 0.05, o.momentum = c.momentum, o.dampening = c.dampening;
    o.weight_decay = c.weight_decay, o.nesterov = c.nesterov, o.maximize = c.maximize;
    run_steps<T>(
        3,
        [&](Buffers<T>& b, int s) {
          SgdOptions os = o;
          os.first_step = s == 0;
          sgd_step(sgd_list(b, o.momentum != 0), os);
        },
        [&](Buffers<T>& b, int s) {
          SgdOptions os = o;
          os.first_step = s == 0;
          sgd_step_reference(sgd_list(b, o.momentum != 0), os);
        },
        "sgd momentum " + std::to_string(c.momentum));
  }
}

template <class T>
std::vector<AdamTensor<T>> adam_list(Buffers<T>& b, bool amsgrad) {
  std::vector<AdamTensor<T>> v;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    v.push_back({b.param[i].data(), b.grad[i].data(), b.s0[i].data(), b.s1[i].data(),
                 amsgrad ? b.s2[i].data() : nullptr, kSizes[i]});
  }
  return v;
}

template <class T>
void check_adam() {
  struct Case {
    bool amsgrad;
    double weight_decay;
    bool decoupled, maximize;
  };
  for (const Case& c : {Case{false, 0, false, false}, Case{true, 0.05, false, false},
                        Case{false, 0.05, true, false}, Case{true, 0.05, true, true}}) {
    AdamOptions o;
    o.lr = 1e-2, o.weight_decay = c.weight_decay, o.decoupled_weight_decay = c.decoupled;
    o.maximize = c.maximize;
    auto at_step = [o](int s) {
      AdamOptions os = o;
      os.step = s + 1;
      return os;
    };
    const bool ams = c.amsgrad;
    run_steps<T>(
        3, [&](Buffers<T>& b, int s) { adam_step(adam_list(b, ams), at_step(s)); },
        [&](Buffers<T>& b, int s) { adam_step_reference(adam_list(b, ams), at_step(s)); },
        "adam amsgrad " + std::to_string(ams) + " decoupled " + std::to_string(c.decoupled));
  }
}

template <class T>
std::vector<RmspropTensor<T>> rmsprop_list(Buffers<T>& b) {
  std::vector<RmspropTensor<T>> v;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    // grad_avg starts at zero, as PyTorch's, so that square_avg - grad_avg^2 stays >= 0.
    v.push_back({b.param[i].data(), b.grad[i].data(), b.s1[i].data(), b.s0[i].data(),
                 b.s2[i].data(), kSizes[i]});
  }
  return v;
}

template <class T>
void check_rmsprop() {
  for (double momentum : {0.0, 0.9}) {
    for (bool centered : {false, true}) {
      RmspropOptions o;
      o.lr = 1e-2, o.momentum = momentum, o.centered = centered, o.weight_decay = 1e-3;
      o.maximize = centered && momentum > 0;
      auto zero_grad_avg = [](Buffers<T>& b) {
        for (auto& a : b.s2) std::fill(a.begin(), a.end(), T(0));
      };
      run_steps<T>(
          3,
          [&](Buffers<T>& b, int s) {
            if (s == 0) zero_grad_avg(b);
            rmsprop_step(rmsprop_list(b), o);
          },
          [&](Buffers<T>& b, int s) {
            if (s == 0) zero_grad_avg(b);
            rmsprop_step_reference(rmsprop_list(b), o);
          },
          "rmsprop momentum " + std::to_string(momentum) + " centered " +
              std::to_string(centered));
    }
  }
}

template <class T>
std::vector<AdagradTensor<T>> adagrad_list(Buffers<T>& b) {
  std::vector<AdagradTensor<T>> v;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    v.push_back({b.param[i].data(), b.grad[i].data(), b.s1[i].data(), kSizes[i]});
  }
  return v;
}

template <class T>
void check_adagrad() {
  AdagradOptions o;
  o.lr = 0.1, o.lr_decay = 0.01, o.weight_decay = 1e-2, o.maximize = true;
  auto at_step = [o](int s) {
    AdagradOptions os = o;
    os.step = s + 1;
    return os;
  };
  run_steps<T>(
      3, [&](Buffers<T>& b, int s) { adagrad_step(adagrad_list(b), at_step(s)); },
      [&](Buffers<T>& b, int s) { adagrad_step_reference(adagrad_list(b), at_step(s)); },
      "adagrad");
}

TEST_F(OptimKernels, SgdMatchesReferenceFloat) { check_sgd<float>(); }

// The vector loops do the reference's multiplies and adds in the same order: exact results.
TEST_F(OptimKernels, SgdFloatEqualsReferenceBitForBit) {
  for (bool nesterov : {false, true}) {
    for (double weight_decay : {0.0, 1e-2}) {
      SgdOptions o;
      o.lr = 0.05, o.momentum = 0.9, o.weight_decay = weight_decay, o.nesterov = nesterov;
      Buffers<float> got = initial_buffers<float>(), want = got;
      for (int s = 0; s < 3; ++s) {
        o.first_step = s == 0;
        sgd_step(sgd_list(got, true), o);
        sgd_step_reference(sgd_list(want, true), o);
        got.next_grads();
        want.next_grads();
      }
      expect_identical(got, want, nesterov ? "sgd nesterov" : "sgd");
    }
  }
}
TEST_F(OptimKernels, SgdMatchesReferenceDouble) { check_sgd<double>(); }
TEST_F(OptimKernels, AdamMatchesReferenceFloat) { check_adam<float>(); }
TEST_F(OptimKernels, AdamMatchesReferenceDouble) { check_adam<double>(); }
TEST_F(OptimKernels, RmspropMatchesReferenceFloat) { check_rmsprop<float>(); }
TEST_F(OptimKernels, RmspropMatchesReferenceDouble) { check_rmsprop<double>(); }
TEST_F(OptimKernels, AdagradMatchesReferenceFloat) { check_adagrad<float>(); }
TEST_F(OptimKernels, AdagradMatchesReferenceDouble) { check_adagrad<double>(); }

TEST_F(OptimKernels, EmptyListIsANoOp) {
  sgd_step<float>({}, SgdOptions{});
  adam_step<double>({}, AdamOptions{});
  EXPECT_EQ(sum_of_squares<float>({}), 0.0);
}

template <class T>
void check_list_utilities() {
  Buffers<T> b = initial_buffers<T>();
  std::vector<Span<const T>> read;
  std::vector<Span<T>> write;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    read.push_back({b.param[i].data(), kSizes[i]});
    write.push_back({b.param[i].data(), kSizes[i]});
  }
  const double want = sum_of_squares_reference(read);
  double first = 0;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double got = sum_of_squares(read);
    EXPECT_NEAR(got, want, 1e-12 * want);
    if (threads == 1) first = got;
    else EXPECT_EQ(got, first) << "sum_of_squares 1 vs 2 threads";
  }
  scale_(write, T(-2));
  EXPECT_NEAR(sum_of_squares(read), 4 * want, 1e-11 * want);
  b.param[1][0] = T(NAN);
  clamp_(write, T(-0.5), T(1.5));
  EXPECT_TRUE(std::isnan(b.param[1][0]));
  for (size_t t = 0; t < kSizes.size(); ++t) {
    for (size_t i = 0; i < b.param[t].size(); ++i) {
      if (t == 1 && i == 0) continue;
      ASSERT_GE(b.param[t][i], T(-0.5));
      ASSERT_LE(b.param[t][i], T(1.5));
    }
  }
}

TEST_F(OptimKernels, ListUtilitiesFloat) { check_list_utilities<float>(); }
TEST_F(OptimKernels, ListUtilitiesDouble) { check_list_utilities<double>(); }

}  // namespace
}  // namespace fastnn
