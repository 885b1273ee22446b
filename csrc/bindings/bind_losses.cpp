// Bindings for the loss kernels: cross-entropy (fused with softmax), MSE, BCE with logits.
#include <optional>

#include <pybind11/stl.h>

#include "check.h"
#include "losses.h"

namespace fastnn::bind {
namespace {

// An output may be the very same array as an input it is computed from element by element,
// but a partial overlap would be read after being written.
void same_or_disjoint(const std::string& op, const char* out_name, const py::array& out,
                      const char* in_name, const py::array& in) {
  if (out.data() == in.data() && out.nbytes() == in.nbytes()) return;
  no_overlap(op, out_name, out, in_name, in);
}

Reduction parse_reduction(const std::string& op, const std::string& name) {
  if (name == "mean") return Reduction::mean;
  if (name == "sum") return Reduction::sum;
  fail(op, "unknown reduction '" + name + "' (expected 'mean' or 'sum')");
}

// Labels: int64, C-contiguous, shape (n,), each in [0, c) or equal to ignore_index. Checked on
// every call because the kernels index rows with them.
const int64_t* checked_labels(const std::string& op, const py::array& labels, int64_t n,
                              int64_t c, int64_t ignore_index) {
  if (labels.dtype().kind() != 'i' || labels.itemsize() != 8) {
    fail_type(op, "labels must be int64, got " + dtype_str(labels));
  }
  if (!(labels.flags() & py::array::c_style)) {
    fail(op, "labels with shape " + shape_str(labels) + " must be C-contiguous");
  }
  shape(op, "labels", labels, {n});
  const auto* p = static_cast<const int64_t*>(labels.data());
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] != ignore_index && (p[i] < 0 || p[i] >= c)) {
      fail(op, "label " + std::to_string(p[i]) + " in row " + std::to_string(i) +
                   " is out of range for " + std::to_string(c) + " classes (expected 0 to " +
                   std::to_string(c - 1) + ", or ignore_index " + std::to_string(ignore_index) +
                   ")");
    }
  }
  return p;
}

CrossEntropyOptions ce_options(const std::string& op, double label_smoothing,
                               const std::string& reduction, int64_t ignore_index) {
  if (!(label_smoothing >= 0 && label_smoothing <= 1)) {
    fail(op, "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  }
  CrossEntropyOptions options;
  options.label_smoothing = label_smoothing;
  options.reduction = parse_reduction(op, reduction);
  options.ignore_index = ignore_index;
  return options;
}

// weight: None or (c,) of the reference dtype.
const py::array* optional_weight(const std::string& op, const char* name,
                                 const std::optional<py::array>& weight, const char* ref_name,
                                 const py::array& ref, int64_t c) {
  if (!weight) return nullptr;
  float_like(op, name, *weight, ref_name, ref);
  shape(op, name, *weight, {c});
  return &*weight;
}

template <class T>
const T* ptr_or_null(const py::array* a) {
  return a ? ptr<T>(*a) : nullptr;
}

double cross_entropy_forward_binding(py::array probs, const py::array& logits,
                                     const py::array& labels,
                                     const std::optional<py::array>& weight,
                                     double label_smoothing, const std::string& reduction,
                                     int64_t ignore_index) {
  const std::string op = "cross_entropy_forward";
  const CrossEntropyOptions options = ce_options(op, label_smoothing, reduction, ignore_index);
  const DType dt = float_array(op, "logits", logits);
  ndim(op, "logits", logits, 2);
  const int64_t n = logits.shape(0), c = logits.shape(1);
  float_like(op, "probs", probs, "logits", logits);
  same_shape(op, "probs", probs, "logits", logits);
  writable(op, "probs", probs);
  no_overlap(op, "probs", probs, "logits", logits);
  const py::array* w = optional_weight(op, "weight", weight, "logits", logits, c);
  if (w) no_overlap(op, "probs", probs, "weight", *w);
  const int64_t* pl = checked_labels(op, labels, n, c, ignore_index);
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(logits);
    const T* pw = ptr_or_null<T>(w);
    T* pp = mut<T>(probs);
    py::gil_scoped_release release;
    return cross_entropy_forward<T>(pp, px, pl, pw, options, n, c);
  });
}

void cross_entropy_backward_binding(py::array dlogits, const py::array& probs,
                                    const py::array& labels,
                                    const std::optional<py::array>& weight,
                                    double label_smoothing, const std::string& reduction,
                                    int64_t ignore_index, double grad_scale) {
  const std::string op = "cross_entropy_backward";
  const CrossEntropyOptions options = ce_options(op, label_smoothing, reduction, ignore_index);
  const DType dt = float_array(op, "probs", probs);
  ndim(op, "probs", probs, 2);
  const int64_t n = probs.shape(0), c = probs.shape(1);
  float_like(op, "dlogits", dlogits, "probs", probs);
  same_shape(op, "dlogits", dlogits, "probs", probs);
  writable(op, "dlogits", dlogits);
  same_or_disjoint(op, "dlogits", dlogits, "probs", probs);
  const py::array* w = optional_weight(op, "weight", weight, "probs", probs, c);
  if (w) no_overlap(op, "dlogits", dlogits, "weight", *w);
  const int64_t* pl = checked_labels(op, labels, n, c, ignore_index);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pp = ptr<T>(probs);
    const T* pw = ptr_or_null<T>(w);
    T* pd = mut<T>(dlogits);
    py::gil_scoped_release release;
    cross_entropy_backward<T>(pd, pp, pl, pw, options, grad_scale, n, c);
  });
}

double mse_forward_binding(const py::array& pred, const py::array& target,
                           const std::string& reduction) {
  const std::string op = "mse_forward";
  const Reduction red = parse_reduction(op, reduction);
  const DType dt = float_array(op, "pred", pred);
  float_like(op, "target", target, "pred", pred);
  same_shape(op, "target", target, "pred", pred);
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pp = ptr<T>(pred);
    const T* pt = ptr<T>(target);
    const int64_t count = pred.size();
    py::gil_scoped_release release;
    return mse_forward<T>(pp, pt, red, count);
  });
}

void mse_backward_binding(py::array dpred, const py::array& pred, const py::array& target,
                          const std::string& reduction, double grad_scale) {
  const std::string op = "mse_backward";
  const Reduction red = parse_reduction(op, reduction);
  const DType dt = float_array(op, "pred", pred);
  float_like(op, "target", target, "pred", pred);
  float_like(op, "dpred", dpred, "pred", pred);
  same_shape(op, "target", target, "pred", pred);
  same_shape(op, "dpred", dpred, "pred", pred);
  writable(op, "dpred", dpred);
  same_or_disjoint(op, "dpred", dpred, "pred", pred);
  same_or_disjoint(op, "dpred", dpred, "target", target);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* pp = ptr<T>(pred);
    const T* pt = ptr<T>(target);
    T* pd = mut<T>(dpred);
    const int64_t count = pred.size();
    py::gil_scoped_release release;
    mse_backward<T>(pd, pp, pt, red, grad_scale, count);
  });
}

// pos_weight: None or (c,) where c is the last axis of logits.
const py::array* checked_pos_weight(const std::string& op,
                                    const std::optional<py::array>& pos_weight,
                                    const py::array& logits, int64_t* c) {
  *c = logits.ndim() ? logits.shape(logits.ndim() - 1) : 1;
  if (!pos_weight) return nullptr;
  if (logits.ndim() == 0) fail(op, "pos_weight needs logits with at least one axis");
  return optional_weight(op, "pos_weight", pos_weight, "logits", logits, *c);
}

double bce_forward_binding(const py::array& logits, const py::array& target,
                           const std::optional<py::array>& pos_weight,
                           const std::string& reduction) {
  const std::string op = "bce_with_logits_forward";
  const Reduction red = parse_reduction(op, reduction);
  const DType dt = float_array(op, "logits", logits);
  float_like(op, "target", target, "logits", logits);
  same_shape(op, "target", target, "logits", logits);
  int64_t c = 1;
  const py::array* pw = checked_pos_weight(op, pos_weight, logits, &c);
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(logits);
    const T* pt = ptr<T>(target);
    const T* ppw = ptr_or_null<T>(pw);
    const int64_t count = logits.size();
    py::gil_scoped_release release;
    return bce_with_logits_forward<T>(px, pt, ppw, red, count, c);
  });
}

void bce_backward_binding(py::array dlogits, const py::array& logits, const py::array& target,
                          const std::optional<py::array>& pos_weight,
                          const std::string& reduction, double grad_scale) {
  const std::string op = "bce_with_logits_backward";
  const Reduction red = parse_reduction(op, reduction);
  const DType dt = float_array(op, "logits", logits);
  float_like(op, "target", target, "logits", logits);
  float_like(op, "dlogits", dlogits, "logits", logits);
  same_shape(op, "target", target, "logits", logits);
  same_shape(op, "dlogits", dlogits, "logits", logits);
  writable(op, "dlogits", dlogits);
  same_or_disjoint(op, "dlogits", dlogits, "logits", logits);
  same_or_disjoint(op, "dlogits", dlogits, "target", target);
  int64_t c = 1;
  const py::array* pw = checked_pos_weight(op, pos_weight, logits, &c);
  if (pw) no_overlap(op, "dlogits", dlogits, "pos_weight", *pw);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(logits);
    const T* pt = ptr<T>(target);
    const T* ppw = ptr_or_null<T>(pw);
    T* pd = mut<T>(dlogits);
    const int64_t count = logits.size();
    py::gil_scoped_release release;
    bce_with_logits_backward<T>(pd, px, pt, ppw, red, grad_scale, count, c);
  });
}

void register_losses(py::module_& m) {
  m.def("cross_entropy_forward", &cross_entropy_forward_binding, py::arg("probs"),
        py::arg("logits"), py::arg("labels"), py::arg("weight") = py::none(),
        py::arg("label_smoothing") = 0.0, py::arg("reduction") = "mean",
        py::arg("ignore_index") = -100,
        "Cross-entropy of softmax(logits) (N, C) against int64 labels (N,), as PyTorch's; "
        "writes softmax(logits) into probs for the backward and returns the loss.");
  m.def("cross_entropy_backward", &cross_entropy_backward_binding, py::arg("dlogits"),
        py::arg("probs"), py::arg("labels"), py::arg("weight") = py::none(),
        py::arg("label_smoothing") = 0.0, py::arg("reduction") = "mean",
        py::arg("ignore_index") = -100, py::arg("grad_scale") = 1.0,
        "dlogits = grad_scale * d loss / d logits, overwritten; dlogits may be probs.");
  m.def("mse_forward", &mse_forward_binding, py::arg("pred"), py::arg("target"),
        py::arg("reduction") = "mean", "Mean (or sum) of (pred - target)**2.");
  m.def("mse_backward", &mse_backward_binding, py::arg("dpred"), py::arg("pred"),
        py::arg("target"), py::arg("reduction") = "mean", py::arg("grad_scale") = 1.0,
        "dpred = grad_scale * d loss / d pred, overwritten.");
  m.def("bce_with_logits_forward", &bce_forward_binding, py::arg("logits"), py::arg("target"),
        py::arg("pos_weight") = py::none(), py::arg("reduction") = "mean",
        "Binary cross-entropy on logits, as PyTorch's; pos_weight (C,) applies along the last "
        "axis.");
  m.def("bce_with_logits_backward", &bce_backward_binding, py::arg("dlogits"), py::arg("logits"),
        py::arg("target"), py::arg("pos_weight") = py::none(), py::arg("reduction") = "mean",
        py::arg("grad_scale") = 1.0, "dlogits = grad_scale * d loss / d logits, overwritten.");
}

const Registrar registrar("losses", &register_losses);

}  // namespace
}  // namespace fastnn::bind
