// The GEMM's inner kernels, shared by the driver (gemm.cpp) and the ISA-specific translation
// units (gemm_avx2.cpp, gemm_avx512.cpp). Nothing here is part of fastnn's public C++ API.
//
// Legend: k is the shared (reduced) dimension; MR x NR is the register tile of a micro-kernel;
// mr <= MR and nr <= NR are the rows and columns of that tile actually stored to C.
//
// ---------------------------------------------------------------------------------------------
// Micro-kernel contract (every MicroKernel, portable, AVX2 or AVX-512):
//
//   C[i*ldc + j] = alpha * sum_{p<k} Ap[p*MR + i] * Bp[p*b_step + j]  (+ beta * C[i*ldc + j])
//   for i < mr, j < nr; nothing outside that mr x nr corner is read or written.
//
//   Ap  packed A micro-panel: for each of the k steps, MR consecutive values (one per row of the
//       tile). Rows mr..MR-1 of a short panel are zero padding written by the packer.
//   Bp  B micro-panel: for each k step, NR consecutive values (one per column), consecutive k
//       steps b_step apart. b_step == NR for a packed panel; b_step == ldb when the kernel reads
//       a row-major B in place (then all NR columns must exist: a panel with fewer than NR
//       columns is always packed and zero padded, so loads never run past B).
//   k   any value >= 1 (the driver handles k == 0 before calling). The kernel accumulates in k
//       order in registers; the k loop is unrolled with a remainder loop, so any k is exact.
//   Edges: all NR columns are computed (padding contributes zeros) and the store is masked,
//       through a small tile buffer, to mr x nr. A kernel may skip rows mr..MR-1 (the AVX2 ones
//       run an mr-row variant), but every element of C sees the same sequence of operations
//       whether its tile is full or partial, which is what lets the driver split C among threads
//       any way it likes without changing a single bit.
//   beta == 0: C is not read at all (NaN or garbage in C cannot leak into the result).
//
//   Streaming variants (the *_stream kernels): the same arithmetic, but a full MR x NR tile
//   stored with beta == 0, whose rows each start on a 64-byte boundary (whole cache lines per
//   row: NR * sizeof(T) is 64 or 128), is written with non-temporal stores. These do not read
//   C's lines into the cache before writing them, which for a C that is not cached halves its
//   memory traffic, and they do not evict what is cached. The caller must issue a store fence
//   before other threads read C (the stores are weakly ordered), and should use these kernels
//   only where C will not be read back soon: no epilogue, no later k block adding into C.
//
// Dot-kernel contract (every DotKernel), used for op(A) * B^T with few rows of A, where B is
// read in place as it lies (n x k, row stride ldb; a Linear layer's weight):
//
//   C[i*ldc + j] = alpha * dot(A[i*lda .. +k], B[j*ldb .. +k])  (+ beta * C[i*ldc + j])
//   for i < mi <= DOT_MI, j < nj <= DOT_NJ; when mi == 1, nj may go up to DOT_NJ1 >= DOT_NJ.
//
//   Each dot product accumulates in vector lanes over whole vectors of k, then sums the lanes
//   in a fixed order, then adds the k remainder in order. The result of an element depends only
//   on its two rows, never on the tile it was computed in. beta == 0: C is not read.
//
// C^T-tile contract (every CtKernel), used for op(A) * B^T with few rows of op(A), computed as
// its transpose B * op(A)^T so that B (n x k, row stride ldb: a Linear layer's weight) is read
// in place by broadcasts and only op(A), which is small, is packed:
//
//   C[j*ldc + i] = alpha * sum_{p<k} B[i*ldb + p] * Ap[p*NR + j]  (+ beta * C[j*ldc + i])
//   for i < mr <= MR (rows of B, columns of C) and j < nr <= NR (rows of C).
//
//   Ap  packed panel of NR rows of op(A): for each k step, NR consecutive values; rows nr..NR-1
//       are zero padding. Only rows i < mr of B and their first k values are read.
//   All of k in one call, each sum from zero in k order, then the micro-kernels' store
//   arithmetic, so an element's value depends only on its row of A and row of B.
//   beta == 0: C is not read.
// ---------------------------------------------------------------------------------------------
#pragma once

#include <cstdint>

namespace fastnn::gemm_detail {

template <class T>
using MicroKernel = void (*)(int64_t k, const T* ap, const T* bp, int64_t b_step, T* c,
                             int64_t ldc, int64_t mr, int64_t nr, T alpha, T beta);

template <class T>
using PackPanelFn = void (*)(T* dst, const T* src, int64_t ld, bool interleaved, int64_t r,
                             int64_t kc);

// Row kernel: one row of C times a B read in place (B not transposed, row stride ldb):
//   C[j] = alpha * sum_{p<k} A[p * a_step] * B[p * ldb + j]  (+ beta * C[j]),  j < n.
// All of k in one pass: one accumulator per element from zero, FMAs in k order, then the
// micro-kernels' store arithmetic, whether the sums wait in registers (small k) or in a buffer.
// Used for m == 1 and, one call per row of C, for small k. beta == 0: C is not read.
template <class T>
using RowKernel = void (*)(int64_t k, int64_t n, const T* a, int64_t a_step, const T* b,
                           int64_t ldb, T* c, T alpha, T beta);

template <class T>
using CtKernel = void (*)(int64_t k, const T* b, int64_t ldb, const T* ap, T* c, int64_t ldc,
                          int64_t mr, int64_t nr, T alpha, T beta);

template <class T>
using DotKernel = void (*)(int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                           int64_t ldc, int64_t mi, int64_t nj, T alpha, T beta);

// AVX2+FMA kernels (gemm_avx2.cpp); call only when cpu_has_avx2_fma().
constexpr int64_t kAvx2DotMI = 4;
constexpr int64_t kAvx2DotNJ = 3;
constexpr int64_t kAvx2DotNJ1 = 6;
// Up to this k, gemm_row_avx2 keeps a's values and the sums in registers.
constexpr int kAvx2RowRegisterMaxK = 8;
void gemm_6x16_avx2(int64_t k, const float* ap, const float* bp, int64_t b_step, float* c,
                    int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);
void gemm_6x8_avx2(int64_t k, const double* ap, const double* bp, int64_t b_step, double* c,
                   int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta);
void gemm_6x16_avx2_stream(int64_t k, const float* ap, const float* bp, int64_t b_step, float* c,
                           int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);
void gemm_6x8_avx2_stream(int64_t k, const double* ap, const double* bp, int64_t b_step,
                          double* c, int64_t ldc, int64_t mr, int64_t nr, double alpha,
                          double beta);
void gemm_row_avx2(int64_t k, int64_t n, const float* a, int64_t a_step, const float* b,
                   int64_t ldb, float* c, float alpha, float beta);
void gemm_row_avx2(int64_t k, int64_t n, const double* a, int64_t a_step, const double* b,
                   int64_t ldb, double* c, double alpha, double beta);
// The row kernels with the streaming stores of the *_stream micro-kernels, for whole vectors
// stored with beta == 0 at 32-byte aligned addresses (rows of C that start on a cache line and
// are written whole, left to right, fill each line completely).
void gemm_row_avx2_stream(int64_t k, int64_t n, const float* a, int64_t a_step, const float* b,
                          int64_t ldb, float* c, float alpha, float beta);
void gemm_row_avx2_stream(int64_t k, int64_t n, const double* a, int64_t a_step, const double* b,
                          int64_t ldb, double* c, double alpha, double beta);
// C^T tiles of 6 x 16 floats and 6 x 8 doubles (CtKernel).
void gemm_ct_6x16_avx2(int64_t k, const float* b, int64_t ldb, const float* ap, float* c,
                       int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);
void gemm_ct_6x8_avx2(int64_t k, const double* b, int64_t ldb, const double* ap, double* c,
                      int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta);
void gemm_dot_4x3_avx2(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                       float* c, int64_t ldc, int64_t mi, int64_t nj, float alpha, float beta);
void gemm_dot_4x3_avx2(int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
                       double* c, int64_t ldc, int64_t mi, int64_t nj, double alpha,
                       double beta);

// AVX-512F kernels (gemm_avx512.cpp); call only when cpu_has_avx512f(). A 12 x (2 vectors)
// micro-kernel on zmm registers. The rest of the AVX-512 kernel set (dot, row and packing
// kernels) is the AVX2 one.
void gemm_12x32_avx512(int64_t k, const float* ap, const float* bp, int64_t b_step, float* c,
                       int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);
void gemm_12x16_avx512(int64_t k, const double* ap, const double* bp, int64_t b_step, double* c,
                       int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta);
void gemm_12x32_avx512_stream(int64_t k, const float* ap, const float* bp, int64_t b_step,
                              float* c, int64_t ldc, int64_t mr, int64_t nr, float alpha,
                              float beta);
void gemm_12x16_avx512_stream(int64_t k, const double* ap, const double* bp, int64_t b_step,
                              double* c, int64_t ldc, int64_t mr, int64_t nr, double alpha,
                              double beta);

// C^T tiles of 12 x 32 floats and 12 x 16 doubles (CtKernel).
void gemm_ct_12x32_avx512(int64_t k, const float* b, int64_t ldb, const float* ap, float* c,
                          int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);
void gemm_ct_12x16_avx512(int64_t k, const double* b, int64_t ldb, const double* ap, double* c,
                          int64_t ldc, int64_t mr, int64_t nr, double alpha, double beta);

// Packs one full micro-panel of r rows (r = MR or NR of the AVX2 or AVX-512 kernels: 6, 12, 16
// or 32 floats, 6, 8, 12 or 16 doubles) and kc steps: dst[p * r + i] = src[i * ld + p] when
// `interleaved` (each of the r rows is contiguous in p), else dst[p * r + i] = src[p * ld + i].
void pack_panel_avx2(float* dst, const float* src, int64_t ld, bool interleaved, int64_t r,
                     int64_t kc);
void pack_panel_avx2(double* dst, const double* src, int64_t ld, bool interleaved, int64_t r,
                     int64_t kc);

}  // namespace fastnn::gemm_detail
