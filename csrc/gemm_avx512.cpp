// AVX-512F GEMM micro-kernels: a 12 x (2 vectors) tile on zmm registers, 12x32 float and 12x16
// double. Contracts: see gemm_kernels.h. This file is compiled with -mavx512f; the driver calls
// it only when cpu_has_avx512f() says the CPU and OS can run it.
#include <immintrin.h>

#include <cstdint>

#include "gemm_kernels.h"

namespace fastnn::gemm_detail {
namespace {

struct F32x16 {
  using T = float;
  using V = __m512;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void stream(float* p, V v) { _mm512_stream_ps(p, v); }  // p 64-byte aligned
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};

struct F64x8 {
  using T = double;
  using V = __m512d;
  static constexpr int kLanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void stream(double* p, V v) { _mm512_stream_pd(p, v); }  // p 64-byte aligned
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
};

}  // namespace
}  // namespace fastnn::gemm_detail

#include "gemm_tile.h"

namespace fastnn::gemm_detail {
namespace {

constexpr int kMR = 12;

// The first ROWS rows of the 12 x 2L tile (L = lanes per vector): ROWS == 12 is the full tile,
// fewer the last, short row panel of a block (the rest of its rows are zero padding). 24
// accumulators, 2 B vectors and a broadcast use 27 of the 32 zmm registers; against a 6-row tile
// this halves the loads of B per FMA (measured on L1-resident panels of a 2-core Ice Lake: 12x32
// ran 1.15-1.3 times as fast as 6x32). Every accumulator starts from zero and takes its FMAs in
// k order whatever ROWS is, so no element depends on which variant computed it. With kStream, a
// full tile stored with beta == 0 whose rows start on cache lines bypasses the cache (see
// gemm_kernels.h).
template <class O, int ROWS, bool kStream>
void tile_rows(int64_t k, const typename O::T* ap, const typename O::T* bp, int64_t b_step,
               typename O::T* c, int64_t ldc, int64_t mr, int64_t nr, typename O::T alpha,
               typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int NR = 2 * L;
  constexpr bool kFull = ROWS == kMR;
  V acc[ROWS][2];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = O::zero();

  // A row of the tile is 128 bytes, two cache lines: aligned, both vector stores are too.
  const bool stream = kStream && kFull && beta == T(0) && mr == kMR && nr == NR &&
                      reinterpret_cast<std::uintptr_t>(c) % 64 == 0 &&
                      (ldc * int64_t(sizeof(T))) % 64 == 0;
  // C is read (beta != 0) or written only after the loop: start fetching its lines now.
  for (int64_t i = 0; !stream && i < mr; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + L), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
  for (int64_t p = 0; p < k; ++p) {
    // The A panel streams from L2; ask for it a few steps ahead of use.
    _mm_prefetch(reinterpret_cast<const char*>(ap + 8 * kMR), _MM_HINT_T0);
    const V b0 = O::load(bp), b1 = O::load(bp + L);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const V av = O::broadcast(ap + i);
      acc[i][0] = O::fma(av, b0, acc[i][0]);
      acc[i][1] = O::fma(av, b1, acc[i][1]);
    }
    ap += kMR;
    bp += b_step;
  }

  if (!kFull || mr != kMR || nr != NR) {
    alignas(64) T sums[ROWS][NR];
    store_sums<O, ROWS>(acc, sums);
    store_partial_tile<O, ROWS>(sums, c, ldc, mr, nr, alpha, beta);
    return;
  }
  if (alpha != T(1)) {  // alpha * sum is the sum itself when alpha is 1: skip 24 multiplies
    const V va = O::set1(alpha);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      acc[i][0] = O::mul(va, acc[i][0]);
      acc[i][1] = O::mul(va, acc[i][1]);
    }
  }
  const V vb = O::set1(beta);
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    T* row = c + i * ldc;
    if (stream) {
      O::stream(row, acc[i][0]);
      O::stream(row + L, acc[i][1]);
    } else if (beta == T(0)) {
      O::store(row, acc[i][0]);
      O::store(row + L, acc[i][1]);
    } else {
      O::store(row, O::fma(vb, O::load(row), acc[i][0]));
      O::store(row + L, O::fma(vb, O::load(row + L), acc[i][1]));
    }
  }
}

// Runs the variant computing just the mr real rows of the panel.
template <class O, bool kStream, int ROWS = kMR>
void tile_any(int64_t k, const typename O::T* ap, const typename O::T* bp, int64_t b_step,
              typename O::T* c, int64_t ldc, int64_t mr, int64_t nr, typename O::T alpha,
              typename O::T beta) {
  if constexpr (ROWS > 1) {
    if (mr < ROWS) {
      return tile_any<O, kStream, ROWS - 1>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
    }
  }
  tile_rows<O, ROWS, kStream>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

}  // namespace

void gemm_12x32_avx512(int64_t k, const float* ap, const float* bp, int64_t b_step, float* c,
                       int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta) {
  tile_any<F32x16, false>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_12x32_avx512_stream(int64_t k, const float* ap, const float* bp, int64_t b_step,
                              float* c, int64_t ldc, int64_t mr, int64_t nr, float alpha,
                              float beta) {
  tile_any<F32x16, true>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_12x16_avx512(int64_t k, const double* ap, const double* bp, int64_t b_step, double* c,
                       int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta) {
  tile_any<F64x8, false>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_12x16_avx512_stream(int64_t k, const double* ap, const double* bp, int64_t b_step,
                              double* c, int64_t ldc, int64_t mr, int64_t nr, double alpha,
                              double beta) {
  tile_any<F64x8, true>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_ct_12x32_avx512(int64_t k, const float* b, int64_t ldb, const float* ap, float* c,
                          int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta) {
  ct_tile_any<F32x16, kMR>(k, b, ldb, ap, c, ldc, mr, nr, alpha, beta);
}

void gemm_ct_12x16_avx512(int64_t k, const double* b, int64_t ldb, const double* ap, double* c,
                          int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta) {
  ct_tile_any<F64x8, kMR>(k, b, ldb, ap, c, ldc, mr, nr, alpha, beta);
}

}  // namespace fastnn::gemm_detail
