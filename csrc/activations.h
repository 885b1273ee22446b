// Elementwise activations and row-wise softmax, forward and backward.
//
// Legend: n = number of elements of an elementwise array (any shape, flattened);
// rows x cols = an array whose last axis (cols, the softmax axis) is contiguous and whose leading
// axes are flattened into rows. Gradients start with d (dy = dL/dy). Every kernel overwrites its
// outputs. Elementwise kernels allow an output to be exactly the same array as an input (in
// place), never a partial overlap.
#pragma once

#include <cstdint>

#include "activation_kind.h"

namespace fastnn {

// y (n) = act(x (n)), overwritten. y may be x.
template <class T>
void activation_forward(T* y, const T* x, int64_t n, Activation act);

// dx (n) = dy (n) * act'(x), overwritten. x is the forward input and y = act(x) its output;
// activations whose derivative follows from y alone (act_derivative_from_output) read only y.
// dx may be dy, x or y.
template <class T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, int64_t n, Activation act);

// y (rows, cols) = softmax of x (rows, cols) along cols, overwritten. y may be x.
template <class T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t cols);

// One row: y (cols) = softmax(x (cols)), overwritten; returns logsumexp(x) in double, which the
// fused cross-entropy needs. cols >= 1; y may be x.
template <class T>
double softmax_row(T* y, const T* x, int64_t cols);

// y (rows, cols) = log_softmax of x (rows, cols) along cols, overwritten. y may be x.
template <class T>
void log_softmax_forward(T* y, const T* x, int64_t rows, int64_t cols);

// dx (rows, cols) = y * (dy - sum(dy * y)) per row, overwritten; y is the softmax output.
// dx may be dy or y.
template <class T>
void softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols);

// dx (rows, cols) = dy - exp(y) * sum(dy) per row, overwritten; y is the log_softmax output.
// dx may be dy or y.
template <class T>
void log_softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols);

// Plain single-threaded versions of the kernels above, with the same contracts; the tests hold
// the fast kernels against them. The softmax references accumulate in double and compute each
// exp twice, as the textbook formula reads.
template <class T>
void activation_forward_reference(T* y, const T* x, int64_t n, Activation act);
template <class T>
void activation_backward_reference(T* dx, const T* dy, const T* x, const T* y, int64_t n,
                                   Activation act);
template <class T>
void softmax_forward_reference(T* y, const T* x, int64_t rows, int64_t cols);
template <class T>
void log_softmax_forward_reference(T* y, const T* x, int64_t rows, int64_t cols);
template <class T>
void softmax_backward_reference(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols);
template <class T>
void log_softmax_backward_reference(T* dx, const T* dy, const T* y, int64_t rows, int64_t cols);

namespace detail {

// AVX2 loops for the branchy activations, which GCC does not vectorise without
// -fno-trapping-math (it will not turn a float compare into a select). Each handles a prefix of
// [0, n) in whole vectors with the same arithmetic as act_forward / act_derivative, and returns
// how many elements it did; the caller finishes the tail. Call only if cpu_has_avx2_fma().
// leaky == false means relu. For the backward, src is y when alpha > 0 (or relu), else x.
int64_t relu_family_forward_avx2(float* y, const float* x, int64_t n, bool leaky, float alpha);
int64_t relu_family_backward_avx2(float* dx, const float* dy, const float* src, int64_t n,
                                  bool leaky, float alpha);


// Vectorised exp for the exponential-based kernels. Accurate to about 2 ulp, except that
// results below the smallest normal float (x < -87.3) are flushed to zero; NaN propagates.
// y = exp(x - shift) for the prefix it returns; every x - shift must be <= 0 (softmax rows).
int64_t exp_shifted_avx2(float* y, const float* x, float shift, int64_t n);
// Sum of exp(x - shift) over the prefix of length *done, in a fixed order; x - shift <= 0.
float sum_exp_shifted_avx2(const float* x, float shift, int64_t n, int64_t* done);
// Largest element of x (cols >= 1). With a NaN in the row the result may or may not be NaN;
// the softmax of such a row is all NaN either way.
float row_max_avx2(const float* x, int64_t cols);
// sigmoid and silu forward, silu backward (dx = dy * silu'(x)), same formulas as
// activation_math.h with the exp above.
int64_t sigmoid_forward_avx2(float* y, const float* x, int64_t n);
int64_t silu_forward_avx2(float* y, const float* x, int64_t n);
int64_t silu_backward_avx2(float* dx, const float* dy, const float* x, int64_t n);
// tanh forward, and gelu_tanh forward and backward, with a vectorised tanh (an odd polynomial
// below |x| = 0.625, (1 - e) / (1 + e) with e = exp(-2|x|) above).
int64_t tanh_forward_avx2(float* y, const float* x, int64_t n);
int64_t gelu_tanh_forward_avx2(float* y, const float* x, int64_t n);
int64_t gelu_tanh_backward_avx2(float* dx, const float* dy, const float* x, int64_t n);

}  // namespace detail
}  // namespace fastnn
