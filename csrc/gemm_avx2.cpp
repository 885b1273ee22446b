// AVX2+FMA GEMM kernels: the 6x16 float and 6x8 double micro-kernels, the row and 4x3 dot
// kernels, and the packing of micro-panels (which the AVX-512 kernel set uses too).
// Contracts: see gemm_kernels.h. This file is compiled with -mavx2 -mfma; the driver calls it
// only when cpu_has_avx2_fma() says the CPU can run it.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "gemm_kernels.h"

namespace fastnn::gemm_detail {
namespace {

// Thin wrappers over the float and double intrinsics, so each kernel is written once.
struct F32 {
  using T = float;
  using V = __m256;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void stream(float* p, V v) { _mm256_stream_ps(p, v); }  // p 32-byte aligned
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  // The first `count` lanes from p (count < 8); the other lanes are zero and are not read.
  static V load_first(const float* p, int count) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane));
  }
  static float lane_sum(V v) {  // ((0+4)+(2+6)) + ((1+5)+(3+7)), always in this order
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

struct F64 {
  using T = double;
  using V = __m256d;
  static constexpr int kLanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void stream(double* p, V v) { _mm256_stream_pd(p, v); }  // p 32-byte aligned
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V load_first(const double* p, int count) {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), lane));
  }
  static double lane_sum(V v) {  // (0+2) + (1+3)
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
};

}  // namespace
}  // namespace fastnn::gemm_detail

#include "gemm_tile.h"

namespace fastnn::gemm_detail {
namespace {

// One k step of the 6 x (2 vectors) tile: two loads of B, six broadcasts of A, twelve FMAs.
#define FASTNN_TILE_STEP(A, B)                                          \
  do {                                                                  \
    const V b0 = O::load(B), b1 = O::load((B) + L);                     \
    V av = O::broadcast((A) + 0);                                       \
    c00 = O::fma(av, b0, c00); c01 = O::fma(av, b1, c01);               \
    av = O::broadcast((A) + 1);                                         \
    c10 = O::fma(av, b0, c10); c11 = O::fma(av, b1, c11);               \
    av = O::broadcast((A) + 2);                                         \
    c20 = O::fma(av, b0, c20); c21 = O::fma(av, b1, c21);               \
    av = O::broadcast((A) + 3);                                         \
    c30 = O::fma(av, b0, c30); c31 = O::fma(av, b1, c31);               \
    av = O::broadcast((A) + 4);                                         \
    c40 = O::fma(av, b0, c40); c41 = O::fma(av, b1, c41);               \
    av = O::broadcast((A) + 5);                                         \
    c50 = O::fma(av, b0, c50); c51 = O::fma(av, b1, c51);               \
  } while (0)

// The 6 x 2L micro-kernel (L = lanes per vector): 12 accumulators, 2 B vectors and 1 broadcast
// in flight use 15 of the 16 ymm registers. With kStream, a full tile stored with beta == 0 whose
// rows start on cache lines bypasses the cache (see gemm_kernels.h).
template <class O, bool kStream>
inline void tile_6x2v(int64_t k, const typename O::T* ap, const typename O::T* bp, int64_t b_step,
                      typename O::T* c, int64_t ldc, int64_t mr, int64_t nr, typename O::T alpha,
                      typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int NR = 2 * L;
  V c00 = O::zero(), c01 = O::zero(), c10 = O::zero(), c11 = O::zero();
  V c20 = O::zero(), c21 = O::zero(), c30 = O::zero(), c31 = O::zero();
  V c40 = O::zero(), c41 = O::zero(), c50 = O::zero(), c51 = O::zero();

  // A row of the tile is NR * sizeof(T) = 64 bytes: one whole cache line when aligned.
  const bool stream = kStream && beta == T(0) && mr == 6 && nr == NR &&
                      reinterpret_cast<std::uintptr_t>(c) % 64 == 0 &&
                      (ldc * int64_t(sizeof(T))) % 64 == 0;
  // C is read (beta != 0) or written only after the loop: start fetching its lines now (a
  // streamed tile does not need them).
  for (int64_t i = 0; !stream && i < mr; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
  // Two k steps per iteration. The empty asm statements stop the compiler from hoisting the
  // loads of later steps above earlier ones: with 12 accumulators live, that needs more than 16
  // registers and spills to the stack.
  int64_t p = 0;
  for (; p + 2 <= k; p += 2) {
    // The A panel streams from L2; ask for it a few steps ahead of use.
    _mm_prefetch(reinterpret_cast<const char*>(ap + 16 * 6), _MM_HINT_T0);
    FASTNN_TILE_STEP(ap, bp);
    asm volatile("" ::: "memory");
    FASTNN_TILE_STEP(ap + 6, bp + b_step);
    asm volatile("" ::: "memory");
    ap += 12;
    bp += 2 * b_step;
  }
  for (; p < k; ++p) {
    FASTNN_TILE_STEP(ap, bp);
    ap += 6;
    bp += b_step;
  }

  const V va = O::set1(alpha);
  const V acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == 6 && nr == NR) {
    if (stream) {
      for (int i = 0; i < 6; ++i) {
        O::stream(c + i * ldc, O::mul(va, acc[i][0]));
        O::stream(c + i * ldc + L, O::mul(va, acc[i][1]));
      }
    } else if (beta == T(0)) {
      for (int i = 0; i < 6; ++i) {
        O::store(c + i * ldc, O::mul(va, acc[i][0]));
        O::store(c + i * ldc + L, O::mul(va, acc[i][1]));
      }
    } else {
      const V vb = O::set1(beta);
      for (int i = 0; i < 6; ++i) {
        T* row = c + i * ldc;
        O::store(row, O::fma(vb, O::load(row), O::mul(va, acc[i][0])));
        O::store(row + L, O::fma(vb, O::load(row + L), O::mul(va, acc[i][1])));
      }
    }
    return;
  }
  alignas(64) T sums[6][NR];
  store_sums<O, 6>(acc, sums);
  store_partial_tile<O, 6>(sums, c, ldc, mr, nr, alpha, beta);
}

#undef FASTNN_TILE_STEP

// The last, short row panel of a block (mr < 6 real rows, the rest zero padding): only ROWS rows
// are computed instead of 6. Each accumulator sees the same FMAs in the same order as in
// tile_6x2v, so results do not depend on which of the two kernels computed an element.
template <class O, int ROWS>
void tile_rows_2v(int64_t k, const typename O::T* ap, const typename O::T* bp, int64_t b_step,
                  typename O::T* c, int64_t ldc, int64_t nr, typename O::T alpha,
                  typename O::T beta) {
  using V = typename O::V;
  constexpr int L = O::kLanes;
  V acc[ROWS][2];
  for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = O::zero();
  for (int64_t p = 0; p < k; ++p) {
    const V b0 = O::load(bp), b1 = O::load(bp + L);
    for (int i = 0; i < ROWS; ++i) {
      const V av = O::broadcast(ap + i);
      acc[i][0] = O::fma(av, b0, acc[i][0]);
      acc[i][1] = O::fma(av, b1, acc[i][1]);
    }
    ap += 6;
    bp += b_step;
  }
  alignas(64) typename O::T sums[ROWS][2 * L];
  store_sums<O, ROWS>(acc, sums);
  store_partial_tile<O, ROWS>(sums, c, ldc, ROWS, nr, alpha, beta);
}

template <class O, bool kStream>
void tile_6x2v_any(int64_t k, const typename O::T* ap, const typename O::T* bp, int64_t b_step,
                   typename O::T* c, int64_t ldc, int64_t mr, int64_t nr, typename O::T alpha,
                   typename O::T beta) {
  switch (mr) {
    case 1: return tile_rows_2v<O, 1>(k, ap, bp, b_step, c, ldc, nr, alpha, beta);
    case 2: return tile_rows_2v<O, 2>(k, ap, bp, b_step, c, ldc, nr, alpha, beta);
    case 3: return tile_rows_2v<O, 3>(k, ap, bp, b_step, c, ldc, nr, alpha, beta);
    case 4: return tile_rows_2v<O, 4>(k, ap, bp, b_step, c, ldc, nr, alpha, beta);
    case 5: return tile_rows_2v<O, 5>(k, ap, bp, b_step, c, ldc, nr, alpha, beta);
    default: return tile_6x2v<O, kStream>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
  }
}

// The row kernels' store: alpha * sum (+ beta * C) into U vectors of C at c, or, when `tail` > 0
// (then U == 1), into its first `tail` elements only, through a buffer. The micro-kernels' store
// arithmetic; C is not read when beta == 0. With kStream, whole vectors stored with beta == 0 at
// a 32-byte aligned c bypass the cache (see gemm_kernels.h).
template <class O, int U, bool kStream>
inline void store_sums(typename O::T* c, const typename O::V (&sum)[U], typename O::T alpha,
                       typename O::T beta, int tail = 0) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  const V va = O::set1(alpha), vb = O::set1(beta);
  if (kStream && tail == 0 && beta == T(0) && reinterpret_cast<std::uintptr_t>(c) % 32 == 0) {
    for (int u = 0; u < U; ++u) O::stream(c + u * L, O::mul(va, sum[u]));
    return;
  }
  if (tail == 0) {
    for (int u = 0; u < U; ++u) {
      V r = O::mul(va, sum[u]);
      if (beta != T(0)) r = O::fma(vb, O::load(c + u * L), r);
      O::store(c + u * L, r);
    }
    return;
  }
  T buf[L];
  for (int j = 0; j < L; ++j) buf[j] = j < tail && beta != T(0) ? c[j] : T(0);
  V r = O::mul(va, sum[0]);
  if (beta != T(0)) r = O::fma(vb, O::load(buf), r);
  O::store(buf, r);
  for (int j = 0; j < tail; ++j) c[j] = buf[j];
}

// One row of C: C[j] = alpha * sum_p a[p * a_step] * B[p * ldb + j] (+ beta * C[j]), j < n.
// B is streamed row by row as it lies (axpy form), four rows per pass over a chunk of columns,
// while the sums wait in a small buffer in L1. Each sum still starts from zero and takes its FMAs
// in k order, then the micro-kernels' store arithmetic.
template <class O, bool kStream>
void row_times_matrix(int64_t k, int64_t n, const typename O::T* a, int64_t a_step,
                      const typename O::T* b, int64_t ldb, typename O::T* c, typename O::T alpha,
                      typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int64_t kChunk = 4096 / sizeof(T);  // 4 KB of sums
  alignas(32) T acc[kChunk];
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t width = std::min(kChunk, n - j0);
    const int64_t full = width / L * L;
    const int tail = int(width - full);
    for (int64_t j = 0; j < full + (tail ? L : 0); ++j) acc[j] = T(0);
    const T* bj = b + j0;
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      const V a0 = O::broadcast(a + p * a_step), a1 = O::broadcast(a + (p + 1) * a_step);
      const V a2 = O::broadcast(a + (p + 2) * a_step), a3 = O::broadcast(a + (p + 3) * a_step);
      const T* r0 = bj + p * ldb;
      const T* r1 = r0 + ldb;
      const T* r2 = r1 + ldb;
      const T* r3 = r2 + ldb;
      for (int64_t j = 0; j < full; j += L) {
        V v = O::load(acc + j);
        v = O::fma(a0, O::load(r0 + j), v);
        v = O::fma(a1, O::load(r1 + j), v);
        v = O::fma(a2, O::load(r2 + j), v);
        v = O::fma(a3, O::load(r3 + j), v);
        O::store(acc + j, v);
      }
      if (tail) {
        V v = O::load(acc + full);
        v = O::fma(a0, O::load_first(r0 + full, tail), v);
        v = O::fma(a1, O::load_first(r1 + full, tail), v);
        v = O::fma(a2, O::load_first(r2 + full, tail), v);
        v = O::fma(a3, O::load_first(r3 + full, tail), v);
        O::store(acc + full, v);
      }
    }
    for (; p < k; ++p) {
      const V a0 = O::broadcast(a + p * a_step);
      const T* r0 = bj + p * ldb;
      for (int64_t j = 0; j < full; j += L) {
        O::store(acc + j, O::fma(a0, O::load(r0 + j), O::load(acc + j)));
      }
      if (tail) {
        O::store(acc + full, O::fma(a0, O::load_first(r0 + full, tail), O::load(acc + full)));
      }
    }
    for (int64_t j = 0; j < full + (tail ? L : 0); j += L) {
      const V sum[1] = {O::load(acc + j)};
      store_sums<O, 1, kStream>(c + j0 + j, sum, alpha, beta, j < full ? 0 : tail);
    }
  }
}

// The row kernel for a small k == K: the K broadcasts of a stay in registers, and each block of U
// vectors of C is finished in one visit, its sums never leaving registers (row_times_matrix's
// buffer costs a load and a store per vector and k step, which at small k is most of the work).
// Per element the arithmetic is row_times_matrix's: a sum from zero, FMAs in k order, the same
// store.
template <class O, int K, bool kStream>
void row_times_matrix_small_k(int64_t n, const typename O::T* a, int64_t a_step,
                              const typename O::T* b, int64_t ldb, typename O::T* c,
                              typename O::T alpha, typename O::T beta) {
  static_assert(K <= kAvx2RowRegisterMaxK, "K broadcasts must fit in registers beside the sums");
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int U = 4;  // K broadcasts, U sums, alpha, beta and one B vector: <= 15 registers
  V av[K];
  for (int p = 0; p < K; ++p) av[p] = O::broadcast(a + p * a_step);
  int64_t j = 0;
  for (; j + U * L <= n; j += U * L) {
    V sum[U];
    for (int u = 0; u < U; ++u) sum[u] = O::zero();
    for (int p = 0; p < K; ++p) {
      const typename O::T* row = b + p * ldb + j;
      for (int u = 0; u < U; ++u) sum[u] = O::fma(av[p], O::load(row + u * L), sum[u]);
    }
    store_sums<O, U, kStream>(c + j, sum, alpha, beta);
  }
  for (; j < n; j += L) {
    const int tail = n - j < L ? int(n - j) : 0;  // 0: a whole vector
    V sum[1] = {O::zero()};
    for (int p = 0; p < K; ++p) {
      const typename O::T* row = b + p * ldb + j;
      sum[0] = O::fma(av[p], tail ? O::load_first(row, tail) : O::load(row), sum[0]);
    }
    store_sums<O, 1, kStream>(c + j, sum, alpha, beta, tail);
  }
}

// The RowKernel: k up to kAvx2RowRegisterMaxK in registers, any larger k through the L1 buffer.
template <class O, bool kStream>
void row_kernel(int64_t k, int64_t n, const typename O::T* a, int64_t a_step,
                const typename O::T* b, int64_t ldb, typename O::T* c, typename O::T alpha,
                typename O::T beta) {
  static_assert(kAvx2RowRegisterMaxK == 8, "the cases below list every k up to the maximum");
  switch (k) {
    case 1: return row_times_matrix_small_k<O, 1, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 2: return row_times_matrix_small_k<O, 2, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 3: return row_times_matrix_small_k<O, 3, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 4: return row_times_matrix_small_k<O, 4, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 5: return row_times_matrix_small_k<O, 5, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 6: return row_times_matrix_small_k<O, 6, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 7: return row_times_matrix_small_k<O, 7, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    case 8: return row_times_matrix_small_k<O, 8, kStream>(n, a, a_step, b, ldb, c, alpha, beta);
    default: return row_times_matrix<O, kStream>(k, n, a, a_step, b, ldb, c, alpha, beta);
  }
}

// An MI x NJ block of dot products between rows of A and rows of B, both read in place.
template <class O, int MI, int NJ>
void dot_tile(int64_t k, const typename O::T* a, int64_t lda, const typename O::T* b,
              int64_t ldb, typename O::T* c, int64_t ldc, typename O::T alpha,
              typename O::T beta) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  V acc[MI][NJ];
  for (int i = 0; i < MI; ++i) {
    for (int j = 0; j < NJ; ++j) acc[i][j] = O::zero();
  }
  int64_t p = 0;
  for (; p + L <= k; p += L) {
    V bv[NJ];
    for (int j = 0; j < NJ; ++j) bv[j] = O::load(b + j * ldb + p);
    for (int i = 0; i < MI; ++i) {
      const V av = O::load(a + i * lda + p);
      for (int j = 0; j < NJ; ++j) acc[i][j] = O::fma(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MI; ++i) {
    for (int j = 0; j < NJ; ++j) {
      T s = O::lane_sum(acc[i][j]);
      for (int64_t q = p; q < k; ++q) s += a[i * lda + q] * b[j * ldb + q];
      T& out = c[i * ldc + j];
      out = beta == T(0) ? alpha * s : alpha * s + beta * out;
    }
  }
}

template <class O, int MI>
void dot_rows(int64_t k, const typename O::T* a, int64_t lda, const typename O::T* b,
              int64_t ldb, typename O::T* c, int64_t ldc, int64_t nj, typename O::T alpha,
              typename O::T beta) {
  if constexpr (MI == 1) {
    // A single row of A has few FMA chains per tile: up to six rows of B keep more in flight.
    switch (nj) {
      case 6: return dot_tile<O, 1, 6>(k, a, lda, b, ldb, c, ldc, alpha, beta);
      case 5: return dot_tile<O, 1, 5>(k, a, lda, b, ldb, c, ldc, alpha, beta);
      case 4: return dot_tile<O, 1, 4>(k, a, lda, b, ldb, c, ldc, alpha, beta);
      default: break;
    }
  }
  switch (nj) {
    case 3: dot_tile<O, MI, 3>(k, a, lda, b, ldb, c, ldc, alpha, beta); break;
    case 2: dot_tile<O, MI, 2>(k, a, lda, b, ldb, c, ldc, alpha, beta); break;
    default: dot_tile<O, MI, 1>(k, a, lda, b, ldb, c, ldc, alpha, beta); break;
  }
}

template <class O>
void dot_4x3(int64_t k, const typename O::T* a, int64_t lda, const typename O::T* b, int64_t ldb,
             typename O::T* c, int64_t ldc, int64_t mi, int64_t nj, typename O::T alpha,
             typename O::T beta) {
  switch (mi) {
    case 4: dot_rows<O, 4>(k, a, lda, b, ldb, c, ldc, nj, alpha, beta); break;
    case 3: dot_rows<O, 3>(k, a, lda, b, ldb, c, ldc, nj, alpha, beta); break;
    case 2: dot_rows<O, 2>(k, a, lda, b, ldb, c, ldc, nj, alpha, beta); break;
    default: dot_rows<O, 1>(k, a, lda, b, ldb, c, ldc, nj, alpha, beta); break;
  }
}

// ----- packing ------------------------------------------------------------------------------

// In-register transposes: on return r[j] holds element j of every input row, in row order.
inline void transpose_8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

inline void transpose_4x4(__m256d r[4]) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

// Stores the first `count` (8, 6 or 4 floats; 4 or 2 doubles) lanes of v.
inline void store_first(float* out, __m256 v, int count) {
  if (count == 8) {
    _mm256_storeu_ps(out, v);
    return;
  }
  _mm_storeu_ps(out, _mm256_castps256_ps128(v));
  if (count == 6) _mm_storel_pi(reinterpret_cast<__m64*>(out + 4), _mm256_extractf128_ps(v, 1));
}

inline void store_first(double* out, __m256d v, int count) {
  if (count == 4) {
    _mm256_storeu_pd(out, v);
  } else {
    _mm_storeu_pd(out, _mm256_castpd256_pd128(v));
  }
}

// dst[p * R + r] = src[r * ld + p] for r < R, p < kc: R rows, each contiguous in p, interleaved
// into a micro-panel. Rows go through the transpose in groups of one vector's lanes.
template <class O, int R>
void interleave(typename O::T* dst, const typename O::T* src, int64_t ld, int64_t kc) {
  using V = typename O::V;
  constexpr int L = O::kLanes;
  int64_t p = 0;
  for (; p + L <= kc; p += L) {
    for (int g = 0; g * L < R; ++g) {
      V r[L];
      for (int i = 0; i < L; ++i) {
        r[i] = g * L + i < R ? O::load(src + (g * L + i) * ld + p) : O::zero();
      }
      if constexpr (L == 8) {
        transpose_8x8(r);
      } else {
        transpose_4x4(r);
      }
      const int count = R - g * L < L ? R - g * L : L;
      for (int j = 0; j < L; ++j) store_first(dst + (p + j) * R + g * L, r[j], count);
    }
  }
  for (; p < kc; ++p) {
    for (int r = 0; r < R; ++r) dst[p * R + r] = src[r * ld + p];
  }
}

// dst[p * R + r] = src[p * ld + r] for r < R, p < kc: R consecutive values per row of src.
template <class O, int R>
void copy_rows(typename O::T* dst, const typename O::T* src, int64_t ld, int64_t kc) {
  using T = typename O::T;
  constexpr int L = O::kLanes;
  for (int64_t p = 0; p < kc; ++p) {
    const T* in = src + p * ld;
    T* out = dst + p * R;
    int r = 0;
    for (; r + L <= R; r += L) O::store(out + r, O::load(in + r));
    for (; r < R; ++r) out[r] = in[r];
  }
}

}  // namespace

void gemm_6x16_avx2(int64_t k, const float* ap, const float* bp, int64_t b_step, float* c,
                    int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta) {
  tile_6x2v_any<F32, false>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_6x16_avx2_stream(int64_t k, const float* ap, const float* bp, int64_t b_step, float* c,
                           int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta) {
  tile_6x2v_any<F32, true>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_6x8_avx2(int64_t k, const double* ap, const double* bp, int64_t b_step, double* c,
                   int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta) {
  tile_6x2v_any<F64, false>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_6x8_avx2_stream(int64_t k, const double* ap, const double* bp, int64_t b_step,
                          double* c, int64_t ldc, int64_t mr, int64_t nr, double alpha,
                          double beta) {
  tile_6x2v_any<F64, true>(k, ap, bp, b_step, c, ldc, mr, nr, alpha, beta);
}

void gemm_row_avx2(int64_t k, int64_t n, const float* a, int64_t a_step, const float* b,
                   int64_t ldb, float* c, float alpha, float beta) {
  row_kernel<F32, false>(k, n, a, a_step, b, ldb, c, alpha, beta);
}

void gemm_row_avx2_stream(int64_t k, int64_t n, const float* a, int64_t a_step, const float* b,
                          int64_t ldb, float* c, float alpha, float beta) {
  row_kernel<F32, true>(k, n, a, a_step, b, ldb, c, alpha, beta);
}

void gemm_row_avx2(int64_t k, int64_t n, const double* a, int64_t a_step, const double* b,
                   int64_t ldb, double* c, double alpha, double beta) {
  row_kernel<F64, false>(k, n, a, a_step, b, ldb, c, alpha, beta);
}

void gemm_row_avx2_stream(int64_t k, int64_t n, const double* a, int64_t a_step, const double* b,
                          int64_t ldb, double* c, double alpha, double beta) {
  row_kernel<F64, true>(k, n, a, a_step, b, ldb, c, alpha, beta);
}

void gemm_ct_6x16_avx2(int64_t k, const float* b, int64_t ldb, const float* ap, float* c,
                       int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta) {
  ct_tile_any<F32, 6>(k, b, ldb, ap, c, ldc, mr, nr, alpha, beta);
}

void gemm_ct_6x8_avx2(int64_t k, const double* b, int64_t ldb, const double* ap, double* c,
                      int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta) {
  ct_tile_any<F64, 6>(k, b, ldb, ap, c, ldc, mr, nr, alpha, beta);
}

void gemm_dot_4x3_avx2(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                       float* c, int64_t ldc, int64_t mi, int64_t nj, float alpha, float beta) {
  dot_4x3<F32>(k, a, lda, b, ldb, c, ldc, mi, nj, alpha, beta);
}

void gemm_dot_4x3_avx2(int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
                       double* c, int64_t ldc, int64_t mi, int64_t nj, double alpha,
                       double beta) {
  dot_4x3<F64>(k, a, lda, b, ldb, c, ldc, mi, nj, alpha, beta);
}

}  // namespace fastnn::gemm_detail

namespace fastnn::gemm_detail {

void pack_panel_avx2(float* dst, const float* src, int64_t ld, bool interleaved, int64_t r,
                     int64_t kc) {
  switch (r) {
    case 6: return interleaved ? interleave<F32, 6>(dst, src, ld, kc)
                               : copy_rows<F32, 6>(dst, src, ld, kc);
    case 12: return interleaved ? interleave<F32, 12>(dst, src, ld, kc)
                                : copy_rows<F32, 12>(dst, src, ld, kc);
    case 16: return interleaved ? interleave<F32, 16>(dst, src, ld, kc)
                                : copy_rows<F32, 16>(dst, src, ld, kc);
    default: return interleaved ? interleave<F32, 32>(dst, src, ld, kc)
                                : copy_rows<F32, 32>(dst, src, ld, kc);
  }
}

void pack_panel_avx2(double* dst, const double* src, int64_t ld, bool interleaved, int64_t r,
                     int64_t kc) {
  switch (r) {
    case 6: return interleaved ? interleave<F64, 6>(dst, src, ld, kc)
                               : copy_rows<F64, 6>(dst, src, ld, kc);
    case 8: return interleaved ? interleave<F64, 8>(dst, src, ld, kc)
                               : copy_rows<F64, 8>(dst, src, ld, kc);
    case 12: return interleaved ? interleave<F64, 12>(dst, src, ld, kc)
                                : copy_rows<F64, 12>(dst, src, ld, kc);
    default: return interleaved ? interleave<F64, 16>(dst, src, ld, kc)
                                : copy_rows<F64, 16>(dst, src, ld, kc);
  }
}

}  // namespace fastnn::gemm_detail
