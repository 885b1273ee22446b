// The GEMM driver: choice of path, cache blocking, packing and threading. The micro-kernels and
// their contracts are in gemm_kernels.h (portable ones below, AVX2 ones in gemm_avx2.cpp, the
// AVX-512 micro-kernels in gemm_avx512.cpp).
//
// Legend: m, n, k as in gemm.h; MR x NR the micro-kernel tile; MC, KC, NC the cache blocks.
//
// Six paths, chosen from the shape alone (never from the thread count):
//   dot      op(A) op(B) = A B^T with m <= the kernel set's dot_max_rows: each element is a dot
//            product of a row of A with a row of B, both read as they lie. A Linear layer's
//            forward at small batch: the weight is streamed once, nothing is packed.
//   ct       op(A) B^T with m up to the kernel set's ct_max_rows (after dot): computed as its
//            transpose B op(A)^T, whose tiles broadcast B's values from its rows in place and
//            store transposed. A Linear layer's forward at batch 13..256: the weight is read as
//            it lies, and only the input is packed (into NR-row panels, all of k at once).
//   row      B not transposed, m == 1: one row of C streamed against B's rows.
//   small-k  B not transposed, k <= the kernel set's small_k_max, rows of C long enough: each
//            row of C is one row-kernel call reading B in place. A weight gradient dZ^T X at
//            batch 1..7: C is large, the work per element tiny, packing would cost more than it.
//   B-direct B not transposed, m <= kDirectMaxRows: A is packed (it is small), the micro-kernel
//            reads B's rows in place (b_step = ldb); only a last partial NR sliver is packed.
//   packed   everything else, BLIS's loop nest (packed_serial):
//              for jc over n, NC at a time
//                for pc over k, KC at a time             (k is never split among threads)
//                  pack op(B)[pc.., jc..] into NR-column slivers  (B panel: L2/L3)
//                  for ic over m, MC at a time
//                    pack op(A)[ic.., pc..] into MR-row micro-panels   (A block: L2)
//                    for jr over the slivers             (B sliver: L1)
//                      for ir over the block, MR rows
//                        micro-kernel
//                      epilogue on the finished MC x NR strip when pc is the last k block
//
// Streaming C: a product that writes a C too large to stay cached and does not read it back (beta
// 0, no epilogue, on the packed path one k block; a weight gradient dZ^T X at batch 1..384)
// writes C with non-temporal stores. A cached store first reads the line it writes, so for a C
// that is not in cache an ordinary store moves each byte twice. Measured inside training steps of
// the MLP on a 2-core Zen with an 8 MB L3, the weight gradient of Linear(784, 512) took 515 ->
// 390 us at batch 32 (packed path) and 121 -> 56 us at batch 1 (small-k path). How large "too
// large" is depends on the cache: see kStreamCacheFraction.
//
// Threads: the dot, ct and row paths cut n into column chunks, the small-k path cuts m into chunks
// of rows; the packed paths cut C into one block per thread (see gemm_packed_path). One parallel
// region per call, no barrier inside it.
//
// Determinism: every element of C is computed by the same sequence of operations whatever tile
// or block it falls in (see the kernel contracts), and the k blocking depends only on k. So the
// way C is cut, which depends on the thread count, never changes a bit of the result.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#include "cpu.h"
#include "gemm.h"
#include "gemm_kernels.h"
#include "threading.h"

namespace fastnn {
namespace {

using gemm_detail::CtKernel;
using gemm_detail::DotKernel;
using gemm_detail::MicroKernel;
using gemm_detail::PackPanelFn;
using gemm_detail::RowKernel;

// Shape thresholds of the paths, found by measurement (bench/gemm.py and, where said, in-process
// loops alternating two builds' choices).
// The dot path of the portable set (measured on Zen 3 against its packed path).
constexpr int64_t kDotMaxRows = 32;
// The dot path of the AVX2 and AVX-512 sets, which have the ct path beside it (2 threads on Zen
// 4, x 784 x 512: AVX-512 m = 12 dot 70 us, ct 76-79; m = 16 dot 76-84, ct 76-79; AVX2 m = 12 dot
// 78-89, ct 86-93; m = 16 dot 100-115, ct 78-86; m = 32 dot 176, ct 158).
constexpr int64_t kVectorDotMaxRows = 12;
constexpr int64_t kDirectMaxRows = 32;
// op(A) B^T from up to this many rows of op(A) takes the ct path (when the dot path does not),
// while the packed panels of op(A), which hold all of k, take at most kCtMaxPackBytes. Against the
// packed path, which packs B on every call (2 threads on Zen 4, AVX-512, x 784 x 512): m = 32
// 121 us against 158-180, m = 128 476 against 530, m = 256 955 against 1030-1080, m = 384 and 512
// level; 32 x 256 x 10 2.5 against 11-15.
constexpr int64_t kCtMaxRows = 256;
constexpr int64_t kCtMaxPackBytes = int64_t(1) << 20;
// Up to this m*n*k (about 10 us of work) a GEMM runs on one thread: a fork/join costs a few
// microseconds on an idle machine, and when another process holds the second core the worker's
// wake-up can take a whole scheduler time slice (measured: 1x784x512 on 2 threads took 8 ms at
// the median on a loaded machine, against 35 us on one).
constexpr int64_t kParallelMinMNK = int64_t(1) << 20;
// Memory-bound paths go parallel by the bytes they move, not by m*n*k, and so take the risk
// described above: with one busy process on the other core, 1x784x512 (dot) and 512x784x1
// (small-k) on 2 threads kept medians at or below their one-thread times, but 1 to 2 calls in a
// hundred waited a time slice (4 ms) for the worker.
//   dot, row: when they stream at least this much of B. 1x784x512 in float (1.6 MB, about 20 us
//   on one core) took 0.55-0.85 of its one-thread time on two; at 512 KB the gain was unreliable.
constexpr int64_t kParallelMinStreamBytes = int64_t(1) << 20;
//   small-k: when it writes at least this much of C (2 threads beat 1 from about 100 KB on an
//   idle machine; the margin is for the wake-up), in chunks of rows of about kSmallKChunkBytes.
constexpr int64_t kParallelMinWriteBytes = int64_t(256) << 10;
constexpr int64_t kSmallKChunkBytes = int64_t(128) << 10;
// The small-k path takes rows of C at least this long; shorter ones go through the packed path,
// whose micro-kernel call covers 6 rows (measured on 512 x n in float: at n = 32..48 the row
// kernel took 1.3-1.7 times the packed path's time, at n = 128 about as long, at n = 256
// 0.75-0.8 of it).
constexpr int64_t kSmallKMinRowBytes = 1024;
// NR-column slivers per epilogue call on the packed paths (measured: one sliver per call made
// bias + relu cost 2.5% of a 128x784x512 product, mostly loop overhead on 16-element rows).
constexpr int64_t kEpilogueSlivers = 8;
// C is streamed from this fraction of the last-level cache: such a C would push out a good part
// of what else is cached (a training step's weights, gradients and optimizer state) and is
// unlikely to be found in the cache when it is read next. With an 8 MB L3 that is 1 MB (the
// 1.6 MB weight gradient of Linear(784, 512) streams, 512 KB ones do not); with 32 MB, 4 MB.
constexpr int64_t kStreamCacheFraction = 8;
// Cache blocks of the AVX-512 float set (the double set halves MC): the KC x 32 B sliver is 32 KB
// of L1 (48 KB on Ice Lake), the MC x KC A block 144 KB of L2. On a 2-core Ice Lake, MC 96..288
// and KC 128..384 measured within the machine's noise of each other on 1024^3 and the MLP shapes.
constexpr int64_t kAvx512BlockMc = 144;
constexpr int64_t kAvx512BlockKc = 256;

int64_t default_stream_min_bytes() {
  const int64_t cache = last_level_cache_bytes();  // 0 when unknown: then never stream
  return cache > 0 ? cache / kStreamCacheFraction : std::numeric_limits<int64_t>::max();
}

std::atomic<int64_t>& stream_min_bytes() {
  static std::atomic<int64_t> bytes{default_stream_min_bytes()};
  return bytes;
}

// Orders this thread's non-temporal stores before whatever it does next (they are weakly
// ordered: without this, another thread could read C before they land).
void fence_streamed_stores() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_sfence();
#endif
}

// ----- portable kernels: plain C++ the compiler vectorises for whatever ISA it targets ---------

template <class T, int MR, int NR>
void gemm_tile_portable(int64_t k, const T* ap, const T* bp, int64_t b_step, T* c, int64_t ldc,
                        int64_t mr, int64_t nr, T alpha, T beta) {
  T acc[MR][NR] = {};
  for (int64_t p = 0; p < k; ++p) {
    for (int i = 0; i < MR; ++i) {
      const T a_i = ap[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += a_i * bp[j];
    }
    ap += MR;
    bp += b_step;
  }
  for (int64_t i = 0; i < mr; ++i) {
    for (int64_t j = 0; j < nr; ++j) {
      T& out = c[i * ldc + j];
      out = beta == T(0) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * out;
    }
  }
}

// Lanes of partial sums per dot product; summed pairwise in a fixed order at the end.
constexpr int kPortableDotLanes = 4;

template <class T, int MI, int NJ>
void gemm_dot_tile_portable(int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                            int64_t ldc, T alpha, T beta) {
  constexpr int L = kPortableDotLanes;
  T acc[MI][NJ][L] = {};
  int64_t p = 0;
  for (; p + L <= k; p += L) {
    for (int i = 0; i < MI; ++i) {
      for (int j = 0; j < NJ; ++j) {
        for (int l = 0; l < L; ++l) acc[i][j][l] += a[i * lda + p + l] * b[j * ldb + p + l];
      }
    }
  }
  for (int i = 0; i < MI; ++i) {
    for (int j = 0; j < NJ; ++j) {
      T s = (acc[i][j][0] + acc[i][j][2]) + (acc[i][j][1] + acc[i][j][3]);
      for (int64_t q = p; q < k; ++q) s += a[i * lda + q] * b[j * ldb + q];
      T& out = c[i * ldc + j];
      out = beta == T(0) ? alpha * s : alpha * s + beta * out;
    }
  }
}

template <class T>
void gemm_dot_2x2_portable(int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                           int64_t ldc, int64_t mi, int64_t nj, T alpha, T beta) {
  if (mi == 2 && nj == 2) {
    gemm_dot_tile_portable<T, 2, 2>(k, a, lda, b, ldb, c, ldc, alpha, beta);
  } else if (mi == 2) {
    gemm_dot_tile_portable<T, 2, 1>(k, a, lda, b, ldb, c, ldc, alpha, beta);
  } else if (nj == 2) {
    gemm_dot_tile_portable<T, 1, 2>(k, a, lda, b, ldb, c, ldc, alpha, beta);
  } else {
    gemm_dot_tile_portable<T, 1, 1>(k, a, lda, b, ldb, c, ldc, alpha, beta);
  }
}

// One row of C times a B read in place (the RowKernel contract): per element the arithmetic of
// gemm_tile_portable, a sum from zero with the products added in k order, then the same store.
// The sums of a chunk of columns wait in a buffer in L1 while B's rows stream past.
template <class T>
void gemm_row_portable(int64_t k, int64_t n, const T* a, int64_t a_step, const T* b, int64_t ldb,
                       T* c, T alpha, T beta) {
  constexpr int64_t kChunk = 2048 / int64_t(sizeof(T));  // 2 KB of sums
  T acc[kChunk];
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t width = std::min(kChunk, n - j0);
    for (int64_t j = 0; j < width; ++j) acc[j] = T(0);
    for (int64_t p = 0; p < k; ++p) {
      const T a_p = a[p * a_step];
      const T* b_p = b + p * ldb + j0;
      for (int64_t j = 0; j < width; ++j) acc[j] += a_p * b_p[j];
    }
    T* out = c + j0;
    if (beta == T(0)) {
      for (int64_t j = 0; j < width; ++j) out[j] = alpha * acc[j];
    } else {
      for (int64_t j = 0; j < width; ++j) out[j] = alpha * acc[j] + beta * out[j];
    }
  }
}

// ----- kernel sets and block sizes ------------------------------------------------------------

template <class T>
struct KernelSet {
  MicroKernel<T> tile;
  MicroKernel<T> tile_stream;  // tile with non-temporal stores of full tiles; null: none
  int64_t mr, nr;
  int64_t mc, kc, nc;  // MC, NC multiples of MR, NR
  DotKernel<T> dot;
  int64_t dot_mi, dot_nj, dot_nj1;  // dot_nj1: the wider tile allowed when m == 1
  int64_t dot_max_rows;  // A B^T with up to this many rows of A takes the dot path
  CtKernel<T> ct;
  int64_t ct_mr, ct_nr;  // the C^T tile: ct_mr rows of B by ct_nr rows of op(A)
  int64_t ct_max_rows;   // op(A) B^T with up to this many rows (and more than dot_max_rows)
  PackPanelFn<T> pack;  // full micro-panels; null: the plain loops below
  RowKernel<T> row;
  RowKernel<T> row_stream;  // row with non-temporal stores of whole vectors; null: none
  int64_t small_k_max;  // k up to which B not transposed goes down the small-k path
};

template <class T>
KernelSet<T> portable_kernels() {
  // 4 x 8 floats (or 4 x 4 doubles) are 8 128-bit accumulators: fits SSE2's and NEON's files.
  constexpr int NR = 32 / int(sizeof(T));
  // No ct path: its tile in plain loops took 3.5 times the packed path's time (SSE2 code on Zen
  // 4, 64..256 x 784 x 512). The row kernel: at m == 1 it took a third of this set's packed time
  // (1x784x512, SSE2 code on Zen 3). Small k: it stayed ahead up to k = 16 in float and k = 4
  // in double; the AVX2 set's limits are kept, as this set's real targets (other ISAs) were not
  // measured.
  return {&gemm_tile_portable<T, 4, NR>, nullptr, 4, NR, 128, 256, 4096,
          &gemm_dot_2x2_portable<T>, 2, 2, 2, kDotMaxRows, nullptr, 0, 0, 0, nullptr,
          &gemm_row_portable<T>,
          nullptr, sizeof(T) == 4 ? 7 : 4};
}

template <class T>
KernelSet<T> avx2_kernels();

template <>
KernelSet<float> avx2_kernels<float>() {
#ifdef FASTNN_HAVE_AVX2_KERNELS
  static_assert(7 <= gemm_detail::kAvx2RowRegisterMaxK, "small k must stay in registers");
  // KC x NR B sliver = 24 KB of the 32 KB L1; MC x KC A block = 216 KB of the 512 KB L2.
  // KC 384 measured a little ahead of 256 and 512 on the MLP shapes.
  // Small k up to 7: 512x784 took 0.4-0.85 of the packed path's time at k = 1..7, 0.9-1.15 of
  // it at k = 8 (the row kernel loads k vectors of B per vector of C), 1.8 times it at k = 10.
  return {&gemm_detail::gemm_6x16_avx2, &gemm_detail::gemm_6x16_avx2_stream, 6, 16, 144,
          384, 4080,
          &gemm_detail::gemm_dot_4x3_avx2, gemm_detail::kAvx2DotMI, gemm_detail::kAvx2DotNJ,
          gemm_detail::kAvx2DotNJ1, kVectorDotMaxRows, &gemm_detail::gemm_ct_6x16_avx2, 6, 16,
          kCtMaxRows, &gemm_detail::pack_panel_avx2, &gemm_detail::gemm_row_avx2,
          &gemm_detail::gemm_row_avx2_stream, 7};
#else
  return portable_kernels<float>();
#endif
}

template <>
KernelSet<double> avx2_kernels<double>() {
#ifdef FASTNN_HAVE_AVX2_KERNELS
  // Small k up to 4: 512x784 took 0.4-0.9 of the packed path's time at k = 1..4, 1.07 at 5.
  return {&gemm_detail::gemm_6x8_avx2, &gemm_detail::gemm_6x8_avx2_stream, 6, 8, 72, 256,
          2040,
          &gemm_detail::gemm_dot_4x3_avx2, gemm_detail::kAvx2DotMI, gemm_detail::kAvx2DotNJ,
          gemm_detail::kAvx2DotNJ1, kVectorDotMaxRows, &gemm_detail::gemm_ct_6x8_avx2, 6, 8,
          kCtMaxRows, &gemm_detail::pack_panel_avx2, &gemm_detail::gemm_row_avx2,
          &gemm_detail::gemm_row_avx2_stream, 4};
#else
  return portable_kernels<double>();
#endif
}

// The AVX-512 sets: the AVX2 sets with 12 x 32 float (12 x 16 double) tiles on zmm registers for
// the packed, B-direct and ct paths. The dot, row and small-k paths keep their AVX2 kernels: they
// read rows as they lie, at any alignment, and a 4x3 dot kernel on zmm registers took 1.6 times
// the AVX2 one's time on 32 x 784 x 512 (Ice Lake).
template <class T>
KernelSet<T> avx512_kernels();

template <>
KernelSet<float> avx512_kernels<float>() {
  KernelSet<float> ks = avx2_kernels<float>();
#ifdef FASTNN_HAVE_AVX2_KERNELS
  ks.tile = &gemm_detail::gemm_12x32_avx512;
  ks.tile_stream = &gemm_detail::gemm_12x32_avx512_stream;
  ks.ct = &gemm_detail::gemm_ct_12x32_avx512;
  ks.ct_mr = 12;
  ks.ct_nr = 32;
  ks.mr = 12;
  ks.nr = 32;
  ks.mc = kAvx512BlockMc;
  ks.kc = kAvx512BlockKc;
  ks.nc = 4096;
#endif
  return ks;
}

template <>
KernelSet<double> avx512_kernels<double>() {
  KernelSet<double> ks = avx2_kernels<double>();
#ifdef FASTNN_HAVE_AVX2_KERNELS
  ks.tile = &gemm_detail::gemm_12x16_avx512;
  ks.tile_stream = &gemm_detail::gemm_12x16_avx512_stream;
  ks.ct = &gemm_detail::gemm_ct_12x16_avx512;
  ks.ct_mr = 12;
  ks.ct_nr = 16;
  ks.mr = 12;
  ks.nr = 16;
  ks.mc = kAvx512BlockMc / 2;
  ks.kc = kAvx512BlockKc;
  ks.nc = 2048;
#endif
  return ks;
}

// ----- helpers --------------------------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Splits `total` into ceil(total / max_block) near-equal blocks, rounded up to `unit`.
int64_t balanced_block(int64_t total, int64_t max_block, int64_t unit) {
  const int64_t blocks = ceil_div(total, max_block);
  return std::min(round_up(ceil_div(total, blocks), unit), round_up(max_block, unit));
}

// Runs body(t) for t in [0, count): on every allowed thread when `parallel`, else in order here.
// Thread i of T owns the i-th contiguous block of tasks (see parallel_for_owned), so that the
// paths that cut C, A or B into one block per thread give each thread the same part of a
// weight, call after call, and the same rows as the optimizer's update (see for_chunks in
// optim.cpp): what one kernel leaves in a core's cache, the next one finds there.
template <class Body>
void run_tasks(int64_t count, bool parallel, Body&& body) {
  if (parallel) {
    auto owner = [count](int64_t t, int threads) { return int(t * threads / count); };
    parallel_for_owned(count, kParallelMinWork, owner, body);
  } else {
    for (int64_t t = 0; t < count; ++t) body(t);
  }
}

// Packing buffers, kept per calling thread and grown on demand, so that repeated calls (a
// training loop) neither allocate nor fault in fresh pages. 64-byte aligned.
template <class T>
struct PackBuffers {
  std::vector<T> a_store, b_store;
  static T* get(std::vector<T>& store, size_t count) {
    constexpr size_t kPad = 64 / sizeof(T);
    if (store.size() < count + kPad) store.resize(count + kPad);
    const auto addr = reinterpret_cast<std::uintptr_t>(store.data());
    return store.data() + ((64 - addr % 64) % 64) / sizeof(T);
  }
};

template <class T>
PackBuffers<T>& pack_buffers() {
  thread_local PackBuffers<T> buffers;
  return buffers;
}

// Packs `count` vectors of kc values into one micro-panel `width` wide: dst[p * width + i] for
// vector i < count and step p < kc, vectors count..width-1 zero. Vector i, step p lies at
// src[i * ld + p] when `interleaved` (each vector contiguous), else at src[p * ld + i].
template <class T>
void pack_panel(PackPanelFn<T> pack, T* dst, const T* src, int64_t ld, bool interleaved,
                int64_t count, int64_t width, int64_t kc) {
  if (pack && count == width) {
    pack(dst, src, ld, interleaved, width, kc);
    return;
  }
  if (interleaved) {
    for (int64_t i = 0; i < count; ++i) {
      const T* vec = src + i * ld;
      for (int64_t p = 0; p < kc; ++p) dst[p * width + i] = vec[p];
    }
    for (int64_t i = count; i < width; ++i) {
      for (int64_t p = 0; p < kc; ++p) dst[p * width + i] = T(0);
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      const T* step = src + p * ld;
      T* out = dst + p * width;
      for (int64_t i = 0; i < count; ++i) out[i] = step[i];
      for (int64_t i = count; i < width; ++i) out[i] = T(0);
    }
  }
}

// Packs rows [i0, i0 + rows) x columns [p0, p0 + kc) of op(A) as one MR-row micro-panel:
// dst[p * MR + i], rows >= `rows` zero.
template <class T>
void pack_a_panel(PackPanelFn<T> pack, T* dst, const T* a, int64_t lda, bool trans_a, int64_t i0,
                  int64_t rows, int64_t p0, int64_t kc, int64_t mr) {
  const T* origin = trans_a ? a + p0 * lda + i0 : a + i0 * lda + p0;
  pack_panel(pack, dst, origin, lda, !trans_a, rows, mr, kc);
}

// Packs rows [p0, p0 + kc) x columns [j0, j0 + cols) of op(B) as one NR-column micro-panel:
// dst[p * NR + j], columns >= `cols` zero.
template <class T>
void pack_b_panel(PackPanelFn<T> pack, T* dst, const T* b, int64_t ldb, bool trans_b, int64_t p0,
                  int64_t kc, int64_t j0, int64_t cols, int64_t nr) {
  const T* origin = trans_b ? b + j0 * ldb + p0 : b + p0 * ldb + j0;
  pack_panel(pack, dst, origin, ldb, trans_b, cols, nr, kc);
}

// ----- the paths --------------------------------------------------------------------------------

template <class T>
struct Problem {
  bool trans_a, trans_b;
  int64_t m, n, k;
  T alpha;
  const T* a;
  int64_t lda;
  const T* b;
  int64_t ldb;
  T beta;
  T* c;
  int64_t ldc;
  const GemmEpilogue<T>* epilogue;  // null: none
  int64_t row0 = 0, col0 = 0;       // where this (sub-)problem's C sits in the caller's C
  bool stream_c = false;            // use the kernel set's streaming kernels (see run_streaming)

  // The sub-problem computing rows [i0, i0 + rows) and columns [j0, j0 + cols) of C.
  Problem part(int64_t i0, int64_t rows, int64_t j0, int64_t cols) const {
    Problem p = *this;
    p.m = rows;
    p.n = cols;
    p.a += trans_a ? i0 : i0 * lda;
    p.b += trans_b ? j0 * ldb : j0;
    p.c += i0 * ldc + j0;
    p.row0 += i0;
    p.col0 += j0;
    return p;
  }
};

template <class T>
void finish_block(const Problem<T>& pr, int64_t row0, int64_t col0, int64_t rows, int64_t cols) {
  if (pr.epilogue && pr.epilogue->apply && rows > 0 && cols > 0) {
    pr.epilogue->apply(pr.epilogue->ctx, pr.c + row0 * pr.ldc + col0, pr.ldc, pr.row0 + row0,
                       pr.col0 + col0, rows, cols);
  }
}

// C = beta * C (C not read when beta == 0): the whole product when k == 0 or alpha == 0.
template <class T>
void scale_only(const Problem<T>& pr) {
  for (int64_t i = 0; i < pr.m; ++i) {
    T* row = pr.c + i * pr.ldc;
    for (int64_t j = 0; j < pr.n; ++j) row[j] = pr.beta == T(0) ? T(0) : pr.beta * row[j];
  }
  finish_block(pr, 0, 0, pr.m, pr.n);
}

template <class T>
void gemm_dot_path(const KernelSet<T>& ks, const Problem<T>& pr, bool parallel) {
  constexpr int64_t kChunkCols = 48;
  const int64_t nj_max = pr.m == 1 ? ks.dot_nj1 : ks.dot_nj;
  int64_t chunks = ceil_div(pr.n, kChunkCols);
  if (parallel) chunks = round_up(chunks, active_threads());
  const int64_t cols = round_up(ceil_div(pr.n, chunks), nj_max);
  chunks = ceil_div(pr.n, cols);
  run_tasks(chunks, parallel, [&](int64_t t) {
    const int64_t j0 = t * cols, j1 = std::min(pr.n, j0 + cols);
    for (int64_t j = j0; j < j1; j += nj_max) {
      const int64_t nj = std::min(nj_max, j1 - j);
      for (int64_t i = 0; i < pr.m; i += ks.dot_mi) {
        ks.dot(pr.k, pr.a + i * pr.lda, pr.lda, pr.b + j * pr.ldb, pr.ldb, pr.c + i * pr.ldc + j,
               pr.ldc, std::min(ks.dot_mi, pr.m - i), nj, pr.alpha, pr.beta);
      }
    }
    finish_block(pr, 0, j0, pr.m, j1 - j0);
  });
}

// op(A) B^T as its transpose (see the CtKernel contract): each thread packs all of op(A) into
// NR-row panels holding all of k, then takes its share of B's rows, MR at a time, each MR-row
// group of B meeting every panel of op(A) while it is in L1. Threads cut n (B's rows).
template <class T>
void gemm_ct_path(const KernelSet<T>& ks, const Problem<T>& pr, bool parallel) {
  const int64_t MR = ks.ct_mr, NR = ks.ct_nr;
  const int64_t panels = ceil_div(pr.m, NR);
  const int64_t units = ceil_div(pr.n, MR);
  const int64_t parts = parallel ? std::min<int64_t>(active_threads(), units) : 1;
  run_tasks(parts, parts > 1, [&](int64_t t) {
    // Equal shares, not whole MR-row groups: a share one group longer than the other kept a
    // thread waiting 3-4 us per call inside training steps (Linear(784, 512) at batch 32).
    const int64_t j0 = t * pr.n / parts, j1 = (t + 1) * pr.n / parts;
    PackBuffers<T>& buffers = pack_buffers<T>();
    T* a_pack = PackBuffers<T>::get(buffers.a_store, size_t(panels * NR * pr.k));
    for (int64_t s = 0; s < panels; ++s) {
      pack_a_panel(ks.pack, a_pack + s * NR * pr.k, pr.a, pr.lda, pr.trans_a, s * NR,
                   std::min(NR, pr.m - s * NR), 0, pr.k, NR);
    }
    // The epilogue takes kEpilogueSlivers groups of B's rows (columns of C) at a time.
    const int64_t group = MR * kEpilogueSlivers;
    for (int64_t g0 = j0; g0 < j1; g0 += group) {
      const int64_t g1 = std::min(j1, g0 + group);
      for (int64_t j = g0; j < g1; j += MR) {
        for (int64_t s = 0; s < panels; ++s) {
          ks.ct(pr.k, pr.b + j * pr.ldb, pr.ldb, a_pack + s * NR * pr.k,
                pr.c + s * NR * pr.ldc + j, pr.ldc, std::min(MR, g1 - j),
                std::min(NR, pr.m - s * NR), pr.alpha, pr.beta);
        }
      }
      finish_block(pr, 0, g0, pr.m, g1 - g0);
    }
  });
}

// BLIS's loop nest on one thread; with b_direct, full NR slivers of B are read in place (B not
// transposed) and only a last partial sliver is packed.
template <class T>
void packed_serial(const KernelSet<T>& ks, const Problem<T>& pr, bool b_direct) {
  const int64_t MR = ks.mr, NR = ks.nr;
  const int64_t mc = balanced_block(pr.m, ks.mc, MR);
  const int64_t kc = balanced_block(pr.k, ks.kc, 1);  // depends on k alone: fixes the rounding
  const int64_t nc = balanced_block(pr.n, ks.nc, NR);
  const MicroKernel<T> tile = pr.stream_c ? ks.tile_stream : ks.tile;
  PackBuffers<T>& buffers = pack_buffers<T>();
  T* a_pack = PackBuffers<T>::get(buffers.a_store, size_t(mc * kc));
  T* b_pack = PackBuffers<T>::get(buffers.b_store, size_t(round_up(nc, NR) * kc));

  for (int64_t jc = 0; jc < pr.n; jc += nc) {
    const int64_t ncur = std::min(nc, pr.n - jc);
    const int64_t slivers = ceil_div(ncur, NR);
    const int64_t first_packed = b_direct ? (ncur % NR ? slivers - 1 : slivers) : 0;
    for (int64_t pc = 0; pc < pr.k; pc += kc) {
      const int64_t kcur = std::min(kc, pr.k - pc);
      const T beta = pc == 0 ? pr.beta : T(1);
      for (int64_t ic = 0; ic < pr.m; ic += mc) {
        const int64_t rows = std::min(mc, pr.m - ic);
        for (int64_t i = 0; i < rows; i += MR) {
          pack_a_panel(ks.pack, a_pack + i * kcur, pr.a, pr.lda, pr.trans_a, ic + i,
                       std::min(MR, rows - i), pc, kcur, MR);
        }
        for (int64_t s = 0; s < slivers; ++s) {
          const int64_t j0 = jc + s * NR, cols = std::min(NR, ncur - s * NR);
          const bool direct = s < first_packed;
          if (!direct && ic == 0) {
            // Each B sliver is packed just before its first use, so the first A block reads it
            // from L1 while it is fresh; later A blocks find it in L2.
            pack_b_panel(ks.pack, b_pack + s * NR * kcur, pr.b, pr.ldb, pr.trans_b, pc, kcur,
                         j0, cols, NR);
          }
          const T* bp = direct ? pr.b + pc * pr.ldb + j0 : b_pack + s * NR * kcur;
          const int64_t b_step = direct ? pr.ldb : NR;
          for (int64_t i = 0; i < rows; i += MR) {
            tile(kcur, a_pack + i * kcur, bp, b_step, pr.c + (ic + i) * pr.ldc + j0, pr.ldc,
                 std::min(MR, rows - i), cols, pr.alpha, beta);
          }
          // The epilogue takes kEpilogueSlivers slivers at a time: rows long enough for its
          // loops to run at vector speed, a block small enough to still sit in L2.
          if (pc + kcur == pr.k && ((s + 1) % kEpilogueSlivers == 0 || s + 1 == slivers)) {
            const int64_t first = s / kEpilogueSlivers * kEpilogueSlivers;
            finish_block(pr, ic, jc + first * NR, rows, j0 + cols - (jc + first * NR));
          }
        }
      }
    }
  }
  if (pr.stream_c) fence_streamed_stores();
}

// One row of C (m == 1, B not transposed): the row kernel streams B's rows as they lie, with
// enough independent accumulators to hide the FMA latency that a 1-row micro-kernel cannot.
// Threads take column chunks.
template <class T>
void gemm_row_path(const KernelSet<T>& ks, const Problem<T>& pr, bool parallel) {
  constexpr int64_t kUnit = 64;  // whole 8-vector blocks of the row kernel, float or double
  const int64_t parts = parallel ? std::min<int64_t>(active_threads(), ceil_div(pr.n, kUnit)) : 1;
  const int64_t cols = round_up(ceil_div(pr.n, parts), kUnit);
  const int64_t a_step = pr.trans_a ? pr.lda : 1;
  run_tasks(ceil_div(pr.n, cols), parts > 1, [&](int64_t t) {
    const int64_t j0 = t * cols, width = std::min(cols, pr.n - j0);
    ks.row(pr.k, width, pr.a, a_step, pr.b + j0, pr.ldb, pr.c + j0, pr.alpha, pr.beta);
    finish_block(pr, 0, j0, 1, width);
  });
}

// Small k, B not transposed: each row of C is one call of the row kernel, reading row i of op(A)
// and B (k x n, small) in place, so nothing is packed and C is written once, row by row. Threads
// take chunks of whole rows; a row is computed the same way whichever chunk holds it.
template <class T>
void gemm_small_k_path(const KernelSet<T>& ks, const Problem<T>& pr, bool parallel) {
  const int64_t rows = std::max<int64_t>(1, kSmallKChunkBytes / (pr.n * int64_t(sizeof(T))));
  const int64_t a_step = pr.trans_a ? pr.lda : 1;
  const RowKernel<T> row = pr.stream_c ? ks.row_stream : ks.row;
  run_tasks(ceil_div(pr.m, rows), parallel, [&](int64_t t) {
    const int64_t i0 = t * rows, i1 = std::min(pr.m, i0 + rows);
    for (int64_t i = i0; i < i1; ++i) {
      row(pr.k, pr.n, pr.a + (pr.trans_a ? i : i * pr.lda), a_step, pr.b, pr.ldb,
          pr.c + i * pr.ldc, pr.alpha, pr.beta);
    }
    if (pr.stream_c) fence_streamed_stores();
    finish_block(pr, i0, 0, i1 - i0, pr.n);
  });
}

// The packed path on several threads: C is cut into one block per thread, along m or n, and each
// thread runs packed_serial on its block with its own packing buffers. Nothing is shared, so the
// threads never wait for each other inside the call (a barrier costs a whole time slice when
// another process holds the other core). The cost is that each thread packs its own copy of the
// operand along the uncut dimension, so the cut goes across the dimension whose operand is
// smaller: cutting m duplicates B (k x n), cutting n duplicates A (m x k). A transposed A (a
// weight gradient dZ^T X) is cut along m whatever the sizes: each thread then writes whole rows
// of C, one contiguous half, which measured faster inside training steps of the MLP (2 threads,
// Zen 4: the gradient of Linear(784, 512) 4-5% faster at batch 32, 128 and 512, the step 1-2.5%).
template <class T>
void gemm_packed_path(const KernelSet<T>& ks, const Problem<T>& pr, bool parallel,
                      bool b_direct) {
  const int64_t threads = parallel ? active_threads() : 1;
  const bool cut_rows = !b_direct && (pr.m > pr.n || pr.trans_a);
  const int64_t unit = cut_rows ? ks.mr : ks.nr;
  const int64_t units = ceil_div(cut_rows ? pr.m : pr.n, unit);
  const int64_t parts = std::min(threads, units);
  if (parts <= 1) {
    packed_serial(ks, pr, b_direct);
    return;
  }
  run_tasks(parts, true, [&](int64_t t) {
    const int64_t u0 = t * units / parts, u1 = (t + 1) * units / parts;
    if (cut_rows) {
      // Equal shares of rows (a short row panel each) rather than whole panels, as on the ct path.
      const int64_t i0 = t * pr.m / parts, i1 = (t + 1) * pr.m / parts;
      packed_serial(ks, pr.part(i0, i1 - i0, 0, pr.n), b_direct);
    } else {
      const int64_t j0 = u0 * unit, j1 = std::min(pr.n, u1 * unit);
      packed_serial(ks, pr.part(0, pr.m, j0, j1 - j0), b_direct);
    }
  });
}

// Whether a product on a path with a streaming kernel should write C past the cache: C is large,
// not read (beta 0) and not handed to an epilogue, which would read it back at once.
template <class T>
bool worth_streaming(const Problem<T>& pr, bool has_kernel) {
  return has_kernel && !pr.epilogue && pr.beta == T(0) &&
         pr.m * pr.n * int64_t(sizeof(T)) >= stream_min_bytes().load(std::memory_order_relaxed);
}

// Runs path(problem) with streaming stores. Stores stream only from cache-line aligned rows; when
// every row of C starts the same distance off a line (numpy aligns arrays to 16 bytes only), the
// columns up to the first line boundary are a product of their own, stored normally, and the
// rest starts on a line.
template <class T, class Path>
void run_streaming(const Problem<T>& pr, Path&& path) {
  const int64_t size = int64_t(sizeof(T)), line = 64;
  const int64_t offset = int64_t(reinterpret_cast<std::uintptr_t>(pr.c) % line);
  const int64_t head = offset % size == 0 && (pr.ldc * size) % line == 0
                           ? std::min(pr.n, (line - offset) % line / size)
                           : 0;
  if (head > 0) path(pr.part(0, pr.m, 0, head));
  Problem<T> rest = pr.part(0, pr.m, head, pr.n - head);
  rest.stream_c = true;
  if (rest.n > 0) path(rest);
}

template <class T>
void gemm_run(const KernelSet<T>& ks, const Problem<T>& pr) {
  if (pr.m <= 0 || pr.n <= 0) return;
  if (pr.k <= 0 || pr.alpha == T(0)) {
    scale_only(pr);
    return;
  }
  // Only whether to use threads depends on the thread count, never which path runs.
  const bool threads = active_threads() > 1;
  const int64_t size = int64_t(sizeof(T));
  const bool parallel = threads && pr.m * pr.n * pr.k > kParallelMinMNK;
  const bool streams_much = pr.n * pr.k * size >= kParallelMinStreamBytes;
  if (!pr.trans_a && pr.trans_b && pr.m <= ks.dot_max_rows) {
    gemm_dot_path(ks, pr, parallel || (threads && streams_much));
  } else if (ks.ct && pr.trans_b && pr.m <= ks.ct_max_rows &&
             round_up(pr.m, ks.ct_nr) * pr.k * size <= kCtMaxPackBytes) {
    gemm_ct_path(ks, pr, parallel || (threads && streams_much));
  } else if (!pr.trans_b && pr.m == 1) {
    gemm_row_path(ks, pr, parallel || (threads && streams_much));
  } else if (!pr.trans_b && pr.k <= ks.small_k_max && pr.n * size >= kSmallKMinRowBytes) {
    const bool parallel_rows = threads && pr.m * pr.n * size >= kParallelMinWriteBytes;
    auto path = [&](const Problem<T>& p) { gemm_small_k_path(ks, p, parallel_rows); };
    if (worth_streaming(pr, ks.row_stream != nullptr)) {
      run_streaming(pr, path);
    } else {
      path(pr);
    }
  } else {
    const bool b_direct = !pr.trans_b && pr.m <= kDirectMaxRows;
    auto path = [&](const Problem<T>& p) { gemm_packed_path(ks, p, parallel, b_direct); };
    if (pr.k <= ks.kc && worth_streaming(pr, ks.tile_stream != nullptr)) {
      run_streaming(pr, path);  // one k block: no later block adds into C
    } else {
      path(pr);
    }
  }
}

template <class T>
const KernelSet<T>& kernel_set(GemmKernels which) {
  static const KernelSet<T> avx512 = avx512_kernels<T>(), avx2 = avx2_kernels<T>(),
                            portable = portable_kernels<T>();
  switch (which) {
    case GemmKernels::avx512: return avx512;
    case GemmKernels::avx2: return avx2;
    default: return portable;
  }
}

template <class T>
const KernelSet<T>& best_kernels() {
  static const KernelSet<T>& kernels = kernel_set<T>(
      cpu_has_avx512f() ? GemmKernels::avx512
                        : cpu_has_avx2_fma() ? GemmKernels::avx2 : GemmKernels::portable);
  return kernels;
}

}  // namespace

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  gemm_run(best_kernels<T>(),
           Problem<T>{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nullptr});
}

template <class T>
void gemm_fused(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc,
                const GemmEpilogue<T>& epilogue) {
  gemm_run(best_kernels<T>(),
           Problem<T>{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &epilogue});
}

int64_t set_gemm_stream_min_bytes(int64_t bytes) {
  return stream_min_bytes().exchange(bytes);
}

bool gemm_kernels_available(GemmKernels which) {
  switch (which) {
    case GemmKernels::avx512: return cpu_has_avx512f();
    case GemmKernels::avx2: return cpu_has_avx2_fma();
    default: return true;
  }
}

template <class T>
void gemm_with(GemmKernels which, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
               T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
               int64_t ldc) {
  if (!gemm_kernels_available(which)) {
    throw std::invalid_argument("gemm_with: this CPU cannot run the requested kernel set");
  }
  gemm_run(kernel_set<T>(which),
           Problem<T>{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nullptr});
}

#define FASTNN_INSTANTIATE_GEMM(T)                                                           \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                        int64_t, T, T*, int64_t);                                            \
  template void gemm_fused<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,   \
                              const T*, int64_t, T, T*, int64_t, const GemmEpilogue<T>&);    \
  template void gemm_with<T>(GemmKernels, bool, bool, int64_t, int64_t, int64_t, T, const T*, \
                             int64_t, const T*, int64_t, T, T*, int64_t);
FASTNN_INSTANTIATE_GEMM(float)
FASTNN_INSTANTIATE_GEMM(double)
#undef FASTNN_INSTANTIATE_GEMM

}  // namespace fastnn
