// Bindings for the multi-tensor optimizer steps and the gradient-list utilities.
//
// Each call takes Python lists of arrays (element i of every list belongs to parameter i),
// checks every array up front, then releases the GIL once for the whole list.
#include <algorithm>
#include <cmath>
#include <deque>
#include <sstream>

#include "check.h"
#include "optim.h"

namespace fastnn::bind {
namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Hyper-parameter checks: finite, and within [lo, hi] / [lo, hi) as asked.
void finite(const std::string& op, const char* name, double v) {
  if (!std::isfinite(v)) fail(op, std::string(name) + " must be finite, got " + num(v));
}

void at_least(const std::string& op, const char* name, double v, double lo) {
  finite(op, name, v);
  if (!(v >= lo)) fail(op, std::string(name) + " must be >= " + num(lo) + ", got " + num(v));
}

void positive(const std::string& op, const char* name, double v) {
  finite(op, name, v);
  if (!(v > 0)) fail(op, std::string(name) + " must be > 0, got " + num(v));
}

void unit_interval(const std::string& op, const char* name, double v) {
  finite(op, name, v);
  if (!(v >= 0 && v < 1)) fail(op, std::string(name) + " must be in [0, 1), got " + num(v));
}

void step_count(const std::string& op, int64_t step) {
  if (step < 1) fail(op, "step must be >= 1 (counted after the increment), got " +
                             std::to_string(step));
}

std::string item(const char* name, size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

// The arrays of one call: params plus companion lists (grads, state), each element checked
// against its parameter. Holds references to every array while the GIL is released.
class TensorLists {
 public:
  TensorLists(std::string op, const py::object& params, const char* params_name = "params")
      : op_(std::move(op)), params_name_(params_name) {
    params_ = arrays(params_name, params);
    for (size_t i = 0; i < params_.size(); ++i) {
      if (i == 0 || !conforms(params_[i], params_[0], true)) {
        const std::string name = item(params_name, i), first = item(params_name, 0);
        if (i == 0) {
          dtype_ = float_array(op_, name.c_str(), params_[0]);
        } else {
          float_like(op_, name.c_str(), params_[i], first.c_str(), params_[0]);
        }
        writable(op_, name.c_str(), params_[i]);
      }
      add_range(params_[i], params_name, i, true);
    }
  }

  // A list that must match params element by element; `written` lists must be writable.
  const std::vector<py::array>& add(const char* name, const py::object& list, bool written) {
    lists_.push_back(arrays(name, list));
    const auto& arrs = lists_.back();
    if (arrs.size() != params_.size()) {
      fail(op_, std::string(name) + " has " + std::to_string(arrs.size()) +
                    " arrays but " + params_name_ + " has " + std::to_string(params_.size()) +
                    "; the lists must have equal lengths");
    }
    for (size_t i = 0; i < arrs.size(); ++i) {
      if (!conforms(arrs[i], params_[i], written) || !same_dims(arrs[i], params_[i])) {
        const std::string n = item(name, i), p = item(params_name_.c_str(), i);
        float_like(op_, n.c_str(), arrs[i], p.c_str(), params_[i]);
        same_shape(op_, n.c_str(), arrs[i], p.c_str(), params_[i]);
        if (written) writable(op_, n.c_str(), arrs[i]);
      }
      add_range(arrs[i], name, i, written);
    }
    return arrs;
  }

  // No array that is written may share memory with any other array of the call: a shared
  // buffer would be updated twice or read after being overwritten. Sort and sweep, so a long
  // parameter list costs n log n, not n^2.
  void check_overlaps() {
    std::sort(ranges_.begin(), ranges_.end(),
              [](const Range& a, const Range& b) { return a.begin < b.begin; });
    const Range* reach_any = nullptr;      // earlier range reaching furthest
    const Range* reach_written = nullptr;  // same, among written ranges
    for (const Range& r : ranges_) {
      const Range* other = r.written ? reach_any : reach_written;
      if (other && r.begin < other->end) {
        fail(op_, item(r.list, r.index) + " overlaps " + item(other->list, other->index) +
                      " in memory; every parameter, gradient and state needs its own array");
      }
      if (!reach_any || r.end > reach_any->end) reach_any = &r;
      if (r.written && (!reach_written || r.end > reach_written->end)) reach_written = &r;
    }
  }

  const std::vector<py::array>& params() const { return params_; }
  DType dtype() const { return dtype_; }
  size_t size() const { return params_.size(); }

 private:
  struct Range {
    const char* begin;
    const char* end;
    const char* list;  // the array is list[index]: its name is built only for an error
    size_t index;
    bool written;
  };

  // Whether `a` passes every check against `ref`, an array already checked (or the first
  // parameter, checked in full): the same dtype object, C-contiguous, writable when written.
  // Most calls of a training loop take this path and never build the names error messages use;
  // an array that fails it is checked in full, which either raises or passes.
  static bool conforms(const py::array& a, const py::array& ref, bool written) {
    const auto* ap = py::detail::array_proxy(a.ptr());
    const auto* rp = py::detail::array_proxy(ref.ptr());
    return ap->descr == rp->descr && (ap->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
           (!written || (ap->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_));
  }

  static bool same_dims(const py::array& a, const py::array& ref) {
    if (a.ndim() != ref.ndim()) return false;
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
      if (a.shape(d) != ref.shape(d)) return false;
    }
    return true;
  }

  std::vector<py::array> arrays(const char* name, const py::object& list) {
    if (!py::isinstance<py::list>(list) && !py::isinstance<py::tuple>(list)) {
      fail_type(op_, std::string(name) + " must be a list of numpy arrays, got " +
                         py::str(py::type::of(list).attr("__name__")).cast<std::string>());
    }
    std::vector<py::array> out;
    for (const py::handle h : list) {
      if (!py::isinstance<py::array>(h)) {
        fail_type(op_, item(name, out.size()) + " must be a numpy array, got " +
                           py::str(py::type::of(h).attr("__name__")).cast<std::string>());
      }
      out.push_back(py::reinterpret_borrow<py::array>(h));
    }
    return out;
  }

  void add_range(const py::array& a, const char* list, size_t index, bool written) {
    if (a.nbytes() == 0) return;
    const char* begin = static_cast<const char*>(a.data());
    ranges_.push_back({begin, begin + a.nbytes(), list, index, written});
  }

  std::string op_;
  std::string params_name_;
  DType dtype_ = DType::f32;
  std::vector<py::array> params_;
  std::deque<std::vector<py::array>> lists_;  // a deque: add() hands out references to them
  std::vector<Range> ranges_;
};

template <class T>
T* data_or_null(const std::vector<py::array>* list, size_t i) {
  return list ? mut<T>(const_cast<py::array&>((*list)[i])) : nullptr;
}

template <class T>
const T* cdata(const std::vector<py::array>& list, size_t i) {
  return ptr<T>(list[i]);
}

template <class T>
T* wdata(const std::vector<py::array>& list, size_t i) {
  return mut<T>(const_cast<py::array&>(list[i]));
}

void sgd_step_binding(const py::object& params, const py::object& grads,
                      const py::object& momentum_buffers, double lr, double momentum,
                      double dampening, double weight_decay, bool nesterov, bool maximize,
                      bool first_step) {
  const std::string op = "sgd_step";
  at_least(op, "lr", lr, 0);
  at_least(op, "momentum", momentum, 0);
  finite(op, "dampening", dampening);
  at_least(op, "weight_decay", weight_decay, 0);
  if (nesterov && (momentum <= 0 || dampening != 0)) {
    fail(op, "nesterov needs momentum > 0 and dampening == 0, got momentum " + num(momentum) +
                 " and dampening " + num(dampening));
  }
  if (momentum != 0 && momentum_buffers.is_none()) {
    fail(op, "momentum_buffers is required when momentum != 0 (momentum " + num(momentum) + ")");
  }
  TensorLists lists(op, params);
  const auto& g = lists.add("grads", grads, false);
  const std::vector<py::array>* buf =
      momentum_buffers.is_none() ? nullptr : &lists.add("momentum_buffers", momentum_buffers, true);
  lists.check_overlaps();
  const SgdOptions o{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
  dispatch(lists.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<SgdTensor<T>> tensors;
    for (size_t i = 0; i < lists.size(); ++i) {
      tensors.push_back({wdata<T>(lists.params(), i), cdata<T>(g, i),
                         momentum != 0 ? data_or_null<T>(buf, i) : nullptr,
                         int64_t(lists.params()[i].size())});
    }
    py::gil_scoped_release release;
    sgd_step(tensors, o);
  });
}

void adam_step_binding(const py::object& params, const py::object& grads,
                       const py::object& exp_avgs, const py::object& exp_avg_sqs, int64_t step,
                       double lr, double beta1, double beta2, double eps, double weight_decay,
                       bool decoupled_weight_decay, const py::object& max_exp_avg_sqs,
                       bool maximize) {
  const std::string op = "adam_step";
  step_count(op, step);
  at_least(op, "lr", lr, 0);
  unit_interval(op, "beta1", beta1);
  unit_interval(op, "beta2", beta2);
  positive(op, "eps", eps);
  at_least(op, "weight_decay", weight_decay, 0);
  TensorLists lists(op, params);
  const auto& g = lists.add("grads", grads, false);
  const auto& m = lists.add("exp_avgs", exp_avgs, true);
  const auto& v = lists.add("exp_avg_sqs", exp_avg_sqs, true);
  const std::vector<py::array>* vmax =
      max_exp_avg_sqs.is_none() ? nullptr : &lists.add("max_exp_avg_sqs", max_exp_avg_sqs, true);
  lists.check_overlaps();
  AdamOptions o;
  o.lr = lr, o.beta1 = beta1, o.beta2 = beta2, o.eps = eps, o.weight_decay = weight_decay;
  o.decoupled_weight_decay = decoupled_weight_decay, o.maximize = maximize, o.step = step;
  dispatch(lists.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<AdamTensor<T>> tensors;
    for (size_t i = 0; i < lists.size(); ++i) {
      tensors.push_back({wdata<T>(lists.params(), i), cdata<T>(g, i), wdata<T>(m, i),
                         wdata<T>(v, i), data_or_null<T>(vmax, i),
                         int64_t(lists.params()[i].size())});
    }
    py::gil_scoped_release release;
    adam_step(tensors, o);
  });
}

void rmsprop_step_binding(const py::object& params, const py::object& grads,
                          const py::object& square_avgs, double lr, double alpha, double eps,
                          double weight_decay, double momentum,
                          const py::object& momentum_buffers, bool centered,
                          const py::object& grad_avgs, bool maximize) {
  const std::string op = "rmsprop_step";
  at_least(op, "lr", lr, 0);
  unit_interval(op, "alpha", alpha);
  positive(op, "eps", eps);
  at_least(op, "weight_decay", weight_decay, 0);
  at_least(op, "momentum", momentum, 0);
  if (momentum > 0 && momentum_buffers.is_none()) {
    fail(op, "momentum_buffers is required when momentum > 0 (momentum " + num(momentum) + ")");
  }
  if (centered && grad_avgs.is_none()) fail(op, "grad_avgs is required when centered=True");
  TensorLists lists(op, params);
  const auto& g = lists.add("grads", grads, false);
  const auto& sq = lists.add("square_avgs", square_avgs, true);
  const std::vector<py::array>* buf =
      momentum_buffers.is_none() ? nullptr : &lists.add("momentum_buffers", momentum_buffers, true);
  const std::vector<py::array>* ga =
      grad_avgs.is_none() ? nullptr : &lists.add("grad_avgs", grad_avgs, true);
  lists.check_overlaps();
  RmspropOptions o;
  o.lr = lr, o.alpha = alpha, o.eps = eps, o.weight_decay = weight_decay, o.momentum = momentum;
  o.centered = centered, o.maximize = maximize;
  dispatch(lists.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<RmspropTensor<T>> tensors;
    for (size_t i = 0; i < lists.size(); ++i) {
      tensors.push_back({wdata<T>(lists.params(), i), cdata<T>(g, i), wdata<T>(sq, i),
                         momentum > 0 ? data_or_null<T>(buf, i) : nullptr,
                         centered ? data_or_null<T>(ga, i) : nullptr,
                         int64_t(lists.params()[i].size())});
    }
    py::gil_scoped_release release;
    rmsprop_step(tensors, o);
  });
}

void adagrad_step_binding(const py::object& params, const py::object& grads,
                          const py::object& state_sums, int64_t step, double lr,
                          double lr_decay, double weight_decay, double eps, bool maximize) {
  const std::string op = "adagrad_step";
  step_count(op, step);
  at_least(op, "lr", lr, 0);
  at_least(op, "lr_decay", lr_decay, 0);
  at_least(op, "weight_decay", weight_decay, 0);
  positive(op, "eps", eps);
  TensorLists lists(op, params);
  const auto& g = lists.add("grads", grads, false);
  const auto& s = lists.add("state_sums", state_sums, true);
  lists.check_overlaps();
  AdagradOptions o;
  o.lr = lr, o.lr_decay = lr_decay, o.weight_decay = weight_decay, o.eps = eps;
  o.maximize = maximize, o.step = step;
  dispatch(lists.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<AdagradTensor<T>> tensors;
    for (size_t i = 0; i < lists.size(); ++i) {
      tensors.push_back({wdata<T>(lists.params(), i), cdata<T>(g, i), wdata<T>(s, i),
                         int64_t(lists.params()[i].size())});
    }
    py::gil_scoped_release release;
    adagrad_step(tensors, o);
  });
}

// The list utilities treat their arrays as "params": one dtype, C-contiguous, and (for the
// in-place ones) writable and not sharing memory.
double sum_of_squares_binding(const py::object& arrays) {
  const std::string op = "sum_of_squares";
  // Read-only arrays are fine here; check dtype and layout without the writable test.
  if (!py::isinstance<py::list>(arrays) && !py::isinstance<py::tuple>(arrays)) {
    fail_type(op, "arrays must be a list of numpy arrays, got " +
                      py::str(py::type::of(arrays).attr("__name__")).cast<std::string>());
  }
  std::vector<py::array> arrs;
  for (const py::handle h : arrays) {
    const std::string name = item("arrays", arrs.size());
    if (!py::isinstance<py::array>(h)) {
      fail_type(op, name + " must be a numpy array, got " +
                        py::str(py::type::of(h).attr("__name__")).cast<std::string>());
    }
    arrs.push_back(py::reinterpret_borrow<py::array>(h));
    if (arrs.size() == 1) {
      float_array(op, name.c_str(), arrs[0]);
    } else {
      float_like(op, name.c_str(), arrs.back(), "arrays[0]", arrs[0]);
    }
  }
  if (arrs.empty()) return 0.0;
  return dispatch(float_array(op, "arrays[0]", arrs[0]), [&](auto tag) {
    using T = decltype(tag);
    std::vector<Span<const T>> spans;
    for (const auto& a : arrs) spans.push_back({ptr<T>(a), int64_t(a.size())});
    py::gil_scoped_release release;
    return sum_of_squares(spans);
  });
}

template <class F>
void in_place_binding(const std::string& op, const py::object& arrays, F&& f) {
  TensorLists lists(op, arrays, "arrays");
  lists.check_overlaps();
  dispatch(lists.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<Span<T>> spans;
    for (size_t i = 0; i < lists.size(); ++i) {
      spans.push_back({wdata<T>(lists.params(), i), int64_t(lists.params()[i].size())});
    }
    py::gil_scoped_release release;
    f(spans);
  });
}

void register_optim(py::module_& m) {
  m.def("sgd_step", &sgd_step_binding, py::arg("params"), py::arg("grads"),
        py::arg("momentum_buffers") = py::none(), py::arg("lr"), py::arg("momentum") = 0.0,
        py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0, py::arg("nesterov") = false,
        py::arg("maximize") = false, py::arg("first_step") = false,
        "One SGD step over lists of arrays, in place (torch.optim.SGD's formulas); on the "
        "first step (first_step=True) the momentum buffer is set to the gradient.");
  m.def("adam_step", &adam_step_binding, py::arg("params"), py::arg("grads"),
        py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("step"), py::arg("lr"),
        py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
        py::arg("weight_decay") = 0.0, py::arg("decoupled_weight_decay") = false,
        py::arg("max_exp_avg_sqs") = py::none(), py::arg("maximize") = false,
        "One Adam / AdamW (decoupled_weight_decay) step over lists of arrays, in place; step "
        "is the 1-based count after the increment; max_exp_avg_sqs given means amsgrad.");
  m.def("rmsprop_step", &rmsprop_step_binding, py::arg("params"), py::arg("grads"),
        py::arg("square_avgs"), py::arg("lr"), py::arg("alpha") = 0.99, py::arg("eps") = 1e-8,
        py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0,
        py::arg("momentum_buffers") = py::none(), py::arg("centered") = false,
        py::arg("grad_avgs") = py::none(), py::arg("maximize") = false,
        "One RMSprop step over lists of arrays, in place (torch.optim.RMSprop's formulas).");
  m.def("adagrad_step", &adagrad_step_binding, py::arg("params"), py::arg("grads"),
        py::arg("state_sums"), py::arg("step"), py::arg("lr"), py::arg("lr_decay") = 0.0,
        py::arg("weight_decay") = 0.0, py::arg("eps") = 1e-10, py::arg("maximize") = false,
        "One Adagrad step over lists of arrays, in place; step is 1-based after the "
        "increment.");
  m.def("sum_of_squares", &sum_of_squares_binding, py::arg("arrays"),
        "Sum of the squares of every element of every array, in double, in a fixed order.");
  m.def(
      "scale_",
      [](const py::object& arrays, double factor) {
        in_place_binding("scale_", arrays, [&](const auto& spans) {
          using T = std::remove_cv_t<std::remove_pointer_t<decltype(spans[0].data)>>;
          scale_(spans, T(factor));
        });
      },
      py::arg("arrays"), py::arg("factor"), "Multiplies every array by factor, in place.");
  m.def(
      "clamp_",
      [](const py::object& arrays, double lo, double hi) {
        if (std::isnan(lo) || std::isnan(hi) || lo > hi) {
          fail("clamp_", "needs lo <= hi (neither NaN), got lo " + num(lo) + " and hi " + num(hi));
        }
        in_place_binding("clamp_", arrays, [&](const auto& spans) {
          using T = std::remove_cv_t<std::remove_pointer_t<decltype(spans[0].data)>>;
          clamp_(spans, T(lo), T(hi));
        });
      },
      py::arg("arrays"), py::arg("lo"), py::arg("hi"),
      "Clamps every element of every array to [lo, hi], in place; NaN stays NaN.");
}

const Registrar registrar("optim", &register_optim);

}  // namespace
}  // namespace fastnn::bind
