// Bindings for 2-D pooling (NCHW), PyTorch's semantics. Python-facing API:
//
// pool2d_output_shape(input_shape, kernel_size, stride=None, padding=0, dilation=1,
//                     ceil_mode=False) -> (N, C, OH, OW)
//   The output shape of max_pool2d_forward / avg_pool2d_forward (use dilation=1 for average
//   pooling), after the same checks those make.
// max_pool2d_forward(Y, indices, X, kernel_size, stride=None, padding=0, dilation=1,
//                    ceil_mode=False)
//   X (N, C, H, W); Y (N, C, OH, OW) overwritten with the window maxima and indices (same shape,
//   int64) with the flat position ih * W + iw of each maximum in its input plane, as PyTorch's
//   return_indices. NaN propagates.
// max_pool2d_backward(dX, dY, indices)
//   dX (N, C, H, W) overwritten with dY (N, C, OH, OW) scattered (added) at indices.
// avg_pool2d_forward(Y, X, kernel_size, stride=None, padding=0, ceil_mode=False,
//                    count_include_pad=True, divisor_override=None)
// avg_pool2d_backward(dX, dY, kernel_size, stride=None, padding=0, ceil_mode=False,
//                     count_include_pad=True, divisor_override=None)
//   Y (N, C, OH, OW) / dX (N, C, H, W) overwritten. divisor_override, when given, must be >= 1.
// adaptive_avg_pool2d_forward(Y, X) / adaptive_avg_pool2d_backward(dX, dY)
//   X (N, C, H, W); the output size (OH, OW) is read from Y (or dY), each >= 1. Global average
//   pooling is OH = OW = 1.
//
// kernel_size, stride, padding and dilation: an int or a pair (h, w). stride None means
// kernel_size. Padding is at most half the kernel on each axis, as in PyTorch.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "check.h"
#include "pool.h"

namespace fastnn::bind {
namespace {

// An int or a pair of ints, each >= lo; a single int is used for both axes.
std::pair<int64_t, int64_t> int_pair(const std::string& op, const char* name,
                                     const py::object& v, int64_t lo) {
  const std::vector<int64_t> hw = int_tuple(op, name, v, {2}, lo);
  return {hw[0], hw[1]};
}

Pool2dShape pool_shape(const std::string& op, const std::vector<int64_t>& in,
                       const py::object& kernel_size, const py::object& stride,
                       const py::object& padding, const py::object& dilation, bool ceil_mode) {
  if (in.size() != 4) fail(op, "input must be 4-D (N, C, H, W), got " + shape_str(in));
  if (in[0] < 0 || in[1] < 0 || in[2] < 1 || in[3] < 1) {
    fail(op, "input plane must be non-empty, got " + shape_str(in));
  }
  Pool2dShape s;
  s.n = in[0], s.c = in[1], s.h = in[2], s.w = in[3], s.ceil_mode = ceil_mode;
  std::tie(s.kh, s.kw) = int_pair(op, "kernel_size", kernel_size, 1);
  std::tie(s.stride_h, s.stride_w) =
      stride.is_none() ? std::make_pair(s.kh, s.kw) : int_pair(op, "stride", stride, 1);
  std::tie(s.pad_h, s.pad_w) = int_pair(op, "padding", padding, 0);
  std::tie(s.dilation_h, s.dilation_w) = int_pair(op, "dilation", dilation, 1);
  const std::string window = "kernel " + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
                             ", padding " + std::to_string(s.pad_h) + "x" +
                             std::to_string(s.pad_w);
  if (2 * s.pad_h > s.kh || 2 * s.pad_w > s.kw) {
    fail(op, "padding must be at most half the kernel size (" + window + ")");
  }
  if (!pool2d_finish_shape(s)) {
    fail(op, "the pooling window (" + window + ", dilation " + std::to_string(s.dilation_h) +
                 "x" + std::to_string(s.dilation_w) + ") does not fit the input " + shape_str(in));
  }
  return s;
}

void int64_array(const std::string& op, const char* name, const py::array& a) {
  if (a.dtype().kind() != 'i' || a.itemsize() != 8) {
    fail_type(op, std::string(name) + " must be int64, got " + dtype_str(a));
  }
  if (!(a.flags() & py::array::c_style)) {
    fail(op, std::string(name) + " with shape " + shape_str(a) + " must be C-contiguous");
  }
}

void output(const std::string& op, const char* name, py::array& a, const char* in_name,
            const py::array& in) {
  writable(op, name, a);
  no_overlap(op, name, a, in_name, in);
}

py::tuple output_shape_binding(const std::vector<int64_t>& input_shape,
                               const py::object& kernel_size, const py::object& stride,
                               const py::object& padding, const py::object& dilation,
                               bool ceil_mode) {
  const Pool2dShape s = pool_shape("pool2d_output_shape", input_shape, kernel_size, stride,
                                   padding, dilation, ceil_mode);
  return py::make_tuple(s.n, s.c, s.oh, s.ow);
}

void max_forward_binding(py::array y, py::array indices, const py::array& x,
                         const py::object& kernel_size, const py::object& stride,
                         const py::object& padding, const py::object& dilation, bool ceil_mode) {
  const std::string op = "max_pool2d_forward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "Y", y, "X", x);
  int64_array(op, "indices", indices);
  const Pool2dShape s =
      pool_shape(op, shape_of(x), kernel_size, stride, padding, dilation, ceil_mode);
  shape(op, "Y", y, {s.n, s.c, s.oh, s.ow});
  shape(op, "indices", indices, {s.n, s.c, s.oh, s.ow});
  output(op, "Y", y, "X", x);
  output(op, "indices", indices, "X", x);
  no_overlap(op, "indices", indices, "Y", y);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    int64_t* pi = mut<int64_t>(indices);
    const T* px = ptr<T>(x);
    py::gil_scoped_release release;
    max_pool2d_forward<T>(py_, pi, px, s);
  });
}

void max_backward_binding(py::array dx, const py::array& dy, const py::array& indices) {
  const std::string op = "max_pool2d_backward";
  const DType dt = float_array(op, "dX", dx);
  float_like(op, "dY", dy, "dX", dx);
  int64_array(op, "indices", indices);
  ndim(op, "dX", dx, 4);
  ndim(op, "dY", dy, 4);
  if (dy.shape(0) != dx.shape(0) || dy.shape(1) != dx.shape(1)) {
    fail(op, "dY " + shape_str(dy) + " and dX " + shape_str(dx) +
                 " must have the same batch and channel sizes");
  }
  same_shape(op, "indices", indices, "dY", dy);
  output(op, "dX", dx, "dY", dy);
  no_overlap(op, "dX", dx, "indices", indices);
  Pool2dShape s;
  s.n = dx.shape(0), s.c = dx.shape(1), s.h = dx.shape(2), s.w = dx.shape(3);
  s.oh = dy.shape(2), s.ow = dy.shape(3);
  const int64_t plane = s.h * s.w;
  const int64_t* pi = ptr<int64_t>(indices);
  for (int64_t i = 0; i < static_cast<int64_t>(indices.size()); ++i) {
    if (pi[i] < 0 || pi[i] >= plane) {
      fail(op, "indices holds " + std::to_string(pi[i]) + " at flat position " +
                   std::to_string(i) + ", outside the input plane of " + std::to_string(plane) +
                   " elements (dX " + shape_str(dx) + ")");
    }
  }
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = mut<T>(dx);
    const T* pdy = ptr<T>(dy);
    py::gil_scoped_release release;
    max_pool2d_backward<T>(pdx, pdy, pi, s);
  });
}

int64_t divisor_of(const std::string& op, const std::optional<int64_t>& divisor_override) {
  if (!divisor_override) return 0;
  if (*divisor_override < 1) {
    fail(op, "divisor_override must be >= 1, got " + std::to_string(*divisor_override));
  }
  return *divisor_override;
}

void avg_forward_binding(py::array y, const py::array& x, const py::object& kernel_size,
                         const py::object& stride, const py::object& padding, bool ceil_mode,
                         bool count_include_pad, std::optional<int64_t> divisor_override) {
  const std::string op = "avg_pool2d_forward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "Y", y, "X", x);
  const Pool2dShape s = pool_shape(op, shape_of(x), kernel_size, stride, padding,
                                   py::int_(1), ceil_mode);
  const int64_t divisor = divisor_of(op, divisor_override);
  shape(op, "Y", y, {s.n, s.c, s.oh, s.ow});
  output(op, "Y", y, "X", x);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    const T* px = ptr<T>(x);
    py::gil_scoped_release release;
    avg_pool2d_forward<T>(py_, px, s, count_include_pad, divisor);
  });
}

void avg_backward_binding(py::array dx, const py::array& dy, const py::object& kernel_size,
                          const py::object& stride, const py::object& padding, bool ceil_mode,
                          bool count_include_pad, std::optional<int64_t> divisor_override) {
  const std::string op = "avg_pool2d_backward";
  const DType dt = float_array(op, "dX", dx);
  float_like(op, "dY", dy, "dX", dx);
  const Pool2dShape s = pool_shape(op, shape_of(dx), kernel_size, stride, padding,
                                   py::int_(1), ceil_mode);
  const int64_t divisor = divisor_of(op, divisor_override);
  shape(op, "dY", dy, {s.n, s.c, s.oh, s.ow});
  output(op, "dX", dx, "dY", dy);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = mut<T>(dx);
    const T* pdy = ptr<T>(dy);
    py::gil_scoped_release release;
    avg_pool2d_backward<T>(pdx, pdy, s, count_include_pad, divisor);
  });
}

// Shared checks of the adaptive pair: big is the (N, C, H, W) side, small the (N, C, OH, OW).
void adaptive_checks(const std::string& op, const char* big_name, const py::array& big,
                     const char* small_name, const py::array& small) {
  ndim(op, big_name, big, 4);
  ndim(op, small_name, small, 4);
  if (small.shape(0) != big.shape(0) || small.shape(1) != big.shape(1)) {
    fail(op, std::string(small_name) + " " + shape_str(small) + " and " + big_name + " " +
                 shape_str(big) + " must have the same batch and channel sizes");
  }
  if (big.shape(2) < 1 || big.shape(3) < 1 || small.shape(2) < 1 || small.shape(3) < 1) {
    fail(op, "input and output planes must be non-empty: " + std::string(big_name) + " " +
                 shape_str(big) + ", " + small_name + " " + shape_str(small));
  }
}

void adaptive_forward_binding(py::array y, const py::array& x) {
  const std::string op = "adaptive_avg_pool2d_forward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "Y", y, "X", x);
  adaptive_checks(op, "X", x, "Y", y);
  output(op, "Y", y, "X", x);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    const T* px = ptr<T>(x);
    const int64_t planes = x.shape(0) * x.shape(1);
    py::gil_scoped_release release;
    adaptive_avg_pool2d_forward<T>(py_, px, planes, x.shape(2), x.shape(3), y.shape(2),
                                   y.shape(3));
  });
}

void adaptive_backward_binding(py::array dx, const py::array& dy) {
  const std::string op = "adaptive_avg_pool2d_backward";
  const DType dt = float_array(op, "dX", dx);
  float_like(op, "dY", dy, "dX", dx);
  adaptive_checks(op, "dX", dx, "dY", dy);
  output(op, "dX", dx, "dY", dy);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = mut<T>(dx);
    const T* pdy = ptr<T>(dy);
    const int64_t planes = dx.shape(0) * dx.shape(1);
    py::gil_scoped_release release;
    adaptive_avg_pool2d_backward<T>(pdx, pdy, planes, dx.shape(2), dx.shape(3), dy.shape(2),
                                    dy.shape(3));
  });
}

void register_pool(py::module_& m) {
  m.def("pool2d_output_shape", &output_shape_binding, py::arg("input_shape"),
        py::arg("kernel_size"), py::arg("stride") = py::none(), py::arg("padding") = 0,
        py::arg("dilation") = 1, py::arg("ceil_mode") = false,
        "Output shape (N, C, OH, OW) of 2-D max or average pooling.");
  m.def("max_pool2d_forward", &max_forward_binding, py::arg("Y").noconvert(),
        py::arg("indices").noconvert(), py::arg("X").noconvert(), py::arg("kernel_size"),
        py::arg("stride") = py::none(), py::arg("padding") = 0, py::arg("dilation") = 1,
        py::arg("ceil_mode") = false,
        "Y = max over each window of X, indices = flat in-plane position of each maximum.");
  m.def("max_pool2d_backward", &max_backward_binding, py::arg("dX").noconvert(),
        py::arg("dY").noconvert(), py::arg("indices").noconvert(),
        "dX (overwritten) = dY scattered at indices.");
  m.def("avg_pool2d_forward", &avg_forward_binding, py::arg("Y").noconvert(),
        py::arg("X").noconvert(), py::arg("kernel_size"), py::arg("stride") = py::none(),
        py::arg("padding") = 0, py::arg("ceil_mode") = false,
        py::arg("count_include_pad") = true, py::arg("divisor_override") = py::none(),
        "Y = mean over each window of X (PyTorch's divisor rules).");
  m.def("avg_pool2d_backward", &avg_backward_binding, py::arg("dX").noconvert(),
        py::arg("dY").noconvert(), py::arg("kernel_size"), py::arg("stride") = py::none(),
        py::arg("padding") = 0, py::arg("ceil_mode") = false,
        py::arg("count_include_pad") = true, py::arg("divisor_override") = py::none(),
        "dX (overwritten) = gradient of avg_pool2d_forward.");
  m.def("adaptive_avg_pool2d_forward", &adaptive_forward_binding, py::arg("Y").noconvert(),
        py::arg("X").noconvert(), "Y (N, C, OH, OW) = adaptive average pooling of X.");
  m.def("adaptive_avg_pool2d_backward", &adaptive_backward_binding, py::arg("dX").noconvert(),
        py::arg("dY").noconvert(), "dX (overwritten) = gradient of adaptive_avg_pool2d_forward.");
}

const Registrar registrar("pool", &register_pool);

}  // namespace
}  // namespace fastnn::bind
