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
// Any of m, n, k may be 0; k == 0 or alpha == 0 scales C by beta without reading A or B.
// Bit-identical for any thread count.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// The plain triple loop with the same contract, kept as the reference the fast path is tested
// against. Accumulates in T, in k order.
template <class T>
void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                    const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// ---------------------------------------------------------------------------------------------
// Below: the fused entry point used by the dense kernels, and a switch for tests.

// Work applied to each finished block of C while it is still in cache (the dense kernels add the
// bias and apply the activation here). apply(ctx, c_block, ldc, row0, col0, rows, cols) is called
// exactly once for every element of C, on disjoint blocks that together cover C, after the block
// holds its final value alpha * op(A) op(B) + beta * C; c_block points at C[row0][col0]. Blocks
// may be processed concurrently on different threads, so apply must only touch its own block
// (and per-row/column data indexed by row0/col0). How C is cut into blocks is unspecified.
template <class T>
struct GemmEpilogue {
  void (*apply)(const void* ctx, T* c_block, int64_t ldc, int64_t row0, int64_t col0,
                int64_t rows, int64_t cols) = nullptr;
  const void* ctx = nullptr;
};

// gemm() followed by epilogue on every block of C (see GemmEpilogue), in one pass over C.
template <class T>
void gemm_fused(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc,
                const GemmEpilogue<T>& epilogue);

// From this size of C in bytes, the packed path writes C with non-temporal stores where it can
// (see gemm.cpp). The default is derived from the last-level cache; tests set it to exercise both
// kinds of store on any machine. Returns the previous value. Not meant to change during a call.
int64_t set_gemm_stream_min_bytes(int64_t bytes);

// The kernel sets gemm() chooses from, fastest first: it takes the first one the CPU can run.
enum class GemmKernels { avx512, avx2, portable };
bool gemm_kernels_available(GemmKernels which);

// gemm() on the given kernel set whatever the CPU prefers, so that tests can compare every set
// the machine can run in one process (FASTNN_DISABLE_AVX512=1 and FASTNN_DISABLE_AVX2=1 step a
// whole process down). Throws std::invalid_argument when the set is not available.
template <class T>
void gemm_with(GemmKernels which, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
               T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
               int64_t ldc);

}  // namespace fastnn
