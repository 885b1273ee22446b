// Bindings for 2-D convolution (NCHW). Python-facing API:
//
// conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1)
//     -> (N, OC, OH, OW)
//   Checks the sizes and options exactly as conv2d_forward does and returns the output shape, so
//   the Python layer can allocate Y without repeating the formula.
// conv2d_forward(Y, X, W, b=None, stride=1, padding=0, dilation=1, groups=1,
//                activation="identity", alpha=0.0, Z=None)
//   X (N, C, H, W), W (OC, C/groups, KH, KW), b (OC,) or None; Y (N, OC, OH, OW) overwritten
//   with act(cross-correlation of X and W plus b) (torch.nn.functional.conv2d, then act). If Z
//   (N, OC, OH, OW) is given it receives the pre-activation. Activation names and alpha as for
//   dense_forward.
// conv2d_backward(dY, X, W, Y=None, Z=None, activation="identity", alpha=0.0, dX=None, dW=None,
//                 db=None, stride=1, padding=0, dilation=1, groups=1, accumulate=True)
//   dY (N, OC, OH, OW); dZ = dY * act'(.) is formed on the fly from Z when given, else from Y
//   (ValueError naming the activation when the one it needs is missing; none is needed for the
//   identity). dX (N, C, H, W) is overwritten; dW (OC, C/groups, KH, KW) and db (OC,) are
//   accumulated (+=) when accumulate, else overwritten. Any of dX, dW, db may be None (skipped:
//   pass dX=None for a network's first layer).
//
// stride and dilation: an int or a pair (h, w), each >= 1. padding: an int, a pair (h, w), or
// four ints (top, bottom, left, right) for the uneven padding of "same" with an even kernel.
// groups >= 1 must divide C and OC. conv1d is conv2d on (N, C, 1, L) with a (OC, C/G, 1, K)
// weight and padding (0, 0, left, right).
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "activation_kind.h"
#include "activation_math.h"
#include "check.h"
#include "conv.h"

namespace fastnn::bind {
namespace {

const char* const kShapeOp = "conv2d_output_shape";

// Validates sizes and options and returns the completed shape; every error names both shapes.
Conv2dShape conv_shape(const std::string& op, const std::vector<int64_t>& in,
                       const std::vector<int64_t>& wt, const py::object& stride,
                       const py::object& padding, const py::object& dilation, int64_t groups) {
  const std::string shapes = ": input " + shape_str(in) + ", weight " + shape_str(wt);
  if (in.size() != 4) fail(op, "input must be 4-D (N, C, H, W)" + shapes);
  if (wt.size() != 4) fail(op, "weight must be 4-D (OC, C/groups, KH, KW)" + shapes);
  for (int64_t d : in) {
    if (d < 0) fail(op, "sizes must be >= 0" + shapes);
  }
  if (groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(groups));
  Conv2dShape s;
  s.n = in[0], s.c = in[1], s.h = in[2], s.w = in[3];
  s.oc = wt[0], s.kh = wt[2], s.kw = wt[3], s.groups = groups;
  if (s.c < 1 || s.h < 1 || s.w < 1) {
    fail(op, "input channels and plane must be non-empty" + shapes);
  }
  if (s.oc < 1 || wt[1] < 1 || s.kh < 1 || s.kw < 1) fail(op, "weight must be non-empty" + shapes);
  const std::string g = " (groups=" + std::to_string(groups) + ")";
  if (s.c % groups != 0) {
    fail(op, "input channels " + std::to_string(s.c) + " are not divisible by groups" + g + shapes);
  }
  if (s.oc % groups != 0) {
    fail(op, "output channels " + std::to_string(s.oc) + " are not divisible by groups" + g +
                 shapes);
  }
  if (wt[1] * groups != s.c) {
    fail(op, "input has " + std::to_string(s.c) + " channels but weight expects " +
                 std::to_string(wt[1] * groups) + g + shapes);
  }
  const auto st = int_tuple(op, "stride", stride, {2}, 1);
  const auto dl = int_tuple(op, "dilation", dilation, {2}, 1);
  auto pd = int_tuple(op, "padding", padding, {2, 4}, 0);
  if (pd.size() == 2) pd = {pd[0], pd[0], pd[1], pd[1]};
  s.stride_h = st[0], s.stride_w = st[1], s.dilation_h = dl[0], s.dilation_w = dl[1];
  s.pad_top = pd[0], s.pad_bottom = pd[1], s.pad_left = pd[2], s.pad_right = pd[3];
  if (!conv2d_finish_shape(s)) {
    fail(op, "kernel " + std::to_string(s.kh) + "x" + std::to_string(s.kw) + " with dilation " +
                 std::to_string(s.dilation_h) + "x" + std::to_string(s.dilation_w) +
                 " is larger than the padded input " + std::to_string(s.h + s.pad_top +
                 s.pad_bottom) + "x" + std::to_string(s.w + s.pad_left + s.pad_right) + shapes);
  }
  return s;
}

py::tuple output_shape_binding(const std::vector<int64_t>& input_shape,
                               const std::vector<int64_t>& weight_shape, const py::object& stride,
                               const py::object& padding, const py::object& dilation,
                               int64_t groups) {
  const Conv2dShape s =
      conv_shape(kShapeOp, input_shape, weight_shape, stride, padding, dilation, groups);
  return py::make_tuple(s.n, s.oc, s.oh, s.ow);
}

Activation parse_activation(const std::string& op, const std::string& name, double alpha) {
  Activation act;
  act.alpha = alpha;
  if (!parse_act(name, &act.kind)) {
    fail(op, "unknown activation '" + name + "' (expected identity, relu, leaky_relu, elu, "
             "sigmoid, tanh, gelu, gelu_tanh, silu or softplus)");
  }
  return act;
}

using Named = std::pair<const char*, const py::array*>;

// An output array: X's dtype, the expected shape, writable, and disjoint from every array in
// `others`, to which it is then added.
void check_output(const std::string& op, const char* name, const py::array& a,
                  const py::array& x, const std::vector<int64_t>& expected,
                  std::vector<Named>& others) {
  float_like(op, name, a, "X", x);
  shape(op, name, a, expected);
  writable(op, name, a);
  for (const auto& [other_name, other] : others) no_overlap(op, name, a, other_name, *other);
  others.emplace_back(name, &a);
}

void forward_binding(py::array y, const py::array& x, const py::array& w,
                     const std::optional<py::array>& b, const py::object& stride,
                     const py::object& padding, const py::object& dilation, int64_t groups,
                     const std::string& activation, double alpha, std::optional<py::array> z) {
  const std::string op = "conv2d_forward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "W", w, "X", x);
  if (b) float_like(op, "b", *b, "X", x);
  const Activation act = parse_activation(op, activation, alpha);
  const Conv2dShape s = conv_shape(op, shape_of(x), shape_of(w), stride, padding, dilation, groups);
  if (b) shape(op, "b", *b, {s.oc});
  std::vector<Named> seen = {{"X", &x}, {"W", &w}};
  if (b) seen.emplace_back("b", &*b);
  check_output(op, "Y", y, x, {s.n, s.oc, s.oh, s.ow}, seen);
  if (z) check_output(op, "Z", *z, x, {s.n, s.oc, s.oh, s.ow}, seen);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pb = b ? ptr<T>(*b) : nullptr;
    const T* px = ptr<T>(x);
    const T* pw = ptr<T>(w);
    T* py_ = mut<T>(y);
    T* pz = z ? mut<T>(*z) : nullptr;
    py::gil_scoped_release release;
    conv2d_forward<T>(py_, pz, px, pw, pb, s, act);
  });
}

void backward_binding(const py::array& dy, const py::array& x, const py::array& w,
                      const std::optional<py::array>& y, const std::optional<py::array>& z,
                      const std::string& activation, double alpha, std::optional<py::array> dx,
                      std::optional<py::array> dw, std::optional<py::array> db,
                      const py::object& stride, const py::object& padding,
                      const py::object& dilation, int64_t groups, bool accumulate) {
  const std::string op = "conv2d_backward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "W", w, "X", x);
  float_like(op, "dY", dy, "X", x);
  const Activation act = parse_activation(op, activation, alpha);
  const Conv2dShape s = conv_shape(op, shape_of(x), shape_of(w), stride, padding, dilation, groups);
  const std::vector<int64_t> y_shape = {s.n, s.oc, s.oh, s.ow};
  shape(op, "dY", dy, y_shape);
  // The kernel reads Z when given, else Y; the activation decides which it can do with.
  const bool from_output = act_derivative_from_output(act.kind, act.alpha);
  if (act.kind != Act::identity && !z && !(y && from_output)) {
    fail(op, std::string("activation '") + act_name(act.kind) +
                 (from_output ? "' needs the forward's output Y or its pre-activation Z"
                              : "' needs the pre-activation Z (pass Z to conv2d_forward)"));
  }
  std::vector<Named> seen = {{"dY", &dy}, {"X", &x}, {"W", &w}};
  for (const auto& [name, a] : {std::make_pair("Y", &y), std::make_pair("Z", &z)}) {
    if (!*a) continue;
    float_like(op, name, **a, "X", x);
    shape(op, name, **a, y_shape);
    seen.emplace_back(name, &**a);
  }
  if (dx) check_output(op, "dX", *dx, x, shape_of(x), seen);
  if (dw) check_output(op, "dW", *dw, x, shape_of(w), seen);
  if (db) check_output(op, "db", *db, x, {s.oc}, seen);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = dx ? mut<T>(*dx) : nullptr;
    T* pdw = dw ? mut<T>(*dw) : nullptr;
    T* pdb = db ? mut<T>(*db) : nullptr;
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    const T* pw = ptr<T>(w);
    // Only what the activation needs is read: Z when given, else Y.
    const T* pz = act.kind != Act::identity && z ? ptr<T>(*z) : nullptr;
    const T* pyy = act.kind != Act::identity && !pz ? ptr<T>(*y) : nullptr;
    py::gil_scoped_release release;
    conv2d_backward<T>(pdx, pdw, pdb, pdy, px, pw, pyy, pz, s, act, accumulate);
  });
}

void register_conv(py::module_& m) {
  m.def("conv2d_output_shape", &output_shape_binding, py::arg("input_shape"),
        py::arg("weight_shape"), py::arg("stride") = 1, py::arg("padding") = 0,
        py::arg("dilation") = 1, py::arg("groups") = 1,
        "Output shape (N, OC, OH, OW) of conv2d_forward for these sizes and options.");
  m.def("conv2d_forward", &forward_binding, py::arg("Y").noconvert(),
        py::arg("X").noconvert(), py::arg("W").noconvert(),
        py::arg("b").noconvert() = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
        py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("activation") = "identity",
        py::arg("alpha") = 0.0, py::arg("Z").noconvert() = py::none(),
        "Y (N, OC, OH, OW) = act(conv2d(X (N, C, H, W), W (OC, C/groups, KH, KW)) + b), in "
        "place; Z, if given, receives the pre-activation.");
  m.def("conv2d_backward", &backward_binding, py::arg("dY").noconvert(),
        py::arg("X").noconvert(), py::arg("W").noconvert(),
        py::arg("Y").noconvert() = py::none(), py::arg("Z").noconvert() = py::none(),
        py::arg("activation") = "identity", py::arg("alpha") = 0.0,
        py::arg("dX").noconvert() = py::none(), py::arg("dW").noconvert() = py::none(),
        py::arg("db").noconvert() = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
        py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("accumulate") = true,
        "Gradients of conv2d_forward: dX overwritten; dW, db accumulated unless "
        "accumulate=False.");
}

const Registrar registrar("conv", &register_conv);

}  // namespace
}  // namespace fastnn::bind
