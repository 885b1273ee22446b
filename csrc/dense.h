// Fused dense (fully connected) layer kernels: forward with bias and activation applied while
// each output tile is in cache, backward with the activation gradient folded in.
//
// Legend: N rows (batch), IN input features, OUT output features. Row-major throughout:
//   X (N, IN), W (OUT, IN) as a Linear layer stores it, b (OUT), Y and Z (N, OUT).
// Z = X W^T + b is the pre-activation, Y = act(Z). `alpha` parameterises leaky_relu / elu.
#pragma once

#include <cstdint>

#include "activation_kind.h"

namespace fastnn {

// Y (N, OUT) = act(X W^T + b), overwritten; b may be null (no bias). If z is not null, Z (N, OUT)
// is overwritten with the pre-activation. y and z must not overlap x, w or b.
template <class T>
void dense_forward(T* y, T* z, const T* x, const T* w, const T* b, int64_t n, int64_t in,
                   int64_t out, Act act, T alpha);

// dZ = dY * act'(Z), with act' taken from Y alone when act_derivative_from_output() allows it
// (then y must not be null), else from Z (then z must not be null); std::invalid_argument
// otherwise. identity reads neither. Then, each skipped
// when its pointer is null:
//   dW (OUT, IN) (+)= dZ^T X   and   db (OUT) (+)= column sums of dZ:
//       accumulated (+=) when `accumulate`, else overwritten;
//   dX (N, IN) = dZ W, always overwritten.
// The column sums add rows in order, so db is identical for every thread count.
template <class T>
void dense_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                    const T* z, int64_t n, int64_t in, int64_t out, Act act, T alpha,
                    bool accumulate);

// Y (rows, cols) += b (cols) on every row, in place.
template <class T>
void bias_add(T* y, const T* b, int64_t rows, int64_t cols);

// db (cols) (+)= sum over rows of dY (rows, cols): accumulated when `accumulate`, else
// overwritten. Sums in row order in double, identical for every thread count.
template <class T>
void bias_grad(T* db, const T* dy, int64_t rows, int64_t cols, bool accumulate);

// Plain reference versions with the same contracts, for the tests.
template <class T>
void dense_forward_reference(T* y, T* z, const T* x, const T* w, const T* b, int64_t n,
                             int64_t in, int64_t out, Act act, T alpha);
template <class T>
void dense_backward_reference(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                              const T* y, const T* z, int64_t n, int64_t in, int64_t out,
                              Act act, T alpha, bool accumulate);
template <class T>
void bias_add_reference(T* y, const T* b, int64_t rows, int64_t cols);
template <class T>
void bias_grad_reference(T* db, const T* dy, int64_t rows, int64_t cols, bool accumulate);

}  // namespace fastnn
