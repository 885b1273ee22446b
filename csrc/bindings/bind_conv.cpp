// Bindings for 2-D convolution (NCHW). Python-facing API:
//
// conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1)
//     -> (N, OC, OH, OW)
//   Checks the sizes and options exactly as conv2d_forward does and returns the output shape, so
//   the Python layer can allocate Y without repeating the formula.
// conv2d_forward(Y, X, W, b=None, stride=1, padding=0, dilation=1, groups=1)
//   X (N, C, H, W), W (OC, C/groups, KH, KW), b (OC,) or None; Y (N, OC, OH, OW) overwritten
//   with the cross-correlation of X and W plus b (torch.nn.functional.conv2d).
// conv2d_backward(dY, X, W, dX=None, dW=None, db=None, stride=1, padding=0, dilation=1,
//                 groups=1, accumulate=True)
//   dY (N, OC, OH, OW). dX (N, C, H, W) is overwritten; dW (OC, C/groups, KH, KW) and db (OC,)
//   are accumulated (+=) when accumulate, else overwritten. Any of dX, dW, db may be None
//   (skipped: pass dX=None for a network's first layer).
//
// stride and dilation: an int or a pair (h, w), each >= 1. padding: an int, a pair (h, w), or
// four ints (top, bottom, left, right) for the uneven padding of "same" with an even kernel.
// groups >= 1 must divide C and OC. conv1d is conv2d on (N, C, 1, L) with a (OC, C/G, 1, K)
// weight and padding (0, 0, left, right).
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "check.h"
#include "conv.h"

namespace fastnn::bind {
namespace {

const char* const kShapeOp = "conv2d_output_shape";

// An int or a sequence of `count` ints, each >= lo; a single int is repeated.
std::vector<int64_t> int_tuple(const std::string& op, const char* name, const py::object& v,
                               const std::vector<size_t>& counts, int64_t lo) {
  std::vector<int64_t> out;
  if (py::isinstance<py::bool_>(v)) {
    fail_type(op, std::string(name) + " must be an int or a tuple of ints, got a bool");
  }
  if (py::isinstance<py::int_>(v)) {
    out.assign(counts.front(), v.cast<int64_t>());
  } else if (py::isinstance<py::sequence>(v) && !py::isinstance<py::str>(v)) {
    for (const auto& e : v.cast<py::sequence>()) {
      if (!py::isinstance<py::int_>(e) || py::isinstance<py::bool_>(e)) {
        fail_type(op, std::string(name) + " must hold ints, got " +
                          py::repr(v).cast<std::string>());
      }
      out.push_back(e.cast<int64_t>());
    }
    bool ok = false;
    for (size_t c : counts) ok = ok || out.size() == c;
    if (!ok) {
      std::string allowed;
      for (size_t i = 0; i < counts.size(); ++i) {
        allowed += (i ? " or " : "") + std::to_string(counts[i]);
      }
      fail(op, std::string(name) + " must have " + allowed + " values, got " +
                   py::repr(v).cast<std::string>());
    }
  } else {
    fail_type(op, std::string(name) + " must be an int or a tuple of ints, got " +
                      py::repr(v).cast<std::string>());
  }
  for (int64_t e : out) {
    if (e < lo) {
      fail(op, std::string(name) + " values must be >= " + std::to_string(lo) + ", got " +
                   py::repr(v).cast<std::string>());
    }
  }
  return out;
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

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
  if (s.c < 1 || s.h < 1 || s.w < 1) fail(op, "input channels and plane must be non-empty" + shapes);
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

void forward_binding(py::array y, const py::array& x, const py::array& w,
                     const std::optional<py::array>& b, const py::object& stride,
                     const py::object& padding, const py::object& dilation, int64_t groups) {
  const std::string op = "conv2d_forward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "W", w, "X", x);
  float_like(op, "Y", y, "X", x);
  if (b) float_like(op, "b", *b, "X", x);
  const Conv2dShape s = conv_shape(op, shape_of(x), shape_of(w), stride, padding, dilation, groups);
  if (b) shape(op, "b", *b, {s.oc});
  shape(op, "Y", y, {s.n, s.oc, s.oh, s.ow});
  writable(op, "Y", y);
  no_overlap(op, "Y", y, "X", x);
  no_overlap(op, "Y", y, "W", w);
  if (b) no_overlap(op, "Y", y, "b", *b);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pb = b ? ptr<T>(*b) : nullptr;
    const T* px = ptr<T>(x);
    const T* pw = ptr<T>(w);
    T* py_ = mut<T>(y);
    py::gil_scoped_release release;
    conv2d_forward<T>(py_, px, pw, pb, s);
  });
}

void backward_binding(const py::array& dy, const py::array& x, const py::array& w,
                      std::optional<py::array> dx, std::optional<py::array> dw,
                      std::optional<py::array> db, const py::object& stride,
                      const py::object& padding, const py::object& dilation, int64_t groups,
                      bool accumulate) {
  const std::string op = "conv2d_backward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "W", w, "X", x);
  float_like(op, "dY", dy, "X", x);
  const Conv2dShape s = conv_shape(op, shape_of(x), shape_of(w), stride, padding, dilation, groups);
  shape(op, "dY", dy, {s.n, s.oc, s.oh, s.ow});
  // Each output: dtype, shape, writable, and no overlap with any input or other output.
  const std::vector<std::pair<const char*, const py::array*>> inputs = {
      {"dY", &dy}, {"X", &x}, {"W", &w}};
  std::vector<std::pair<const char*, const py::array*>> outputs;
  auto check_out = [&](const char* name, const std::optional<py::array>& a,
                       const std::vector<int64_t>& expected) {
    if (!a) return;
    float_like(op, name, *a, "X", x);
    shape(op, name, *a, expected);
    writable(op, name, *a);
    for (const auto& [in_name, in] : inputs) no_overlap(op, name, *a, in_name, *in);
    for (const auto& [out_name, out] : outputs) no_overlap(op, name, *a, out_name, *out);
    outputs.emplace_back(name, &*a);
  };
  check_out("dX", dx, shape_of(x));
  check_out("dW", dw, shape_of(w));
  check_out("db", db, {s.oc});
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = dx ? mut<T>(*dx) : nullptr;
    T* pdw = dw ? mut<T>(*dw) : nullptr;
    T* pdb = db ? mut<T>(*db) : nullptr;
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    const T* pw = ptr<T>(w);
    py::gil_scoped_release release;
    conv2d_backward<T>(pdx, pdw, pdb, pdy, px, pw, s, accumulate);
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
        py::arg("dilation") = 1, py::arg("groups") = 1,
        "Y (N, OC, OH, OW) = conv2d(X (N, C, H, W), W (OC, C/groups, KH, KW)) + b, in place.");
  m.def("conv2d_backward", &backward_binding, py::arg("dY").noconvert(),
        py::arg("X").noconvert(), py::arg("W").noconvert(),
        py::arg("dX").noconvert() = py::none(), py::arg("dW").noconvert() = py::none(),
        py::arg("db").noconvert() = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
        py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("accumulate") = true,
        "Gradients of conv2d_forward: dX overwritten; dW, db accumulated unless "
        "accumulate=False.");
}

const Registrar registrar("conv", &register_conv);

}  // namespace
}  // namespace fastnn::bind
