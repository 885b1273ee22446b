// The partial-tile store shared by the micro-kernels of every vector ISA (gemm_avx2.cpp,
// gemm_avx512.cpp), written over a vector wrapper O: T (float or double), V, kLanes, load(p),
// store(p, v), set1(x), fma(a, b, c), mul(a, b).
//
// It has internal linkage (an unnamed namespace), so each including unit gets its own copy: the
// linker can never hand an AVX2 caller a copy compiled for AVX-512.
#pragma once

#include <cstdint>

namespace fastnn::gemm_detail {
namespace {

// The store of a tile with fewer than its MR rows or 2L columns to keep: alpha * acc (+ beta * C)
// in whole vectors through a buffer, then only rows x nr is copied to C (the full-tile store's
// arithmetic). C is read only inside rows x nr, and only when beta != 0.
template <class O, int ROWS>
inline void store_partial_tile(const typename O::V (&acc)[ROWS][2], typename O::T* c,
                               int64_t ldc, int64_t rows, int64_t nr, typename O::T alpha,
                               typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int NR = 2 * L;
  T buf[ROWS][NR];
  const V va = O::set1(alpha), vb = O::set1(beta);
  for (int64_t i = 0; i < rows; ++i) {
    V r0 = O::mul(va, acc[i][0]), r1 = O::mul(va, acc[i][1]);
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

}  // namespace
}  // namespace fastnn::gemm_detail
