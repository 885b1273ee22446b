// Tile code shared by the micro-kernels of every vector ISA (gemm_avx2.cpp, gemm_avx512.cpp): the
// partial-tile store and the C^T tile kernel, written over a vector wrapper O: T (float or
// double), V, kLanes, zero(), load(p), store(p, v), broadcast(p), set1(x), fma(a, b, c), mul(a, b).
//
// It has internal linkage (an unnamed namespace), so each including unit gets its own copy: the
// linker can never hand an AVX2 caller a copy compiled for AVX-512.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastnn::gemm_detail {
namespace {

// The store of a tile with fewer than its MR rows or 2L columns to keep, from its accumulators
// stored unscaled in `sums`: alpha * sum (+ beta * C) in whole vectors through a buffer, then
// only rows x nr is copied to C (the full-tile store's arithmetic). C is read only inside
// rows x nr, and only when beta != 0. The kernels hand over stored sums rather than their
// accumulator registers: indexing those by a run-time row count would make the compiler keep
// every accumulator in memory, on the full tiles too.
template <class O, int ROWS>
inline void store_partial_tile(const typename O::T (&sums)[ROWS][2 * O::kLanes],
                               typename O::T* c, int64_t ldc, int64_t rows, int64_t nr,
                               typename O::T alpha, typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int NR = 2 * L;
  T buf[ROWS][NR];
  const V va = O::set1(alpha), vb = O::set1(beta);
  for (int64_t i = 0; i < rows; ++i) {
    V r0 = O::mul(va, O::load(sums[i])), r1 = O::mul(va, O::load(sums[i] + L));
    if (beta != T(0)) {
      for (int64_t j = 0; j < NR; ++j) buf[i][j] = j < nr ? c[i * ldc + j] : T(0);
      r0 = O::fma(vb, O::load(buf[i]), r0);
      r1 = O::fma(vb, O::load(buf[i] + L), r1);
    }
    O::store(buf[i], r0);
    O::store(buf[i] + L, r1);
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = buf[i][j];
  }
}

// Stores the accumulators of a ROWS x 2L tile into `sums`, for store_partial_tile. The loop
// is unrolled, so every accumulator is named by constant indices and can stay in a register.
template <class O, int ROWS>
inline void store_sums(const typename O::V (&acc)[ROWS][2],
                       typename O::T (&sums)[ROWS][2 * O::kLanes]) {
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    O::store(sums[i], acc[i][0]);
    O::store(sums[i] + O::kLanes, acc[i][1]);
  }
}

}  // namespace
}  // namespace fastnn::gemm_detail

namespace fastnn::gemm_detail {
namespace {

// C[j * ldc + i] = buf[i][j] (beta == 0) or fma(beta, C[j * ldc + i], buf[i][j]), i < ROWS,
// j < nr. Not inlined: inlined, the compiler keeps beta in vector registers across the kernel's k
// loop, where AVX2 has none to spare.
template <class T, int ROWS, int W>
[[gnu::noinline]] void store_transposed(const T (&buf)[ROWS][W], T* c, int64_t ldc, int64_t nr,
                                        T beta) {
  for (int64_t j = 0; j < nr; ++j) {
    T* out = c + j * ldc;
    if (beta == T(0)) {
      for (int i = 0; i < ROWS; ++i) out[i] = buf[i][j];
    } else {
      for (int i = 0; i < ROWS; ++i) out[i] = std::fma(beta, out[i], buf[i][j]);
    }
  }
}

// The first ROWS rows of an MR x 2L tile of C^T (the CtKernel contract in gemm_kernels.h; L =
// lanes per vector), in NV of its two vectors of columns: NV == 1 when the panel of op(A) has at
// most L real rows, so that the padding is not computed. Per k step: ROWS broadcasts from rows of
// B read in place, NV vector loads of the packed panel, NV * ROWS FMAs. The tile is then written
// transposed through a buffer, element by element: C is small where this kernel runs, and the
// tile takes k steps of FMAs to compute against NV * L * ROWS scalar stores. The store arithmetic
// is the micro-kernels': alpha * sum, then one fused multiply-add with beta * C when beta != 0.
template <class O, int ROWS, int NV>
inline void ct_rows(int64_t k, const typename O::T* b, int64_t ldb, const typename O::T* ap,
                    typename O::T* c, int64_t ldc, int64_t nr, typename O::T alpha,
                    typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int NR = 2 * L;
  const T* rows[ROWS];
  V acc[ROWS][NV];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    rows[i] = b + i * ldb;
    for (int v = 0; v < NV; ++v) acc[i][v] = O::zero();
  }
  for (int64_t p = 0; p < k; ++p) {
    const V a0 = O::load(ap), a1 = NV == 2 ? O::load(ap + L) : a0;
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const V bv = O::broadcast(rows[i] + p);
      acc[i][0] = O::fma(bv, a0, acc[i][0]);
      if constexpr (NV == 2) acc[i][NV - 1] = O::fma(bv, a1, acc[i][NV - 1]);
    }
    ap += NR;
  }
  alignas(64) T buf[ROWS][NV * L];
  const V va = O::set1(alpha);
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    for (int v = 0; v < NV; ++v) O::store(buf[i] + v * L, O::mul(va, acc[i][v]));
  }
  store_transposed<T, ROWS, NV * L>(buf, c, ldc, nr, beta);
}

// Runs the variant for the mr rows of B that exist (mr <= MR) and the vectors that nr needs.
template <class O, int MR>
inline void ct_tile_any(int64_t k, const typename O::T* b, int64_t ldb, const typename O::T* ap,
                        typename O::T* c, int64_t ldc, int64_t mr, int64_t nr,
                        typename O::T alpha, typename O::T beta) {
  if constexpr (MR > 1) {
    if (mr < MR) return ct_tile_any<O, MR - 1>(k, b, ldb, ap, c, ldc, mr, nr, alpha, beta);
  }
  if (nr <= O::kLanes) return ct_rows<O, MR, 1>(k, b, ldb, ap, c, ldc, nr, alpha, beta);
  ct_rows<O, MR, 2>(k, b, ldb, ap, c, ldc, nr, alpha, beta);
}

}  // namespace
}  // namespace fastnn::gemm_detail
