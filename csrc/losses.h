// Loss functions: forward returns the reduced loss, backward overwrites the gradient.
//
// Legend: n = rows (samples), c = classes (the last, contiguous axis); for elementwise losses,
// count = number of elements of any shape. Forwards return the loss as a double, reduced in a
// fixed order (bit-identical for any thread count). Backwards overwrite their output with
// grad_scale * d loss / d input; the output may be the very same array as an input it is
// computed from elementwise (dlogits may be probs or logits, dpred may be pred).
#pragma once

#include <cstdint>

namespace fastnn {

enum class Reduction { mean, sum };

struct CrossEntropyOptions {
  double label_smoothing = 0.0;  // in [0, 1]
  Reduction reduction = Reduction::mean;
  int64_t ignore_index = -100;  // rows with this label add nothing and get a zero gradient
};

// Cross-entropy of softmax(logits) against integer labels, as torch.nn.functional.cross_entropy.
// probs (n, c) = softmax(logits (n, c)), overwritten (every row, ignored or not); labels (n) are
// in [0, c) or equal ignore_index (the caller checks); weight (c) or nullptr. "mean" divides by
// the summed weight of the non-ignored rows' labels (their count when unweighted), so it is NaN
// when that is zero, as in PyTorch. probs must not overlap logits.
template <class T>
double cross_entropy_forward(T* probs, const T* logits, const int64_t* labels, const T* weight,
                             const CrossEntropyOptions& options, int64_t n, int64_t c);

// dlogits (n, c) = grad_scale * d loss / d logits, overwritten, from probs (n, c) as written by
// cross_entropy_forward and the same labels, weight and options. dlogits may be probs.
template <class T>
void cross_entropy_backward(T* dlogits, const T* probs, const int64_t* labels, const T* weight,
                            const CrossEntropyOptions& options, double grad_scale, int64_t n,
                            int64_t c);

// Mean or sum over count elements of (pred - target)^2.
template <class T>
double mse_forward(const T* pred, const T* target, Reduction reduction, int64_t count);

// dpred (count) = grad_scale * 2 * (pred - target) (/ count for "mean"), overwritten.
template <class T>
void mse_backward(T* dpred, const T* pred, const T* target, Reduction reduction,
                  double grad_scale, int64_t count);

// Binary cross-entropy on logits, mean or sum over count elements:
//   (1 - t) * x + (1 + (pw - 1) * t) * log(1 + exp(-x)), with log(1 + exp(-x)) evaluated as
//   max(-x, 0) + log1p(exp(-|x|)) so that no exp overflows. pos_weight (c) or nullptr applies
//   along the last axis (element i uses pos_weight[i % c]); c is ignored without it.
template <class T>
double bce_with_logits_forward(const T* logits, const T* target, const T* pos_weight,
                               Reduction reduction, int64_t count, int64_t c);

// dlogits (count) = grad_scale * ((1 + (pw - 1) * t) * sigmoid(x) - pw * t) (/ count for
// "mean"), overwritten; pw = 1 without pos_weight. dlogits may be logits.
template <class T>
void bce_with_logits_backward(T* dlogits, const T* logits, const T* target, const T* pos_weight,
                              Reduction reduction, double grad_scale, int64_t count, int64_t c);

// Plain single-threaded versions with the same contracts, computed in double throughout; the
// tests hold the fast kernels against them.
template <class T>
double cross_entropy_forward_reference(T* probs, const T* logits, const int64_t* labels,
                                       const T* weight, const CrossEntropyOptions& options,
                                       int64_t n, int64_t c);
template <class T>
void cross_entropy_backward_reference(T* dlogits, const T* probs, const int64_t* labels,
                                      const T* weight, const CrossEntropyOptions& options,
                                      double grad_scale, int64_t n, int64_t c);
template <class T>
double mse_forward_reference(const T* pred, const T* target, Reduction reduction, int64_t count);
template <class T>
void mse_backward_reference(T* dpred, const T* pred, const T* target, Reduction reduction,
                            double grad_scale, int64_t count);
template <class T>
double bce_with_logits_forward_reference(const T* logits, const T* target, const T* pos_weight,
                                         Reduction reduction, int64_t count, int64_t c);
template <class T>
void bce_with_logits_backward_reference(T* dlogits, const T* logits, const T* target,
                                        const T* pos_weight, Reduction reduction,
                                        double grad_scale, int64_t count, int64_t c);

}  // namespace fastnn
