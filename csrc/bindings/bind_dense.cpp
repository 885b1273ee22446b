// Bindings for the fused dense kernels and the bias helpers (contracts: /work/briefs/api.md and
// csrc/dense.h).
#include <string>

#include "activation_kind.h"
#include "activation_math.h"
#include "check.h"
#include "dense.h"

namespace fastnn::bind {
namespace {

Act parse_activation(const std::string& op, const std::string& name) {
  Act act;
  if (!parse_act(name, &act)) {
    fail(op, "unknown activation '" + name + "' (expected one of identity, relu, leaky_relu, "
             "elu, sigmoid, tanh, gelu, gelu_tanh, silu, softplus)");
  }
  return act;
}

// None, or an array checked like `ref` (dtype, C-contiguous) with the given shape.
bool optional_array(const std::string& op, const char* name, const py::object& obj,
                    const py::array& ref, const char* ref_name,
                    const std::vector<int64_t>& expected, py::array* out) {
  if (obj.is_none()) return false;
  if (!py::isinstance<py::array>(obj)) {
    fail_type(op, std::string(name) + " must be a numpy array or None, got " +
                      py::str(py::type::of(obj)).cast<std::string>());
  }
  *out = obj.cast<py::array>();
  float_like(op, name, *out, ref_name, ref);
  shape(op, name, *out, expected);
  return true;
}

template <class T>
const T* ptr_or_null(bool present, const py::array& a) {
  return present ? ptr<T>(a) : nullptr;
}

template <class T>
T* mut_or_null(bool present, py::array& a) {
  return present ? mut<T>(a) : nullptr;
}

// Y = act(X @ W.T + b); Z, if given, receives X @ W.T + b.
void dense_forward_binding(py::array y, const py::array& x, const py::array& w,
                           const py::object& b_obj, const std::string& activation,
                           double alpha, const py::object& z_obj) {
  const std::string op = "dense_forward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "W", w, "X", x);
  float_like(op, "Y", y, "X", x);
  ndim(op, "X", x, 2);
  ndim(op, "W", w, 2);
  const int64_t n = x.shape(0), in = x.shape(1), out = w.shape(0);
  if (w.shape(1) != in) {
    fail(op, "X has shape " + shape_str(x) + " but W has shape " + shape_str(w) +
                 "; W must be (out_features, " + std::to_string(in) + ")");
  }
  const Act act = parse_activation(op, activation);
  py::array b, z;
  const bool has_b = optional_array(op, "b", b_obj, x, "X", {out}, &b);
  const bool has_z = optional_array(op, "Z", z_obj, x, "X", {n, out}, &z);
  shape(op, "Y", y, {n, out});
  writable(op, "Y", y);
  for (const auto& [name, arr] : {std::pair<const char*, const py::array*>{"X", &x},
                                  {"W", &w}}) {
    no_overlap(op, "Y", y, name, *arr);
    if (has_z) no_overlap(op, "Z", z, name, *arr);
  }
  if (has_b) no_overlap(op, "Y", y, "b", b);
  if (has_z) {
    writable(op, "Z", z);
    no_overlap(op, "Z", z, "Y", y);
    if (has_b) no_overlap(op, "Z", z, "b", b);
  }
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(x);
    const T* pw = ptr<T>(w);
    const T* pb = ptr_or_null<T>(has_b, b);
    T* py_ = mut<T>(y);
    T* pz = mut_or_null<T>(has_z, z);
    py::gil_scoped_release release;
    dense_forward<T>(py_, pz, px, pw, pb, n, in, out, act, T(alpha));
  });
}

// dZ = dY * act'(.); dW (+)= dZ.T @ X; db (+)= dZ.sum(0); dX = dZ @ W.
void dense_backward_binding(const py::array& dy, const py::array& x, const py::array& w,
                            const py::array& y, const py::object& z_obj,
                            const std::string& activation, double alpha,
                            const py::object& dx_obj, const py::object& dw_obj,
                            const py::object& db_obj, bool accumulate) {
  const std::string op = "dense_backward";
  const DType dt = float_array(op, "X", x);
  float_like(op, "W", w, "X", x);
  float_like(op, "dY", dy, "X", x);
  float_like(op, "Y", y, "X", x);
  ndim(op, "X", x, 2);
  ndim(op, "W", w, 2);
  const int64_t n = x.shape(0), in = x.shape(1), out = w.shape(0);
  if (w.shape(1) != in) {
    fail(op, "X has shape " + shape_str(x) + " but W has shape " + shape_str(w) +
                 "; W must be (out_features, " + std::to_string(in) + ")");
  }
  shape(op, "dY", dy, {n, out});
  shape(op, "Y", y, {n, out});
  const Act act = parse_activation(op, activation);
  py::array z, dx, dw, db;
  const bool has_z = optional_array(op, "Z", z_obj, x, "X", {n, out}, &z);
  const bool has_dx = optional_array(op, "dX", dx_obj, x, "X", {n, in}, &dx);
  const bool has_dw = optional_array(op, "dW", dw_obj, x, "X", {out, in}, &dw);
  const bool has_db = optional_array(op, "db", db_obj, x, "X", {out}, &db);
  if (act != Act::identity && !has_z && !act_derivative_from_output(act, alpha)) {
    fail(op, std::string("the gradient of ") + activation +
                 (alpha != 0.0 ? " with alpha " + std::to_string(alpha) : std::string()) +
                 " needs the pre-activation Z; pass Z= (from dense_forward)");
  }
  // Every output must be writable and disjoint from every array the kernel reads and from the
  // other outputs.
  std::vector<std::pair<const char*, const py::array*>> inputs = {
      {"dY", &dy}, {"X", &x}, {"W", &w}, {"Y", &y}};
  if (has_z) inputs.push_back({"Z", &z});
  std::vector<std::pair<const char*, py::array*>> outputs;
  if (has_dx) outputs.push_back({"dX", &dx});
  if (has_dw) outputs.push_back({"dW", &dw});
  if (has_db) outputs.push_back({"db", &db});
  for (size_t i = 0; i < outputs.size(); ++i) {
    writable(op, outputs[i].first, *outputs[i].second);
    for (const auto& in_arr : inputs) {
      no_overlap(op, outputs[i].first, *outputs[i].second, in_arr.first, *in_arr.second);
    }
    for (size_t j = 0; j < i; ++j) {
      no_overlap(op, outputs[i].first, *outputs[i].second, outputs[j].first,
                 *outputs[j].second);
    }
  }
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    const T* pw = ptr<T>(w);
    const T* py_ = ptr<T>(y);
    const T* pz = ptr_or_null<T>(has_z, z);
    T* pdx = mut_or_null<T>(has_dx, dx);
    T* pdw = mut_or_null<T>(has_dw, dw);
    T* pdb = mut_or_null<T>(has_db, db);
    py::gil_scoped_release release;
    dense_backward<T>(pdx, pdw, pdb, pdy, px, pw, py_, pz, n, in, out, act, T(alpha),
                      accumulate);
  });
}

// Leading size of an array of shape (..., C): the product of all but the last axis.
int64_t leading_rows(const py::array& a) {
  int64_t rows = 1;
  for (py::ssize_t d = 0; d + 1 < a.ndim(); ++d) rows *= a.shape(d);
  return rows;
}

void last_axis(const std::string& op, const char* name, const py::array& a, const char* vec_name,
               const py::array& vec) {
  ndim(op, vec_name, vec, 1);
  if (a.ndim() < 1 || a.shape(a.ndim() - 1) != vec.shape(0)) {
    fail(op, std::string(name) + " has shape " + shape_str(a) + " but " + vec_name +
                 " has shape " + shape_str(vec) + "; the last axis of " + name +
                 " must match");
  }
}

// Y (..., C) += b (C,), in place.
void bias_add_binding(py::array y, const py::array& b) {
  const std::string op = "bias_add";
  const DType dt = float_array(op, "Y", y);
  float_like(op, "b", b, "Y", y);
  last_axis(op, "Y", y, "b", b);
  writable(op, "Y", y);
  no_overlap(op, "Y", y, "b", b);
  const int64_t cols = b.shape(0), rows = leading_rows(y);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    const T* pb = ptr<T>(b);
    py::gil_scoped_release release;
    bias_add<T>(py_, pb, rows, cols);
  });
}

// db (C,) (+)= dY (..., C) summed over the leading axes.
void bias_grad_binding(py::array db, const py::array& dy, bool accumulate) {
  const std::string op = "bias_grad";
  const DType dt = float_array(op, "dY", dy);
  float_like(op, "db", db, "dY", dy);
  last_axis(op, "dY", dy, "db", db);
  writable(op, "db", db);
  no_overlap(op, "db", db, "dY", dy);
  const int64_t cols = db.shape(0), rows = leading_rows(dy);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdb = mut<T>(db);
    const T* pdy = ptr<T>(dy);
    py::gil_scoped_release release;
    bias_grad<T>(pdb, pdy, rows, cols, accumulate);
  });
}

void register_dense(py::module_& m) {
  m.def("dense_forward", &dense_forward_binding, py::arg("Y"), py::arg("X"), py::arg("W"),
        py::arg("b") = py::none(), py::arg("activation") = "identity", py::arg("alpha") = 0.0,
        py::arg("Z") = py::none(),
        "Y = act(X @ W.T + b), in place; Z, if given, receives X @ W.T + b.");
  m.def("dense_backward", &dense_backward_binding, py::arg("dY"), py::arg("X"), py::arg("W"),
        py::arg("Y"), py::arg("Z") = py::none(), py::arg("activation") = "identity",
        py::arg("alpha") = 0.0, py::arg("dX") = py::none(), py::arg("dW") = py::none(),
        py::arg("db") = py::none(), py::arg("accumulate") = true,
        "dZ = dY * act'(.); dW (+)= dZ.T @ X, db (+)= dZ.sum(0) (accumulated when accumulate),"
        " dX = dZ @ W (overwritten). Outputs given as None are skipped.");
  m.def("bias_add", &bias_add_binding, py::arg("Y"), py::arg("b"),
        "Y (..., C) += b (C,), in place.");
  m.def("bias_grad", &bias_grad_binding, py::arg("db"), py::arg("dY"),
        py::arg("accumulate") = true,
        "db (C,) (+)= dY (..., C) summed over the leading axes.");
}

const Registrar registrar("dense", &register_dense);

}  // namespace
}  // namespace fastnn::bind
