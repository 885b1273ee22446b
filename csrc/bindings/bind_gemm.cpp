// Bindings for the GEMM kernel.
#include "check.h"
#include "gemm.h"

namespace fastnn::bind {
namespace {

// C = alpha * op(A) @ op(B) + beta * C, written into the caller's C.
void gemm_binding(py::array c, const py::array& a, const py::array& b, bool trans_a,
                  bool trans_b, double alpha, double beta) {
  const std::string op = "gemm";
  const DType dt = float_array(op, "A", a);
  float_like(op, "B", b, "A", a);
  float_like(op, "C", c, "A", a);
  ndim(op, "A", a, 2);
  ndim(op, "B", b, 2);
  ndim(op, "C", c, 2);
  writable(op, "C", c);
  const int64_t m = trans_a ? a.shape(1) : a.shape(0);
  const int64_t k = trans_a ? a.shape(0) : a.shape(1);
  const int64_t kb = trans_b ? b.shape(1) : b.shape(0);
  const int64_t n = trans_b ? b.shape(0) : b.shape(1);
  if (k != kb) {
    fail(op, "cannot multiply op(A) of shape (" + std::to_string(m) + ", " + std::to_string(k) +
                 ") by op(B) of shape (" + std::to_string(kb) + ", " + std::to_string(n) +
                 ") (A " + shape_str(a) + (trans_a ? " transposed" : "") + ", B " +
                 shape_str(b) + (trans_b ? " transposed" : "") + ")");
  }
  shape(op, "C", c, {m, n});
  no_overlap(op, "C", c, "A", a);
  no_overlap(op, "C", c, "B", b);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = ptr<T>(a);
    const T* pb = ptr<T>(b);
    T* pc = mut<T>(c);
    py::gil_scoped_release release;
    gemm<T>(trans_a, trans_b, m, n, k, T(alpha), pa, a.shape(1), pb, b.shape(1), T(beta), pc, n);
  });
}

void register_gemm(py::module_& m) {
  m.def("gemm", &gemm_binding, py::arg("C"), py::arg("A"), py::arg("B"),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("alpha") = 1.0,
        py::arg("beta") = 0.0,
        "C = alpha * op(A) @ op(B) + beta * C, in place; C is not read when beta == 0.");
}

const Registrar registrar("gemm", &register_gemm);

}  // namespace
}  // namespace fastnn::bind
