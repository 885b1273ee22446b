#include "activations.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "activation_math.h"
#include "cpu.h"
#include "threading.h"

namespace fastnn {
namespace {

// Elements per parallel chunk: large enough that a chunk outlasts the cost of handing it out.
constexpr int64_t kElemGrain = 1 << 14;

// Rough cost of one element in work units (about one per flop; a libm call is a few dozen), so
// that cheap activations on mid-sized arrays stay on one thread.
constexpr int64_t act_cost(Act kind) {
  switch (kind) {
    case Act::identity:
    case Act::relu:
    case Act::leaky_relu: return 1;
    default: return 24;
  }
}

// Activations with an AVX2 loop in activations_avx2.cpp (float only). The others call libm
// functions GCC cannot vectorise, or are vectorised well enough by the compiler.
constexpr bool has_avx2_forward(Act k) {
  return k == Act::relu || k == Act::leaky_relu || k == Act::sigmoid || k == Act::silu ||
         k == Act::tanh || k == Act::gelu_tanh;
}
constexpr bool has_avx2_backward(Act k) {
  return k == Act::relu || k == Act::leaky_relu || k == Act::silu || k == Act::gelu_tanh;
}

bool avx2_usable() {
#ifdef FASTNN_HAVE_AVX2_KERNELS
  return cpu_has_avx2_fma();
#else
  return false;
#endif
}

// Each returns how many leading elements it handled; the scalar loop does the rest.
template <Act K>
int64_t forward_avx2(float* y, const float* x, int64_t n, float alpha) {
#ifdef FASTNN_HAVE_AVX2_KERNELS
  if constexpr (K == Act::relu || K == Act::leaky_relu) {
    return detail::relu_family_forward_avx2(y, x, n, K == Act::leaky_relu, alpha);
  } else if constexpr (K == Act::sigmoid) {
    return detail::sigmoid_forward_avx2(y, x, n);
  } else if constexpr (K == Act::silu) {
    return detail::silu_forward_avx2(y, x, n);
  } else if constexpr (K == Act::tanh) {
    return detail::tanh_forward_avx2(y, x, n);
  } else if constexpr (K == Act::gelu_tanh) {
    return detail::gelu_tanh_forward_avx2(y, x, n);
  }
#endif
  (void)y, (void)x, (void)n, (void)alpha;
  return 0;
}

// src is what relu / leaky_relu test the sign of (see backward_loop); the others read x.
template <Act K>
int64_t backward_avx2(float* dx, const float* dy, const float* x, const float* src, int64_t n,
                      float alpha) {
#ifdef FASTNN_HAVE_AVX2_KERNELS
  if constexpr (K == Act::relu || K == Act::leaky_relu) {
    return detail::relu_family_backward_avx2(dx, dy, src, n, K == Act::leaky_relu, alpha);
  } else if constexpr (K == Act::silu) {
    return detail::silu_backward_avx2(dx, dy, x, n);
  } else if constexpr (K == Act::gelu_tanh) {
    return detail::gelu_tanh_backward_avx2(dx, dy, x, n);
  }
#endif
  (void)dx, (void)dy, (void)x, (void)src, (void)n, (void)alpha;
  return 0;
}

// The activation is a template parameter so that the switch in act_forward / act_derivative
// folds away and each loop body is straight-line code.
template <Act K, class T>
void forward_loop(T* y, const T* x, int64_t n, T alpha) {
  constexpr bool kVector = std::is_same_v<T, float> && has_avx2_forward(K);
  const bool avx2 = kVector && avx2_usable();
  parallel_for(n, kElemGrain, act_cost(K), [=](int64_t begin, int64_t end) {
    int64_t i = begin;
    if constexpr (kVector) {
      if (avx2) i += forward_avx2<K>(y + i, x + i, end - i, alpha);
    }
    for (; i < end; ++i) y[i] = act_forward(K, x[i], alpha);
  });
}

template <Act K, class T>
void backward_loop(T* dx, const T* dy, const T* x, const T* y, int64_t n, T alpha) {
  if (act_derivative_from_output(K, double(alpha))) {
    // y stands in for x: these derivatives read only y, or x's sign, which y shares here.
    x = y;
  }
  constexpr bool kVector = std::is_same_v<T, float> && has_avx2_backward(K);
  const bool avx2 = kVector && avx2_usable();
  parallel_for(n, kElemGrain, act_cost(K), [=](int64_t begin, int64_t end) {
    int64_t i = begin;
    if constexpr (kVector) {
      // relu tests y; leaky_relu tests y when alpha > 0 (x was swapped for y above), else x.
      const T* src = K == Act::relu ? y : x;
      if (avx2) i += backward_avx2<K>(dx + i, dy + i, x + i, src + i, end - i, alpha);
    }
    for (; i < end; ++i) dx[i] = dy[i] * act_derivative(K, x[i], y[i], alpha);
  });
}

// Calls f(std::integral_constant<Act, K>{}) for the run-time kind.
template <class F>
void with_act(Act kind, F&& f) {
  switch (kind) {
    case Act::identity: return f(std::integral_constant<Act, Act::identity>{});
    case Act::relu: return f(std::integral_constant<Act, Act::relu>{});
    case Act::leaky_relu: return f(std::integral_constant<Act, Act::leaky_relu>{});
    case Act::elu: return f(std::integral_constant<Act, Act::elu>{});
    case Act::sigmoid: return f(std::integral_constant<Act, Act::sigmoid>{});
    case Act::tanh: return f(std::integral_constant<Act, Act::tanh>{});
    case Act::gelu: return f(std::integral_constant<Act, Act::gelu>{});
    case Act::gelu_tanh: return f(std::integral_constant<Act, Act::gelu_tanh>{});
    case Act::silu: return f(std::integral_constant<Act, Act::silu>{});
    case Act::softplus: return f(std::integral_constant<Act, Act::softplus>{});
  }
}

// Sum of a[j] * b[j] (b == nullptr: of a[j]) in eight interleaved partial sums, which the
// compiler keeps in vector registers; the order is fixed, so the result is reproducible.
template <class T>
T lane_sum(const T* a, const T* b, int64_t n) {
  constexpr int kLanes = 8;
  T acc[kLanes] = {};
  int64_t j = 0;
  if (b) {
    for (; j + kLanes <= n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
    }
  } else {
    for (; j + kLanes <= n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l];
    }
  }
  T s = T(0);
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  for (; j < n; ++j) s += b ? a[j] * b[j] : a[j];
  return s;
}

template <class T>
T row_max(const T* x, int64_t cols) {
#ifdef FASTNN_HAVE_AVX2_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    // The portable loop stays scalar: GCC will not turn a float compare into a max.
    if (avx2_usable()) return detail::row_max_avx2(x, cols);
  }
#endif
  T m = x[0];
  for (int64_t j = 1; j < cols; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Softmax rows are independent: split rows into chunks of a fixed row count (about kElemGrain
// elements each), so each row is computed by one thread in one fixed order.
template <class Row>
void for_rows(int64_t rows, int64_t cols, int64_t cost_per_elem, Row&& row) {
  if (cols <= 0) return;
  const int64_t grain = std::max<int64_t>(1, kElemGrain / cols);
  parallel_for(rows, grain, cols * cost_per_elem, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row(r);
  });
}

}  // namespace

template <class T>
void activation_forward(T* y, const T* x, int64_t n, Activation act) {
  const T alpha = T(act.alpha);
  with_act(act.kind, [&](auto k) { forward_loop<decltype(k)::value>(y, x, n, alpha); });
}

template <class T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, int64_t n, Activation act) {
  const T alpha = T(act.alpha);
  with_act(act.kind, [&](auto k) { backward_loop<decltype(k)::value>(dx, dy, x, y, n, alpha); });
}

template <class T>
double softmax_row(T* y, const T* x, int64_t cols) {
  const T m = row_max(x, cols);
  int64_t j = 0;
  if constexpr (std::is_same_v<T, float>) {
#ifdef FASTNN_HAVE_AVX2_KERNELS
    if (avx2_usable()) j = detail::exp_shifted_avx2(y, x, m, cols);
#endif
  }
  for (; j < cols; ++j) y[j] = std::exp(x[j] - m);
  const T s = lane_sum<T>(y, nullptr, cols);
  const T inv = T(1) / s;
  for (int64_t j = 0; j < cols; ++j) y[j] *= inv;
  return double(m) + std::log(double(s));
}

template <class T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t cols) {
  for_rows(rows, cols, 24, [=](int64_t r) { softmax_row(y + r * cols, x + r * cols, cols); });
}

template <class T>
void log_softmax_forward(T* y, const T* x, int64_t rows, int64_t cols) {
  for_rows(rows, cols, 24, [=](int64_t r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const T m = row_max(xr, cols);
    T s = T(0);
    int64_t j = 0;
    bool vectorised = false;
    if constexpr (std::is_same_v<T, float>) {
#ifdef FASTNN_HAVE_AVX2_KERNELS
      vectorised = avx2_usable();
      if (vectorised) s = detail::sum_exp_shifted_avx2(xr, m, cols, &j);
#endif
    }
    if (!vectorised) {
      // Eight partial sums as in lane_sum, without a scratch row for the exponentials.
      constexpr int kLanes = 8;
      T acc[kLanes] = {};
      for (; j + kLanes <= cols; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) acc[l] += std::exp(xr[j + l] - m);
      }
      for (int l = 0; l < kLanes; ++l) s += acc[l];
    }
    for (; j < cols; ++j) s += std::exp(xr[j] - m);
    const T log_s = std::log(s);
    for (j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_s;
  });
}

template <class T>
void softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols) {
  for_rows(rows, cols, 3, [=](int64_t r) {
    const T* dyr = dy + r * cols;
    const T* yr = y + r * cols;
    T* dxr = dx + r * cols;
    const T s = lane_sum(dyr, yr, cols);
    for (int64_t j = 0; j < cols; ++j) dxr[j] = yr[j] * (dyr[j] - s);
  });
}

template <class T>
void log_softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols) {
  for_rows(rows, cols, 24, [=](int64_t r) {
    const T* dyr = dy + r * cols;
    const T* yr = y + r * cols;
    T* dxr = dx + r * cols;
    const T s = lane_sum<T>(dyr, nullptr, cols);
    for (int64_t j = 0; j < cols; ++j) dxr[j] = dyr[j] - std::exp(yr[j]) * s;
  });
}

// ---------------------------------------------------------------------------------------------
// References.

template <class T>
void activation_forward_reference(T* y, const T* x, int64_t n, Activation act) {
  for (int64_t i = 0; i < n; ++i) y[i] = act_forward(act.kind, x[i], T(act.alpha));
}

template <class T>
void activation_backward_reference(T* dx, const T* dy, const T* x, const T* y, int64_t n,
                                   Activation act) {
  for (int64_t i = 0; i < n; ++i) {
    dx[i] = dy[i] * act_derivative(act.kind, x[i], y[i], T(act.alpha));
  }
}

template <class T>
void softmax_forward_reference(T* y, const T* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    double m = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, double(xr[j]));
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += std::exp(double(xr[j]) - m);
    for (int64_t j = 0; j < cols; ++j) yr[j] = T(std::exp(double(xr[j]) - m) / s);
  }
}

template <class T>
void log_softmax_forward_reference(T* y, const T* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    double m = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, double(xr[j]));
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += std::exp(double(xr[j]) - m);
    for (int64_t j = 0; j < cols; ++j) yr[j] = T(double(xr[j]) - m - std::log(s));
  }
}

template <class T>
void softmax_backward_reference(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += double(dy[r * cols + j]) * double(y[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j) {
      dx[r * cols + j] = T(double(y[r * cols + j]) * (double(dy[r * cols + j]) - s));
    }
  }
}

template <class T>
void log_softmax_backward_reference(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += double(dy[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j) {
      dx[r * cols + j] = T(double(dy[r * cols + j]) - std::exp(double(y[r * cols + j])) * s);
    }
  }
}

#define FASTNN_INSTANTIATE(T)                                                                   \
  template void activation_forward<T>(T*, const T*, int64_t, Activation);                       \
  template void activation_backward<T>(T*, const T*, const T*, const T*, int64_t, Activation);  \
  template double softmax_row<T>(T*, const T*, int64_t);                                        \
  template void softmax_forward<T>(T*, const T*, int64_t, int64_t);                             \
  template void log_softmax_forward<T>(T*, const T*, int64_t, int64_t);                         \
  template void softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t);                  \
  template void log_softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t);              \
  template void activation_forward_reference<T>(T*, const T*, int64_t, Activation);             \
  template void activation_backward_reference<T>(T*, const T*, const T*, const T*, int64_t,     \
                                                 Activation);                                   \
  template void softmax_forward_reference<T>(T*, const T*, int64_t, int64_t);                   \
  template void log_softmax_forward_reference<T>(T*, const T*, int64_t, int64_t);               \
  template void softmax_backward_reference<T>(T*, const T*, const T*, int64_t, int64_t);        \
  template void log_softmax_backward_reference<T>(T*, const T*, const T*, int64_t, int64_t);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
