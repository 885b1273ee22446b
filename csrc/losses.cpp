#include "losses.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "activation_math.h"
#include "activations.h"
#include "threading.h"

namespace fastnn {
namespace {

// Elements per parallel chunk, as in activations.cpp.
constexpr int64_t kElemGrain = 1 << 14;

template <class Row>
void for_rows(int64_t n, int64_t c, int64_t cost_per_elem, Row&& row) {
  const int64_t grain = std::max<int64_t>(1, kElemGrain / std::max<int64_t>(c, 1));
  parallel_for(n, grain, std::max<int64_t>(c, 1) * cost_per_elem,
               [&](int64_t begin, int64_t end) {
                 for (int64_t r = begin; r < end; ++r) row(r);
               });
}

// The divisor of a "mean" cross-entropy: the summed weight of the non-ignored rows' labels, or
// their count without weights. Summed in row order, so it is reproducible.
template <class T>
double ce_total_weight(const int64_t* labels, const T* weight, int64_t ignore_index, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] == ignore_index) continue;
    total += weight ? double(weight[labels[i]]) : 1.0;
  }
  return total;
}

template <class T>
double sum_weights(const T* weight, int64_t c) {
  double s = 0;
  for (int64_t j = 0; j < c; ++j) s += weight ? double(weight[j]) : 1.0;
  return s;
}

double reduce(double sum, Reduction reduction, double divisor) {
  return reduction == Reduction::mean ? sum / divisor : sum;
}

// -log(sigmoid(x)) = log(1 + exp(-x)), without overflow for either sign of x.
template <class T>
T softplus_neg(T x) {
  return std::max(-x, T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Cross-entropy. For a non-ignored row with label y, smoothing eps and weights w (all ones when
// none are given), with logp = log_softmax(logits):
//   loss_row = (1 - eps) * w[y] * -logp[y] + eps / c * sum_j w[j] * -logp[j]
//   d loss_row / d logits[j] = ((1 - eps) * w[y] + eps / c * sum(w)) * p[j]
//                              - eps / c * w[j] - (1 - eps) * w[y] * [j == y]

template <class T>
double cross_entropy_forward(T* probs, const T* logits, const int64_t* labels, const T* weight,
                             const CrossEntropyOptions& options, int64_t n, int64_t c) {
  const double eps = options.label_smoothing;
  const double smooth = eps / double(c);
  // Per-row losses land in their own slots, then are summed in row order: rows may be spread
  // over threads while the sum stays bit-identical. With c == 0 every label is ignore_index.
  std::vector<double> row_loss(static_cast<size_t>(n), 0.0);
  if (c > 0) {
    for_rows(n, c, 24, [&](int64_t r) {
      const T* x = logits + r * c;
      const double lse = softmax_row(probs + r * c, x, c);
      const int64_t label = labels[r];
      if (label == options.ignore_index) return;
      const double w_label = weight ? double(weight[label]) : 1.0;
      double loss = (1 - eps) * w_label * (lse - double(x[label]));
      if (eps != 0) {
        double s = 0;
        for (int64_t j = 0; j < c; ++j) {
          s += (weight ? double(weight[j]) : 1.0) * (lse - double(x[j]));
        }
        loss += smooth * s;
      }
      row_loss[r] = loss;
    });
  }
  const double total = deterministic_sum(n, 1, [&](int64_t begin, int64_t end) {
    double s = 0;
    for (int64_t i = begin; i < end; ++i) s += row_loss[i];
    return s;
  });
  if (options.reduction == Reduction::sum) return total;
  return total / ce_total_weight(labels, weight, options.ignore_index, n);
}

template <class T>
void cross_entropy_backward(T* dlogits, const T* probs, const int64_t* labels, const T* weight,
                            const CrossEntropyOptions& options, double grad_scale, int64_t n,
                            int64_t c) {
  if (c == 0) return;
  const double eps = options.label_smoothing;
  const double smooth = eps / double(c);
  const double weight_sum = sum_weights(weight, c);
  const double scale =
      options.reduction == Reduction::mean
          ? grad_scale / ce_total_weight(labels, weight, options.ignore_index, n)
          : grad_scale;
  for_rows(n, c, 3, [&](int64_t r) {
    const T* p = probs + r * c;
    T* d = dlogits + r * c;
    const int64_t label = labels[r];
    if (label == options.ignore_index) {
      std::fill(d, d + c, T(0));
      return;
    }
    const double w_label = weight ? double(weight[label]) : 1.0;
    const T a = T(scale * ((1 - eps) * w_label + smooth * weight_sum));
    const T b = T(scale * smooth);
    if (weight) {
      for (int64_t j = 0; j < c; ++j) d[j] = a * p[j] - b * weight[j];
    } else {
      for (int64_t j = 0; j < c; ++j) d[j] = a * p[j] - b;
    }
    d[label] -= T(scale * (1 - eps) * w_label);
  });
}

// ---------------------------------------------------------------------------------------------
// Mean squared error.

template <class T>
double mse_forward(const T* pred, const T* target, Reduction reduction, int64_t count) {
  const double total = deterministic_sum(count, 3, [=](int64_t begin, int64_t end) {
    // Eight interleaved partial sums keep the loop free of a serial dependency.
    double acc[8] = {};
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      for (int l = 0; l < 8; ++l) {
        const double d = double(pred[i + l]) - double(target[i + l]);
        acc[l] += d * d;
      }
    }
    double s = 0;
    for (double a : acc) s += a;
    for (; i < end; ++i) {
      const double d = double(pred[i]) - double(target[i]);
      s += d * d;
    }
    return s;
  });
  return reduce(total, reduction, double(count));
}

template <class T>
void mse_backward(T* dpred, const T* pred, const T* target, Reduction reduction,
                  double grad_scale, int64_t count) {
  const T k = T(reduce(2 * grad_scale, reduction, double(count)));
  parallel_for(count, kElemGrain, 3, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dpred[i] = k * (pred[i] - target[i]);
  });
}

// ---------------------------------------------------------------------------------------------
// Binary cross-entropy with logits.

template <class T>
double bce_with_logits_forward(const T* logits, const T* target, const T* pos_weight,
                               Reduction reduction, int64_t count, int64_t c) {
  const double total = deterministic_sum(count, 24, [=](int64_t begin, int64_t end) {
    double s = 0;
    if (pos_weight) {
      int64_t j = begin % c;
      for (int64_t i = begin; i < end; ++i) {
        const T x = logits[i], t = target[i];
        const T log_weight = T(1) + (pos_weight[j] - T(1)) * t;
        s += double((T(1) - t) * x + log_weight * softplus_neg(x));
        if (++j == c) j = 0;
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        const T x = logits[i], t = target[i];
        s += double((T(1) - t) * x + softplus_neg(x));
      }
    }
    return s;
  });
  return reduce(total, reduction, double(count));
}

template <class T>
void bce_with_logits_backward(T* dlogits, const T* logits, const T* target, const T* pos_weight,
                              Reduction reduction, double grad_scale, int64_t count, int64_t c) {
  const T k = T(reduce(grad_scale, reduction, double(count)));
  if (!pos_weight) {
    parallel_for(count, kElemGrain, 24, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        dlogits[i] = k * (stable_sigmoid(logits[i]) - target[i]);
      }
    });
    return;
  }
  parallel_for(count, kElemGrain, 24, [=](int64_t begin, int64_t end) {
    int64_t j = begin % c;
    for (int64_t i = begin; i < end; ++i) {
      const T t = target[i], pw_t = pos_weight[j] * t;
      dlogits[i] = k * ((pw_t + T(1) - t) * stable_sigmoid(logits[i]) - pw_t);
      if (++j == c) j = 0;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// References.

template <class T>
double cross_entropy_forward_reference(T* probs, const T* logits, const int64_t* labels,
                                       const T* weight, const CrossEntropyOptions& options,
                                       int64_t n, int64_t c) {
  const double eps = options.label_smoothing;
  double total = 0, divisor = 0;
  std::vector<double> logp(static_cast<size_t>(c));
  for (int64_t r = 0; r < n; ++r) {
    const T* x = logits + r * c;
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < c; ++j) m = std::max(m, double(x[j]));
    for (int64_t j = 0; j < c; ++j) s += std::exp(double(x[j]) - m);
    for (int64_t j = 0; j < c; ++j) {
      logp[j] = double(x[j]) - m - std::log(s);
      probs[r * c + j] = T(std::exp(logp[j]));
    }
    const int64_t y = labels[r];
    if (y == options.ignore_index) continue;
    auto w = [&](int64_t j) { return weight ? double(weight[j]) : 1.0; };
    double smooth = 0;
    for (int64_t j = 0; j < c; ++j) smooth -= w(j) * logp[j];
    total += -(1 - eps) * w(y) * logp[y] + eps / double(c) * smooth;
    divisor += w(y);
  }
  return options.reduction == Reduction::mean ? total / divisor : total;
}

template <class T>
void cross_entropy_backward_reference(T* dlogits, const T* probs, const int64_t* labels,
                                      const T* weight, const CrossEntropyOptions& options,
                                      double grad_scale, int64_t n, int64_t c) {
  const double eps = options.label_smoothing;
  auto w = [&](int64_t j) { return weight ? double(weight[j]) : 1.0; };
  double divisor = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (labels[r] != options.ignore_index) divisor += w(labels[r]);
  }
  const double scale = options.reduction == Reduction::mean ? grad_scale / divisor : grad_scale;
  double weight_sum = 0;
  for (int64_t k = 0; k < c; ++k) weight_sum += w(k);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t y = labels[r];
    for (int64_t j = 0; j < c; ++j) {
      if (y == options.ignore_index) {
        dlogits[r * c + j] = T(0);
        continue;
      }
      // The target distribution is (1 - eps) at y plus eps / c everywhere, each class k
      // weighted by w[k]; d(-w[k] log p[k]) / d logits[j] = w[k] * (p[j] - [j == k]).
      const double p = double(probs[r * c + j]);
      const double g = (1 - eps) * w(y) * (p - (j == y ? 1.0 : 0.0)) +
                       eps / double(c) * (weight_sum * p - w(j));
      dlogits[r * c + j] = T(scale * g);
    }
  }
}

template <class T>
double mse_forward_reference(const T* pred, const T* target, Reduction reduction, int64_t count) {
  double s = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = double(pred[i]) - double(target[i]);
    s += d * d;
  }
  return reduce(s, reduction, double(count));
}

template <class T>
void mse_backward_reference(T* dpred, const T* pred, const T* target, Reduction reduction,
                            double grad_scale, int64_t count) {
  const double k = reduce(2 * grad_scale, reduction, double(count));
  for (int64_t i = 0; i < count; ++i) dpred[i] = T(k * (double(pred[i]) - double(target[i])));
}

template <class T>
double bce_with_logits_forward_reference(const T* logits, const T* target, const T* pos_weight,
                                         Reduction reduction, int64_t count, int64_t c) {
  double s = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double x = logits[i], t = target[i];
    const double pw = pos_weight ? double(pos_weight[i % c]) : 1.0;
    // -t * pw * log(sigmoid(x)) - (1 - t) * log(1 - sigmoid(x)), with log(1 - sigmoid(x)) =
    // log(sigmoid(x)) - x.
    const double log_sig = -softplus_neg(x);
    s += -t * pw * log_sig - (1 - t) * (log_sig - x);
  }
  return reduce(s, reduction, double(count));
}

template <class T>
void bce_with_logits_backward_reference(T* dlogits, const T* logits, const T* target,
                                        const T* pos_weight, Reduction reduction,
                                        double grad_scale, int64_t count, int64_t c) {
  const double k = reduce(grad_scale, reduction, double(count));
  for (int64_t i = 0; i < count; ++i) {
    const double x = logits[i], t = target[i];
    const double pw = pos_weight ? double(pos_weight[i % c]) : 1.0;
    const double sig = stable_sigmoid(x);
    dlogits[i] = T(k * (-t * pw * (1 - sig) + (1 - t) * sig));
  }
}

#define FASTNN_INSTANTIATE(T)                                                                   \
  template double cross_entropy_forward<T>(T*, const T*, const int64_t*, const T*,              \
                                           const CrossEntropyOptions&, int64_t, int64_t);       \
  template void cross_entropy_backward<T>(T*, const T*, const int64_t*, const T*,               \
                                          const CrossEntropyOptions&, double, int64_t,          \
                                          int64_t);                                             \
  template double mse_forward<T>(const T*, const T*, Reduction, int64_t);                       \
  template void mse_backward<T>(T*, const T*, const T*, Reduction, double, int64_t);            \
  template double bce_with_logits_forward<T>(const T*, const T*, const T*, Reduction, int64_t,  \
                                             int64_t);                                          \
  template void bce_with_logits_backward<T>(T*, const T*, const T*, const T*, Reduction,        \
                                            double, int64_t, int64_t);                          \
  template double cross_entropy_forward_reference<T>(                                           \
      T*, const T*, const int64_t*, const T*, const CrossEntropyOptions&, int64_t, int64_t);    \
  template void cross_entropy_backward_reference<T>(T*, const T*, const int64_t*, const T*,     \
                                                    const CrossEntropyOptions&, double,         \
                                                    int64_t, int64_t);                          \
  template double mse_forward_reference<T>(const T*, const T*, Reduction, int64_t);             \
  template void mse_backward_reference<T>(T*, const T*, const T*, Reduction, double, int64_t);  \
  template double bce_with_logits_forward_reference<T>(const T*, const T*, const T*, Reduction, \
                                                       int64_t, int64_t);                       \
  template void bce_with_logits_backward_reference<T>(T*, const T*, const T*, const T*,         \
                                                      Reduction, double, int64_t, int64_t);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
