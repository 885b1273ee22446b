// Bindings for batch norm, layer norm and channel dropout. Python-facing API:
//
// batch_norm_forward_train(Y, save_mean, save_invstd, X, gamma=None, beta=None,
//                          running_mean=None, running_var=None, eps=1e-5, momentum=0.1)
//   X (N, C, *) with at least 2 dims (BatchNorm1d on (N, C) or (N, C, L), BatchNorm2d on
//   (N, C, H, W)); Y like X; save_mean and save_invstd (C,) receive the batch mean and
//   1 / sqrt(biased batch variance + eps) for the backward. running_mean / running_var (C,), when
//   given, are updated in place with momentum (running_var from the unbiased variance). Each
//   channel needs more than one value (N * prod(*) >= 2). gamma, beta (C,) or None.
// batch_norm_forward_eval(Y, X, running_mean, running_var, gamma=None, beta=None, eps=1e-5)
//   Y = (X - running_mean) / sqrt(running_var + eps) * gamma + beta.
// batch_norm_backward(dY, X, mean, invstd, gamma=None, dX=None, dgamma=None, dbeta=None,
//                     training=True, accumulate=True)
//   mean, invstd (C,): the saved batch statistics (training=True), or the running mean and
//   1 / sqrt(running_var + eps) for a layer in evaluation mode (training=False). dX (like X)
//   overwritten; dgamma, dbeta (C,) accumulated (+=) when accumulate, else overwritten.
// layer_norm_forward(Y, mean, rstd, X, normalized_ndim=1, gamma=None, beta=None, eps=1e-5)
//   Normalizes X over its trailing normalized_ndim axes (PyTorch's normalized_shape =
//   X.shape[-normalized_ndim:]). gamma, beta have that trailing shape or are None; mean and rstd
//   have the leading shape X.shape[:-normalized_ndim] and receive the statistics.
// layer_norm_backward(dY, X, mean, rstd, normalized_ndim=1, gamma=None, dX=None, dgamma=None,
//                     dbeta=None, accumulate=True)
//   dX overwritten; dgamma, dbeta accumulated (+=) when accumulate, else overwritten.
// dropout2d_apply(Y, X, mask, scale)
//   X (N, C, *), mask (N, C) of X's dtype (0/1 drawn by the caller's generator), Y like X
//   (may be X itself): Y = X * mask[n, c] * scale.
// dropout2d_backward(dX, dY, mask, scale)
//   dX = dY * mask[n, c] * scale (dX may be dY itself).
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "check.h"
#include "norm.h"

namespace fastnn::bind {
namespace {

using OptArray = std::optional<py::array>;
using Named = std::pair<const char*, const py::array*>;

// (N, C, S) view of an (N, C, *) array.
struct NCS {
  int64_t n, c, s;
};
NCS ncs(const std::string& op, const char* name, const py::array& x) {
  if (x.ndim() < 2) fail(op, std::string(name) + " must be (N, C, *), got shape " + shape_str(x));
  int64_t s = 1;
  for (py::ssize_t d = 2; d < x.ndim(); ++d) s *= x.shape(d);
  return {x.shape(0), x.shape(1), s};
}

void check_eps(const std::string& op, double eps) {
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    fail(op, "eps must be finite and >= 0, got " + std::to_string(eps));
  }
}

// An optional float array of X's dtype and the expected shape.
void optional_param(const std::string& op, const char* name, const OptArray& a,
                    const py::array& x, const std::vector<int64_t>& expected) {
  if (!a) return;
  float_like(op, name, *a, "X", x);
  shape(op, name, *a, expected);
}

// An output (or in-place state) array: dtype, shape, writable, and disjoint from every array
// in `others` (inputs read after writing, and other outputs).
void out_array(const std::string& op, const char* name, const py::array& a, const py::array& x,
               const std::vector<int64_t>& expected, const std::vector<Named>& others) {
  float_like(op, name, a, "X", x);
  shape(op, name, a, expected);
  writable(op, name, a);
  for (const auto& [other_name, other] : others) {
    if (other != &a) no_overlap(op, name, a, other_name, *other);
  }
}

template <class T>
const T* opt_ptr(const OptArray& a) {
  return a ? ptr<T>(*a) : nullptr;
}
template <class T>
T* opt_mut(OptArray& a) {
  return a ? mut<T>(*a) : nullptr;
}

std::vector<Named> present(std::initializer_list<std::pair<const char*, const OptArray*>> list) {
  std::vector<Named> out;
  for (const auto& [name, a] : list) {
    if (*a) out.emplace_back(name, &**a);
  }
  return out;
}

void bn_train_binding(py::array y, py::array save_mean, py::array save_invstd,
                      const py::array& x, const OptArray& gamma, const OptArray& beta,
                      OptArray running_mean, OptArray running_var, double eps, double momentum) {
  const std::string op = "batch_norm_forward_train";
  const DType dt = float_array(op, "X", x);
  const NCS d = ncs(op, "X", x);
  if (d.n * d.s < 2) {
    fail(op, "expected more than 1 value per channel when training, got X of shape " +
                 shape_str(x));
  }
  check_eps(op, eps);
  optional_param(op, "gamma", gamma, x, {d.c});
  optional_param(op, "beta", beta, x, {d.c});
  std::vector<Named> all = {{"Y", &y}, {"save_mean", &save_mean}, {"save_invstd", &save_invstd},
                            {"X", &x}};
  for (const auto& e : present({{"gamma", &gamma}, {"beta", &beta},
                                {"running_mean", &running_mean}, {"running_var", &running_var}})) {
    all.push_back(e);
  }
  out_array(op, "Y", y, x, shape_of(x), all);
  out_array(op, "save_mean", save_mean, x, {d.c}, all);
  out_array(op, "save_invstd", save_invstd, x, {d.c}, all);
  if (running_mean) out_array(op, "running_mean", *running_mean, x, {d.c}, all);
  if (running_var) out_array(op, "running_var", *running_var, x, {d.c}, all);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    T* pm = mut<T>(save_mean);
    T* pi = mut<T>(save_invstd);
    T* prm = opt_mut<T>(running_mean);
    T* prv = opt_mut<T>(running_var);
    const T* px = ptr<T>(x);
    const T* pg = opt_ptr<T>(gamma);
    const T* pb = opt_ptr<T>(beta);
    py::gil_scoped_release release;
    batch_norm_forward_train<T>(py_, pm, pi, prm, prv, px, pg, pb, d.n, d.c, d.s, eps, momentum);
  });
}

void bn_eval_binding(py::array y, const py::array& x, const py::array& running_mean,
                     const py::array& running_var, const OptArray& gamma, const OptArray& beta,
                     double eps) {
  const std::string op = "batch_norm_forward_eval";
  const DType dt = float_array(op, "X", x);
  const NCS d = ncs(op, "X", x);
  check_eps(op, eps);
  float_like(op, "running_mean", running_mean, "X", x);
  float_like(op, "running_var", running_var, "X", x);
  shape(op, "running_mean", running_mean, {d.c});
  shape(op, "running_var", running_var, {d.c});
  optional_param(op, "gamma", gamma, x, {d.c});
  optional_param(op, "beta", beta, x, {d.c});
  std::vector<Named> inputs = {{"running_mean", &running_mean}, {"running_var", &running_var}};
  for (const auto& e : present({{"gamma", &gamma}, {"beta", &beta}})) inputs.push_back(e);
  // Y may be X itself (an in-place normalization reads each element before writing it).
  out_array(op, "Y", y, x, shape_of(x), inputs);
  if (y.data() != x.data()) no_overlap(op, "Y", y, "X", x);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    const T* px = ptr<T>(x);
    const T* prm = ptr<T>(running_mean);
    const T* prv = ptr<T>(running_var);
    const T* pg = opt_ptr<T>(gamma);
    const T* pb = opt_ptr<T>(beta);
    py::gil_scoped_release release;
    batch_norm_forward_eval<T>(py_, px, prm, prv, pg, pb, d.n, d.c, d.s, eps);
  });
}

void bn_backward_binding(const py::array& dy, const py::array& x, const py::array& mean,
                         const py::array& invstd, const OptArray& gamma, OptArray dx,
                         OptArray dgamma, OptArray dbeta, bool training, bool accumulate) {
  const std::string op = "batch_norm_backward";
  const DType dt = float_array(op, "X", x);
  const NCS d = ncs(op, "X", x);
  float_like(op, "dY", dy, "X", x);
  same_shape(op, "dY", dy, "X", x);
  float_like(op, "mean", mean, "X", x);
  float_like(op, "invstd", invstd, "X", x);
  shape(op, "mean", mean, {d.c});
  shape(op, "invstd", invstd, {d.c});
  optional_param(op, "gamma", gamma, x, {d.c});
  std::vector<Named> all = {{"dY", &dy}, {"X", &x}, {"mean", &mean}, {"invstd", &invstd}};
  for (const auto& e : present({{"gamma", &gamma}, {"dX", &dx}, {"dgamma", &dgamma},
                                {"dbeta", &dbeta}})) {
    all.push_back(e);
  }
  if (dx) out_array(op, "dX", *dx, x, shape_of(x), all);
  if (dgamma) out_array(op, "dgamma", *dgamma, x, {d.c}, all);
  if (dbeta) out_array(op, "dbeta", *dbeta, x, {d.c}, all);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = opt_mut<T>(dx);
    T* pdg = opt_mut<T>(dgamma);
    T* pdb = opt_mut<T>(dbeta);
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    const T* pm = ptr<T>(mean);
    const T* pi = ptr<T>(invstd);
    const T* pg = opt_ptr<T>(gamma);
    py::gil_scoped_release release;
    batch_norm_backward<T>(pdx, pdg, pdb, pdy, px, pm, pi, pg, d.n, d.c, d.s, training,
                           accumulate);
  });
}

// Leading (rows) and trailing (normalized) shapes of X for layer norm.
struct RowsD {
  std::vector<int64_t> lead, trail;
  int64_t rows = 1, d = 1;
};
RowsD split_rows(const std::string& op, const py::array& x, int64_t normalized_ndim) {
  if (normalized_ndim < 1 || normalized_ndim > x.ndim()) {
    fail(op, "normalized_ndim must be in [1, X.ndim], got " + std::to_string(normalized_ndim) +
                 " for X of shape " + shape_str(x));
  }
  RowsD r;
  const int64_t split = x.ndim() - normalized_ndim;
  for (int64_t i = 0; i < x.ndim(); ++i) {
    (i < split ? r.lead : r.trail).push_back(x.shape(i));
    (i < split ? r.rows : r.d) *= x.shape(i);
  }
  if (r.d < 1) fail(op, "the normalized shape " + shape_str(r.trail) + " must be non-empty");
  return r;
}

void ln_forward_binding(py::array y, py::array mean, py::array rstd, const py::array& x,
                        int64_t normalized_ndim, const OptArray& gamma, const OptArray& beta,
                        double eps) {
  const std::string op = "layer_norm_forward";
  const DType dt = float_array(op, "X", x);
  const RowsD r = split_rows(op, x, normalized_ndim);
  check_eps(op, eps);
  optional_param(op, "gamma", gamma, x, r.trail);
  optional_param(op, "beta", beta, x, r.trail);
  std::vector<Named> all = {{"Y", &y}, {"mean", &mean}, {"rstd", &rstd}, {"X", &x}};
  for (const auto& e : present({{"gamma", &gamma}, {"beta", &beta}})) all.push_back(e);
  out_array(op, "Y", y, x, shape_of(x), all);
  out_array(op, "mean", mean, x, r.lead, all);
  out_array(op, "rstd", rstd, x, r.lead, all);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* py_ = mut<T>(y);
    T* pm = mut<T>(mean);
    T* pr = mut<T>(rstd);
    const T* px = ptr<T>(x);
    const T* pg = opt_ptr<T>(gamma);
    const T* pb = opt_ptr<T>(beta);
    py::gil_scoped_release release;
    layer_norm_forward<T>(py_, pm, pr, px, pg, pb, r.rows, r.d, eps);
  });
}

void ln_backward_binding(const py::array& dy, const py::array& x, const py::array& mean,
                         const py::array& rstd, int64_t normalized_ndim, const OptArray& gamma,
                         OptArray dx, OptArray dgamma, OptArray dbeta, bool accumulate) {
  const std::string op = "layer_norm_backward";
  const DType dt = float_array(op, "X", x);
  const RowsD r = split_rows(op, x, normalized_ndim);
  float_like(op, "dY", dy, "X", x);
  same_shape(op, "dY", dy, "X", x);
  float_like(op, "mean", mean, "X", x);
  float_like(op, "rstd", rstd, "X", x);
  shape(op, "mean", mean, r.lead);
  shape(op, "rstd", rstd, r.lead);
  optional_param(op, "gamma", gamma, x, r.trail);
  std::vector<Named> all = {{"dY", &dy}, {"X", &x}, {"mean", &mean}, {"rstd", &rstd}};
  for (const auto& e : present({{"gamma", &gamma}, {"dX", &dx}, {"dgamma", &dgamma},
                                {"dbeta", &dbeta}})) {
    all.push_back(e);
  }
  if (dx) out_array(op, "dX", *dx, x, shape_of(x), all);
  if (dgamma) out_array(op, "dgamma", *dgamma, x, r.trail, all);
  if (dbeta) out_array(op, "dbeta", *dbeta, x, r.trail, all);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = opt_mut<T>(dx);
    T* pdg = opt_mut<T>(dgamma);
    T* pdb = opt_mut<T>(dbeta);
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    const T* pm = ptr<T>(mean);
    const T* pr = ptr<T>(rstd);
    const T* pg = opt_ptr<T>(gamma);
    py::gil_scoped_release release;
    layer_norm_backward<T>(pdx, pdg, pdb, pdy, px, pm, pr, pg, r.rows, r.d, accumulate);
  });
}

// Y = X * mask[n, c] * scale; shared by dropout2d_apply and dropout2d_backward, whose arrays
// are named differently in messages.
void dropout2d(const std::string& op, const char* out_name, py::array& out, const char* in_name,
               const py::array& in, const py::array& mask, double scale) {
  const DType dt = float_array(op, in_name, in);
  float_like(op, out_name, out, in_name, in);
  float_like(op, "mask", mask, in_name, in);
  const NCS d = ncs(op, in_name, in);
  same_shape(op, out_name, out, in_name, in);
  shape(op, "mask", mask, {d.n, d.c});
  writable(op, out_name, out);
  // The output may be the input itself (each element is read, then written), but a partial
  // overlap would read already scaled values.
  if (out.data() != in.data()) no_overlap(op, out_name, out, in_name, in);
  no_overlap(op, out_name, out, "mask", mask);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    T* po = mut<T>(out);
    const T* pi = ptr<T>(in);
    const T* pm = ptr<T>(mask);
    py::gil_scoped_release release;
    dropout2d_apply<T>(po, pi, pm, d.n, d.c, d.s, static_cast<T>(scale));
  });
}

void register_norm(py::module_& m) {
  m.def("batch_norm_forward_train", &bn_train_binding, py::arg("Y").noconvert(),
        py::arg("save_mean").noconvert(), py::arg("save_invstd").noconvert(),
        py::arg("X").noconvert(), py::arg("gamma").noconvert() = py::none(),
        py::arg("beta").noconvert() = py::none(),
        py::arg("running_mean").noconvert() = py::none(),
        py::arg("running_var").noconvert() = py::none(), py::arg("eps") = 1e-5,
        py::arg("momentum") = 0.1,
        "Batch-norm training forward over (N, C, *): Y, saved mean and invstd, running stats.");
  m.def("batch_norm_forward_eval", &bn_eval_binding, py::arg("Y").noconvert(),
        py::arg("X").noconvert(), py::arg("running_mean").noconvert(),
        py::arg("running_var").noconvert(), py::arg("gamma").noconvert() = py::none(),
        py::arg("beta").noconvert() = py::none(), py::arg("eps") = 1e-5,
        "Batch-norm evaluation forward with the running statistics.");
  m.def("batch_norm_backward", &bn_backward_binding, py::arg("dY").noconvert(),
        py::arg("X").noconvert(), py::arg("mean").noconvert(), py::arg("invstd").noconvert(),
        py::arg("gamma").noconvert() = py::none(), py::arg("dX").noconvert() = py::none(),
        py::arg("dgamma").noconvert() = py::none(), py::arg("dbeta").noconvert() = py::none(),
        py::arg("training") = true, py::arg("accumulate") = true,
        "Batch-norm backward: dX overwritten; dgamma, dbeta accumulated unless accumulate=False.");
  m.def("layer_norm_forward", &ln_forward_binding, py::arg("Y").noconvert(),
        py::arg("mean").noconvert(), py::arg("rstd").noconvert(), py::arg("X").noconvert(),
        py::arg("normalized_ndim") = 1, py::arg("gamma").noconvert() = py::none(),
        py::arg("beta").noconvert() = py::none(), py::arg("eps") = 1e-5,
        "Layer-norm forward over the trailing normalized_ndim axes; saves mean and rstd.");
  m.def("layer_norm_backward", &ln_backward_binding, py::arg("dY").noconvert(),
        py::arg("X").noconvert(), py::arg("mean").noconvert(), py::arg("rstd").noconvert(),
        py::arg("normalized_ndim") = 1, py::arg("gamma").noconvert() = py::none(),
        py::arg("dX").noconvert() = py::none(), py::arg("dgamma").noconvert() = py::none(),
        py::arg("dbeta").noconvert() = py::none(), py::arg("accumulate") = true,
        "Layer-norm backward: dX overwritten; dgamma, dbeta accumulated unless "
        "accumulate=False.");
  m.def("dropout2d_apply", [](py::array y, const py::array& x, const py::array& mask,
                              double scale) { dropout2d("dropout2d_apply", "Y", y, "X", x, mask,
                                                        scale); },
        py::arg("Y").noconvert(), py::arg("X").noconvert(), py::arg("mask").noconvert(),
        py::arg("scale"), "Y = X * mask[n, c] * scale over (N, C, *); Y may be X.");
  m.def("dropout2d_backward", [](py::array dx, const py::array& dy, const py::array& mask,
                                 double scale) { dropout2d("dropout2d_backward", "dX", dx, "dY",
                                                           dy, mask, scale); },
        py::arg("dX").noconvert(), py::arg("dY").noconvert(), py::arg("mask").noconvert(),
        py::arg("scale"), "dX = dY * mask[n, c] * scale; dX may be dY.");
}

const Registrar registrar("norm", &register_norm);

}  // namespace
}  // namespace fastnn::bind
