#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "activation_math.h"
#include "conv.h"
#include "threading.h"

namespace fastnn {
namespace {

template <class T>
std::vector<T> pattern(int64_t count, uint32_t seed) {
  std::vector<T> v(static_cast<size_t>(count));
  uint32_t state = seed * 2654435761u + 12345u;
  for (auto& e : v) {
    state = state * 1664525u + 1013904223u;
    e = static_cast<T>(static_cast<double>(state >> 8) / double(1 << 24) * 2.0 - 1.0);
  }
  return v;
}

// Largest |a - b| relative to max(1, |b|); reported so a failure shows how far off it was.
template <class T>
double max_rel_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i])) / std::max(1.0, std::abs(double(b[i])));
    if (!(d <= worst)) worst = d;  // NaN propagates as a failure
  }
  return worst;
}

template <class T>
double tolerance() {
  return sizeof(T) == 4 ? 2e-5 : 1e-12;
}

struct Case {
  std::string name;
  Conv2dShape s;
};

Conv2dShape make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t kh, int64_t kw,
                 int64_t groups = 1, int64_t stride = 1, int64_t pad = 0, int64_t dil = 1) {
  Conv2dShape s;
  s.n = n, s.c = c, s.h = h, s.w = w, s.oc = oc, s.kh = kh, s.kw = kw, s.groups = groups;
  s.stride_h = s.stride_w = stride;
  s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = pad;
  s.dilation_h = s.dilation_w = dil;
  return s;
}

std::vector<Case> grid() {
  std::vector<Case> cases = {
      {"batch_1_single_channel", make(1, 1, 5, 5, 1, 3, 3)},
      {"odd_sizes", make(3, 3, 7, 9, 5, 3, 2)},
      {"stride_2_pad_1", make(2, 4, 9, 8, 6, 3, 3, 1, 2, 1)},
      {"stride_3_pad_2", make(2, 2, 11, 10, 3, 3, 3, 1, 3, 2)},
      {"dilation_2", make(2, 3, 9, 9, 4, 3, 3, 1, 1, 2)},
      {"dilation_2_stride_2_pad_2", make(3, 2, 10, 11, 2, 3, 3, 1, 2, 2, 2)},
      {"groups_2", make(2, 4, 6, 7, 6, 3, 3, 2, 1, 1)},
      {"depthwise", make(3, 5, 8, 6, 5, 3, 3, 5, 1, 1)},
      {"depthwise_multiplier_2", make(2, 3, 7, 7, 6, 5, 5, 3, 2, 2)},
      {"pointwise_1x1", make(3, 6, 5, 7, 4, 1, 1)},
      {"pointwise_1x1_groups_2", make(2, 4, 3, 5, 6, 1, 1, 2)},
      {"one_by_one_stride_2", make(2, 3, 7, 7, 4, 1, 1, 1, 2)},
      {"kernel_equals_padded_input", make(2, 2, 3, 3, 3, 5, 5, 1, 1, 1)},
      {"conv1d_shape", make(4, 3, 1, 17, 5, 1, 3, 1, 1, 0)},
      {"mnist_conv1", make(5, 1, 28, 28, 8, 3, 3)},
      {"batch_larger_than_gradient_chunks", make(19, 2, 6, 6, 3, 3, 3, 1, 1, 1)},
      {"large_plane_single_sample_batches", make(3, 2, 30, 30, 4, 3, 3, 1, 1, 1)},
  };
  // Stride-1 shapes wide enough for the wide unfolding, with its padded-copy variants.
  cases.push_back({"wide_unpadded", make(3, 2, 9, 16, 3, 3, 3)});
  cases.push_back({"wide_padded_dilated", make(2, 3, 12, 20, 4, 3, 3, 1, 1, 2, 2)});
  Conv2dShape wide_asym = make(2, 4, 9, 21, 6, 2, 4, 2);
  wide_asym.pad_top = 0, wide_asym.pad_bottom = 1, wide_asym.pad_left = 1, wide_asym.pad_right = 2;
  cases.push_back({"wide_asymmetric_padding_groups", wide_asym});
  Conv2dShape asym = make(2, 2, 6, 7, 3, 2, 4);
  asym.pad_top = 0, asym.pad_bottom = 1, asym.pad_left = 1, asym.pad_right = 2;
  cases.push_back({"asymmetric_same_padding", asym});
  Conv2dShape conv1d_pad = make(3, 4, 1, 12, 4, 1, 3, 2, 2, 0, 2);
  conv1d_pad.pad_left = conv1d_pad.pad_right = 2;
  cases.push_back({"conv1d_padded_dilated_grouped", conv1d_pad});
  for (auto& c : cases) EXPECT_TRUE(conv2d_finish_shape(c.s)) << c.name;
  return cases;
}

class Conv : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

template <class T>
void check_against_reference(const Case& c, bool with_bias, bool accumulate) {
  const Conv2dShape& s = c.s;
  const int64_t x_size = s.n * s.c * s.h * s.w, w_size = s.oc * s.patch();
  const int64_t y_size = s.n * s.oc * s.oh * s.ow;
  const auto x = pattern<T>(x_size, 1), w = pattern<T>(w_size, 2), b = pattern<T>(s.oc, 3);
  const auto dy = pattern<T>(y_size, 4);
  const T* bias = with_bias ? b.data() : nullptr;

  std::vector<T> y_ref(y_size), dx_ref(x_size), dw_ref = pattern<T>(w_size, 5);
  std::vector<T> db_ref = pattern<T>(s.oc, 6);
  conv2d_forward_reference(y_ref.data(), x.data(), w.data(), bias, s);
  const std::vector<T> dw_start = dw_ref, db_start = db_ref;
  conv2d_backward_reference(dx_ref.data(), dw_ref.data(), db_ref.data(), dy.data(), x.data(),
                            w.data(), s, accumulate);

  std::vector<T> y_first, dx_first, dw_first, db_first;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<T> y(y_size, T(NAN)), dx(x_size, T(NAN)), dw = dw_start, db = db_start;
    conv2d_forward(y.data(), x.data(), w.data(), bias, s);
    conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s,
                    accumulate);
    EXPECT_LE(max_rel_diff(y, y_ref), tolerance<T>()) << c.name << " y";
    EXPECT_LE(max_rel_diff(dx, dx_ref), tolerance<T>()) << c.name << " dx";
    EXPECT_LE(max_rel_diff(dw, dw_ref), tolerance<T>() * 4) << c.name << " dw";
    EXPECT_LE(max_rel_diff(db, db_ref), tolerance<T>() * 4) << c.name << " db";
    if (threads == 1) {
      y_first = y, dx_first = dx, dw_first = dw, db_first = db;
    } else {
      EXPECT_EQ(y, y_first) << c.name << " y differs between 1 and 2 threads";
      EXPECT_EQ(dx, dx_first) << c.name << " dx differs between 1 and 2 threads";
      EXPECT_EQ(dw, dw_first) << c.name << " dw differs between 1 and 2 threads";
      EXPECT_EQ(db, db_first) << c.name << " db differs between 1 and 2 threads";
    }
  }
}

TEST_F(Conv, MatchesReferenceFloat) {
  for (const auto& c : grid()) {
    check_against_reference<float>(c, true, false);
    check_against_reference<float>(c, false, true);
  }
}

TEST_F(Conv, MatchesReferenceDouble) {
  for (const auto& c : grid()) {
    check_against_reference<double>(c, true, true);
    check_against_reference<double>(c, false, false);
  }
}

// The backward with only some gradients requested computes the same values.
TEST_F(Conv, SkippedGradientsLeaveOthersUnchanged) {
  Conv2dShape s = make(3, 4, 6, 6, 4, 3, 3, 2, 1, 1);
  ASSERT_TRUE(conv2d_finish_shape(s));
  const auto x = pattern<double>(s.n * s.c * s.h * s.w, 1);
  const auto w = pattern<double>(s.oc * s.patch(), 2);
  const auto dy = pattern<double>(s.n * s.oc * s.oh * s.ow, 3);
  std::vector<double> dx(x.size()), dw(w.size()), db(s.oc), dx2(x.size()), dw2(w.size());
  conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s, false);
  conv2d_backward<double>(dx2.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), s, false);
  conv2d_backward<double>(nullptr, dw2.data(), nullptr, dy.data(), x.data(), w.data(), s, false);
  EXPECT_EQ(dx, dx2);
  EXPECT_EQ(dw, dw2);
}

// The fused epilogue equals the plain convolution followed by the activation, and the fused
// backward equals the plain backward of dy * act'(.). Covers the derivative taken from y (z not
// kept) and from z (y not passed), in the exact and the wide layouts.
TEST_F(Conv, FusedActivationMatchesConvThenActivation) {
  struct ActCase {
    Act kind;
    double alpha;
    bool keep_z;
  };
  const ActCase acts[] = {{Act::relu, 0, false}, {Act::tanh, 0, false},
                          {Act::leaky_relu, 0.1, false}, {Act::gelu, 0, true},
                          {Act::relu, 0, true}};
  for (const auto& c : grid()) {
    const Conv2dShape& s = c.s;
    const int64_t y_size = s.n * s.oc * s.oh * s.ow;
    const auto x = pattern<double>(s.n * s.c * s.h * s.w, 1);
    const auto w = pattern<double>(s.oc * s.patch(), 2), b = pattern<double>(s.oc, 3);
    const auto dy = pattern<double>(y_size, 4);
    std::vector<double> zr(y_size);
    conv2d_forward_reference(zr.data(), x.data(), w.data(), b.data(), s);
    for (const auto& a : acts) {
      const Activation act{a.kind, a.alpha};
      std::vector<double> yr(y_size), dzr(y_size);
      for (int64_t e = 0; e < y_size; ++e) {
        yr[e] = act_forward(a.kind, zr[e], a.alpha);
        dzr[e] = dy[e] * act_derivative(a.kind, zr[e], yr[e], a.alpha);
      }
      std::vector<double> dxr(x.size()), dwr(w.size()), dbr(s.oc);
      conv2d_backward_reference(dxr.data(), dwr.data(), dbr.data(), dzr.data(), x.data(),
                                w.data(), s, false);
      std::vector<double> y(y_size), z(y_size), dx(x.size()), dw(w.size()), db(s.oc);
      conv2d_forward(y.data(), a.keep_z ? z.data() : nullptr, x.data(), w.data(), b.data(), s,
                     act);
      EXPECT_LE(max_rel_diff(y, yr), 1e-12) << c.name << " y act " << act_name(a.kind);
      if (a.keep_z) EXPECT_LE(max_rel_diff(z, zr), 1e-12) << c.name << " z";
      conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(),
                      a.keep_z ? nullptr : y.data(), a.keep_z ? z.data() : nullptr, s, act,
                      false);
      EXPECT_LE(max_rel_diff(dx, dxr), 1e-12) << c.name << " dx act " << act_name(a.kind);
      EXPECT_LE(max_rel_diff(dw, dwr), 1e-11) << c.name << " dw act " << act_name(a.kind);
      EXPECT_LE(max_rel_diff(db, dbr), 1e-11) << c.name << " db act " << act_name(a.kind);
    }
  }
}

// A weight so large that fewer gradient partials are kept (the partial memory budget).
TEST_F(Conv, LargeWeightUsesFewerPartials) {
  Case c{"large_weight", make(9, 1024, 2, 2, 1024, 1, 1)};
  ASSERT_TRUE(conv2d_finish_shape(c.s));
  check_against_reference<double>(c, true, true);
}

TEST_F(Conv, ZeroSizedBatch) {
  Conv2dShape s = make(0, 2, 5, 5, 3, 3, 3);
  ASSERT_TRUE(conv2d_finish_shape(s));
  const auto w = pattern<float>(s.oc * s.patch(), 2);
  std::vector<float> dw(w.size(), 7.0f), db(s.oc, 7.0f);
  conv2d_forward<float>(nullptr, nullptr, w.data(), nullptr, s);
  conv2d_backward<float>(nullptr, dw.data(), db.data(), nullptr, nullptr, w.data(), s, false);
  for (float v : dw) EXPECT_EQ(v, 0.0f);
  for (float v : db) EXPECT_EQ(v, 0.0f);
}

TEST(ConvShape, OutputSizeFormula) {
  EXPECT_EQ(conv_output_size(28, 3, 1, 0, 0, 1), 26);
  EXPECT_EQ(conv_output_size(28, 3, 2, 1, 1, 1), 14);
  EXPECT_EQ(conv_output_size(10, 3, 1, 0, 0, 2), 6);
  EXPECT_EQ(conv_output_size(7, 3, 3, 1, 1, 1), 3);
  EXPECT_EQ(conv_output_size(5, 4, 1, 1, 2, 1), 5);  // "same" with an even kernel
}

TEST(ConvShape, KernelLargerThanPaddedInputRefused) {
  Conv2dShape s = make(1, 1, 3, 3, 1, 5, 5);
  EXPECT_FALSE(conv2d_finish_shape(s));
  s = make(1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 2);  // dilated span 5 > 4
  EXPECT_FALSE(conv2d_finish_shape(s));
  s = make(1, 1, 3, 3, 1, 5, 5, 1, 1, 1);  // padded to 5: exactly fits
  EXPECT_TRUE(conv2d_finish_shape(s));
  EXPECT_EQ(s.oh, 1);
}

}  // namespace
}  // namespace fastnn
