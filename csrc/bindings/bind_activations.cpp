// Bindings for the elementwise activations and softmax.
#include "activations.h"
#include "check.h"

namespace fastnn::bind {
namespace {

Activation parse_activation(const std::string& op, const std::string& name, double alpha) {
  Activation act;
  if (!parse_act(name, &act.kind)) {
    fail(op, "unknown activation '" + name +
                 "' (expected identity, relu, leaky_relu, elu, sigmoid, tanh, gelu, gelu_tanh, "
                 "silu or softplus)");
  }
  act.alpha = alpha;
  return act;
}

void activation_forward_binding(py::array y, const py::array& x, const std::string& activation,
                                double alpha) {
  const std::string op = "activation_forward";
  const Activation act = parse_activation(op, activation, alpha);
  const DType dt = float_array(op, "X", x);
  float_like(op, "Y", y, "X", x);
  same_shape(op, "Y", y, "X", x);
  writable(op, "Y", y);
  same_or_disjoint(op, "Y", y, "X", x);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(x);
    T* py_ = mut<T>(y);
    const int64_t n = x.size();
    py::gil_scoped_release release;
    activation_forward<T>(py_, px, n, act);
  });
}

void activation_backward_binding(py::array dx, const py::array& dy, const py::array& x,
                                 const py::array& y, const std::string& activation,
                                 double alpha) {
  const std::string op = "activation_backward";
  const Activation act = parse_activation(op, activation, alpha);
  const DType dt = float_array(op, "dY", dy);
  float_like(op, "X", x, "dY", dy);
  float_like(op, "Y", y, "dY", dy);
  float_like(op, "dX", dx, "dY", dy);
  same_shape(op, "X", x, "dY", dy);
  same_shape(op, "Y", y, "dY", dy);
  same_shape(op, "dX", dx, "dY", dy);
  writable(op, "dX", dx);
  same_or_disjoint(op, "dX", dx, "dY", dy);
  same_or_disjoint(op, "dX", dx, "X", x);
  same_or_disjoint(op, "dX", dx, "Y", y);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    const T* py_ = ptr<T>(y);
    T* pdx = mut<T>(dx);
    const int64_t n = dy.size();
    py::gil_scoped_release release;
    activation_backward<T>(pdx, pdy, px, py_, n, act);
  });
}

// Rows and columns of an array whose last axis is the softmax axis.
std::pair<int64_t, int64_t> rows_cols(const std::string& op, const char* name,
                                      const py::array& a) {
  if (a.ndim() < 1) fail(op, std::string(name) + " must have at least one axis, got a scalar");
  const int64_t cols = a.shape(a.ndim() - 1);
  return {cols ? a.size() / cols : 0, cols};
}

template <class Kernel>
void softmax_forward_common(const std::string& op, py::array y, const py::array& x,
                            Kernel&& kernel) {
  const DType dt = float_array(op, "X", x);
  float_like(op, "Y", y, "X", x);
  same_shape(op, "Y", y, "X", x);
  writable(op, "Y", y);
  same_or_disjoint(op, "Y", y, "X", x);
  const auto [rows, cols] = rows_cols(op, "X", x);
  dispatch(dt, [&, rows = rows, cols = cols](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(x);
    T* py_ = mut<T>(y);
    py::gil_scoped_release release;
    kernel(py_, px, rows, cols);
  });
}

template <class Kernel>
void softmax_backward_common(const std::string& op, py::array dx, const py::array& dy,
                             const py::array& y, Kernel&& kernel) {
  const DType dt = float_array(op, "dY", dy);
  float_like(op, "Y", y, "dY", dy);
  float_like(op, "dX", dx, "dY", dy);
  same_shape(op, "Y", y, "dY", dy);
  same_shape(op, "dX", dx, "dY", dy);
  writable(op, "dX", dx);
  same_or_disjoint(op, "dX", dx, "dY", dy);
  same_or_disjoint(op, "dX", dx, "Y", y);
  const auto [rows, cols] = rows_cols(op, "dY", dy);
  dispatch(dt, [&, rows = rows, cols = cols](auto tag) {
    using T = decltype(tag);
    const T* pdy = ptr<T>(dy);
    const T* py_ = ptr<T>(y);
    T* pdx = mut<T>(dx);
    py::gil_scoped_release release;
    kernel(pdx, pdy, py_, rows, cols);
  });
}

// The kernels are templates; these generic lambdas pick the instantiation from the pointer type.
constexpr auto kSoftmaxForward = [](auto* y, const auto* x, int64_t r, int64_t c) {
  softmax_forward(y, x, r, c);
};
constexpr auto kLogSoftmaxForward = [](auto* y, const auto* x, int64_t r, int64_t c) {
  log_softmax_forward(y, x, r, c);
};
constexpr auto kSoftmaxBackward = [](auto* dx, const auto* dy, const auto* y, int64_t r,
                                     int64_t c) { softmax_backward(dx, dy, y, r, c); };
constexpr auto kLogSoftmaxBackward = [](auto* dx, const auto* dy, const auto* y, int64_t r,
                                        int64_t c) { log_softmax_backward(dx, dy, y, r, c); };

void register_activations(py::module_& m) {
  m.def("activation_forward", &activation_forward_binding, py::arg("Y"), py::arg("X"),
        py::arg("activation"), py::arg("alpha") = 0.0,
        "Y = act(X), elementwise, any shape; Y may be X. alpha: negative slope (leaky_relu) "
        "or alpha (elu).");
  m.def("activation_backward", &activation_backward_binding, py::arg("dX"), py::arg("dY"),
        py::arg("X"), py::arg("Y"), py::arg("activation"), py::arg("alpha") = 0.0,
        "dX = dY * act'(X), overwritten; X and Y are the forward's input and output.");
  m.def(
      "softmax_forward",
      [](py::array y, const py::array& x) {
        softmax_forward_common("softmax_forward", y, x, kSoftmaxForward);
      },
      py::arg("Y"), py::arg("X"), "Y = softmax(X) along the last axis; Y may be X.");
  m.def(
      "log_softmax_forward",
      [](py::array y, const py::array& x) {
        softmax_forward_common("log_softmax_forward", y, x, kLogSoftmaxForward);
      },
      py::arg("Y"), py::arg("X"), "Y = log_softmax(X) along the last axis; Y may be X.");
  m.def(
      "softmax_backward",
      [](py::array dx, const py::array& dy, const py::array& y) {
        softmax_backward_common("softmax_backward", dx, dy, y, kSoftmaxBackward);
      },
      py::arg("dX"), py::arg("dY"), py::arg("Y"),
      "dX = Y * (dY - sum(dY * Y, -1)), overwritten; Y is the softmax output.");
  m.def(
      "log_softmax_backward",
      [](py::array dx, const py::array& dy, const py::array& y) {
        softmax_backward_common("log_softmax_backward", dx, dy, y, kLogSoftmaxBackward);
      },
      py::arg("dX"), py::arg("dY"), py::arg("Y"),
      "dX = dY - exp(Y) * sum(dY, -1), overwritten; Y is the log_softmax output.");
}

const Registrar registrar("activations", &register_activations);

}  // namespace
}  // namespace fastnn::bind
