// General matrix multiply, row-major.
//
// Legend: m, n, k are the sizes of op(A) (m x k), op(B) (k x n) and C (m x n); lda, ldb, ldc are
// the row strides (elements between the starts of consecutive rows) of the arrays as stored.
#pragma once

#include <cstdint>

namespace fastnn {

// C = alpha * op(A) * op(B) + beta * C, overwriting C.
//   A is stored m x k (lda >= k), or k x m (lda >= m) when trans_a.
//   B is stored k x n (ldb >= n), or n x k (ldb >= k) when trans_b.
// When beta == 0, C is not read, so NaN or garbage in C does not leak into the result.
// Any of m, n, k may be 0 (k == 0 scales C by beta). Bit-identical for any thread count.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// The plain triple loop with the same contract, kept as the reference the fast path is tested
// against. Accumulates in T, in k order.
template <class T>
void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                    const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace fastnn
