// Scalar forward and derivative of each activation, inline so that elementwise kernels and the
// fused dense epilogue compile them into their loops. x is the pre-activation, y = act(x).
#pragma once

#include <cmath>

#include "activation_kind.h"

namespace fastnn {

template <class T>
inline T stable_sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// PyTorch's softplus switches to the identity above this input (beta = 1).
constexpr double kSoftplusThreshold = 20.0;
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;
constexpr double kGeluTanhCubic = 0.044715;

template <class T>
inline T act_forward(Act kind, T x, T alpha) {
  switch (kind) {
    case Act::identity: return x;
    case Act::relu: return x < T(0) ? T(0) : x;  // NaN stays NaN, as in PyTorch
    case Act::leaky_relu: return x > T(0) ? x : alpha * x;
    case Act::elu: return x > T(0) ? x : alpha * std::expm1(x);
    case Act::sigmoid: return stable_sigmoid(x);
    case Act::tanh: return std::tanh(x);
    case Act::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));
    case Act::gelu_tanh: {
      const T u = T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(u));
    }
    case Act::silu: return x * stable_sigmoid(x);
    case Act::softplus:
      return x > T(kSoftplusThreshold) ? x : std::log1p(std::exp(x));
  }
  return x;
}

// True when act'(x) can be computed from y alone, so a backward pass need not keep x.
inline bool act_derivative_from_output(Act kind, double alpha) {
  switch (kind) {
    case Act::identity:
    case Act::relu:
    case Act::sigmoid:
    case Act::tanh: return true;
    case Act::leaky_relu:
    case Act::elu: return alpha > 0;  // then the sign of y is the sign of x
    default: return false;
  }
}

// d act / dx at x, where y = act(x). Callers that hold only y (see act_derivative_from_output)
// may pass any x for those activations; the value is read only where it is needed.
template <class T>
inline T act_derivative(Act kind, T x, T y, T alpha) {
  switch (kind) {
    case Act::identity: return T(1);
    case Act::relu: return y > T(0) ? T(1) : T(0);
    case Act::leaky_relu: return (alpha > T(0) ? y > T(0) : x > T(0)) ? T(1) : alpha;
    case Act::elu:
      if (alpha > T(0)) return y > T(0) ? T(1) : y + alpha;
      return x > T(0) ? T(1) : alpha * std::exp(x);
    case Act::sigmoid: return y * (T(1) - y);
    case Act::tanh: return T(1) - y * y;
    case Act::gelu:
      return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) +
             x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
    case Act::gelu_tanh: {
      const T u = T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x);
      const T t = std::tanh(u);
      const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhCubic) * x * x);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
    }
    case Act::silu: {
      const T s = stable_sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case Act::softplus: return x > T(kSoftplusThreshold) ? T(1) : stable_sigmoid(x);
  }
  return T(1);
}

}  // namespace fastnn
