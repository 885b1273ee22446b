// Batch normalization, layer normalization and channel dropout, C-contiguous.
//
// Legend for batch norm and dropout2d: x is (N, C, S) where S is the product of the trailing
// (spatial) sizes (S = 1 for BatchNorm1d on (N, C), L for (N, C, L), H*W for 2-D); each channel
// is normalized over its M = N*S elements. Per-channel arrays (mean, invstd, running stats,
// gamma, beta) are (C,).
// Legend for layer norm: x is (R, D): R rows, each normalized over its D trailing elements;
// gamma and beta are (D,), mean and rstd are (R,).
// Statistics are computed in double with two passes (mean, then centred squares), so large
// offsets do not cancel. Reductions sum fixed blocks in a fixed order: bit-identical for any
// thread count.
#pragma once

#include <cstdint>

namespace fastnn {

// Training forward. Writes y (N, C, S), save_mean (C,) = batch mean and save_invstd (C,) =
// 1 / sqrt(biased batch variance + eps), all overwritten. running_mean and running_var, when not
// null, are updated in place: r = (1 - momentum) * r + momentum * batch statistic, with the
// unbiased variance (M / (M - 1); M must be >= 2 then). gamma and beta may each be null
// (treated as 1 and 0).
template <class T>
void batch_norm_forward_train(T* y, T* save_mean, T* save_invstd, T* running_mean,
                              T* running_var, const T* x, const T* gamma, const T* beta,
                              int64_t n, int64_t c, int64_t s, double eps, double momentum);

// Evaluation forward: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta,
// overwriting y. gamma and beta may be null.
template <class T>
void batch_norm_forward_eval(T* y, const T* x, const T* running_mean, const T* running_var,
                             const T* gamma, const T* beta, int64_t n, int64_t c, int64_t s,
                             double eps);

// Backward. mean and invstd are the statistics the forward normalized with: the saved batch
// statistics when training (the gradient then flows through them too), or the running mean and
// 1 / sqrt(running_var + eps) in evaluation mode (training = false: a per-channel affine map).
// dx (N, C, S) is overwritten; dgamma and dbeta (C,) are accumulated (+=) when accumulate, else
// overwritten. Any of dx, dgamma, dbeta may be null; gamma may be null (treated as 1).
template <class T>
void batch_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                         const T* invstd, const T* gamma, int64_t n, int64_t c, int64_t s,
                         bool training, bool accumulate);

// y = (x - mean_r) * rstd_r * gamma + beta for each row r, overwriting y, mean (R,) and rstd (R,)
// (rstd = 1 / sqrt(biased row variance + eps)). gamma and beta may each be null.
template <class T>
void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                        int64_t rows, int64_t d, double eps);

// Backward of layer_norm_forward given its saved mean and rstd. dx (R, D) is overwritten;
// dgamma and dbeta (D,) are accumulated (+=) when accumulate, else overwritten. Any of dx,
// dgamma, dbeta may be null; gamma may be null.
template <class T>
void layer_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, int64_t rows, int64_t d, bool accumulate);

// y[n, c, :] = x[n, c, :] * mask[n, c] * scale, overwriting y (y may be x). Its backward is the
// same map applied to dy.
template <class T>
void dropout2d_apply(T* y, const T* x, const T* mask, int64_t n, int64_t c, int64_t s, T scale);

}  // namespace fastnn
