// The fast GEMM (every kernel set this CPU can run, every path) against the reference triple loop.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "gemm.h"
#include "threading.h"

namespace fastnn {
namespace {

struct Case {
  const char* name;
  int64_t m, n, k;
  bool trans_a, trans_b;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // extra elements per row: lda > its minimum
  double alpha = 1.0, beta = 0.0;
};

// What a check runs: gemm() itself (the kernel set this CPU prefers), or one named kernel set.
struct Impl {
  const char* name;
  bool best;
  GemmKernels set;
};

const Impl kBest{"best", true, GemmKernels::portable};
const Impl kPortable{"portable", false, GemmKernels::portable};

// gemm() and every kernel set this CPU can run (on an AVX-512 machine the AVX2 set is tested too).
std::vector<Impl> runnable_impls() {
  std::vector<Impl> impls{kBest};
  if (gemm_kernels_available(GemmKernels::avx512)) {
    impls.push_back({"avx512", false, GemmKernels::avx512});
  }
  if (gemm_kernels_available(GemmKernels::avx2)) {
    impls.push_back({"avx2", false, GemmKernels::avx2});
  }
  impls.push_back(kPortable);
  return impls;
}

template <class T>
void call(const Impl& impl, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (impl.best) {
    gemm<T>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    gemm_with<T>(impl.set, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

template <class T>
std::vector<T> random_values(size_t count, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<T> v(count);
  for (auto& x : v) x = T(dist(gen));
  return v;
}

template <class T>
struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<T> a, b, c0;
};

template <class T>
Operands<T> make_operands(const Case& cs, uint32_t seed) {
  Operands<T> op;
  const int64_t a_rows = cs.trans_a ? cs.k : cs.m, a_cols = cs.trans_a ? cs.m : cs.k;
  const int64_t b_rows = cs.trans_b ? cs.n : cs.k, b_cols = cs.trans_b ? cs.k : cs.n;
  op.lda = a_cols + cs.pad_a;
  op.ldb = b_cols + cs.pad_b;
  op.ldc = cs.n + cs.pad_c;
  op.a = random_values<T>(size_t(std::max<int64_t>(a_rows * op.lda, 1)), seed);
  op.b = random_values<T>(size_t(std::max<int64_t>(b_rows * op.ldb, 1)), seed + 1);
  op.c0 = random_values<T>(size_t(std::max<int64_t>(cs.m * op.ldc, 1)), seed + 2);
  if (cs.beta == 0.0) {
    // C must not be read when beta == 0: poison it so any read shows up as NaN.
    for (auto& x : op.c0) x = std::numeric_limits<T>::quiet_NaN();
  }
  return op;
}

template <class T>
std::vector<T> run(const Impl& impl, const Case& cs, const Operands<T>& op) {
  std::vector<T> c = op.c0;
  call<T>(impl, cs.trans_a, cs.trans_b, cs.m, cs.n, cs.k, T(cs.alpha), op.a.data(), op.lda,
          op.b.data(), op.ldb, T(cs.beta), c.data(), op.ldc);
  return c;
}

template <class T>
void check_case(const Case& cs, const Impl& impl) {
  SCOPED_TRACE(std::string(cs.name) + " [" + impl.name + "]" +
               (sizeof(T) == 4 ? " float" : " double"));
  const Operands<T> op = make_operands<T>(cs, 1234);
  std::vector<T> expected = op.c0;
  gemm_reference<T>(cs.trans_a, cs.trans_b, cs.m, cs.n, cs.k, T(cs.alpha), op.a.data(), op.lda,
                    op.b.data(), op.ldb, T(cs.beta), expected.data(), op.ldc);

  set_num_threads(1);
  const std::vector<T> one = run(impl, cs, op);
  set_num_threads(2);
  const std::vector<T> two = run(impl, cs, op);

  // Products of values in [-1, 1] summed over k: rounding error grows at most like k * eps.
  const double tol = 4.0 * std::numeric_limits<T>::epsilon() * double(cs.k + 2) *
                     (std::abs(cs.alpha) + std::abs(cs.beta) + 1.0);
  double worst = 0.0;
  int64_t worst_at = -1;
  for (int64_t i = 0; i < cs.m; ++i) {
    for (int64_t j = 0; j < op.ldc; ++j) {
      const int64_t at = i * op.ldc + j;
      if (j >= cs.n) {  // padding of C must be left alone
        ASSERT_TRUE(std::memcmp(&one[at], &op.c0[at], sizeof(T)) == 0) << "padding written at "
                                                                          << at;
        continue;
      }
      const double diff = std::abs(double(one[at]) - double(expected[at]));
      if (!(diff <= worst)) {  // also catches NaN
        worst = std::isnan(diff) ? std::numeric_limits<double>::infinity() : diff;
        worst_at = at;
      }
    }
  }
  EXPECT_LE(worst, tol) << "largest difference " << worst << " at element " << worst_at;
  ASSERT_EQ(one.size(), two.size());
  EXPECT_TRUE(std::memcmp(one.data(), two.data(), one.size() * sizeof(T)) == 0)
      << "1 and 2 threads differ";
}

const Case kCases[] = {
    {"m_eq_1", 1, 37, 29, false, false},
    {"m_eq_1_trans_b", 1, 512, 784, false, true},
    {"m_eq_1_trans_a", 1, 40, 33, true, false},
    {"m_eq_1_beta_strided", 1, 70, 30, false, false, 2, 5, 3, 1.5, 0.5},
    {"m_eq_1_wider_than_row_chunk", 1, 1100, 7, false, false},
    {"n_eq_1", 45, 1, 33, false, false},
    {"k_eq_1", 13, 21, 1, false, false},
    {"n_below_tile", 7, 5, 19, false, false},
    {"n_above_tile", 7, 17, 19, false, false},
    {"n_two_tiles_and_a_bit", 13, 35, 8, false, true},
    {"n_around_wide_tile", 13, 65, 40, false, false},         // AVX-512 float: 32 columns
    {"n_wide_tiles_direct_b", 20, 64, 50, false, false},      // whole slivers read in place
    {"n_wide_tiles_direct_b_edge", 20, 97, 50, false, false},
    {"m_below_tile", 5, 40, 19, false, false},
    {"m_above_tile", 7, 40, 19, false, false},
    {"k_not_multiple_of_unroll", 12, 32, 23, false, false},
    {"k_not_multiple_of_lanes_dot", 9, 11, 13, false, true},
    {"small_m_direct_b", 16, 100, 70, false, false},
    {"small_m_direct_b_edge", 3, 33, 70, true, false},
    {"small_m_dot", 16, 77, 70, false, true},
    {"dot_m_not_multiple_of_tile", 11, 23, 40, false, true},
    {"ct_batch_32_linear", 32, 100, 70, false, true},           // C^T tiles, B in place
    {"ct_just_above_dot", 13, 50, 64, false, true},
    {"ct_rows_not_multiple_of_panel", 45, 37, 29, false, true},  // partial tiles both ways
    {"ct_one_row_of_b", 20, 1, 40, false, true},
    {"ct_trans_a", 17, 26, 33, true, true},
    {"ct_strided_beta", 24, 30, 19, false, true, 3, 5, 2, 1.5, 0.5},
    {"ct_many_panels", 200, 50, 300, false, true},
    {"ct_above_max_rows", 257, 50, 30, false, true},            // packed path again
    {"ct_panels_above_limit", 20, 8, 9000, false, true},        // packed path again
    {"trans_a", 33, 29, 31, true, false},
    {"trans_b", 33, 29, 31, false, true},
    {"trans_both", 33, 29, 31, true, true},
    {"strided_a", 20, 30, 25, false, false, 3},
    {"strided_a_trans", 20, 30, 25, true, true, 5},
    {"strided_b", 20, 30, 25, false, false, 0, 7},
    {"strided_b_trans", 4, 30, 25, false, true, 0, 7},
    {"strided_c", 20, 30, 25, false, false, 0, 0, 9},
    {"strided_all_small_m", 3, 30, 25, false, false, 2, 3, 4},
    {"beta_one", 31, 37, 41, false, false, 0, 0, 0, 1.0, 1.0},
    {"beta_half_alpha_two", 31, 37, 41, true, false, 0, 0, 0, 2.0, 0.5},
    {"beta_one_dot", 4, 37, 41, false, true, 0, 0, 0, 1.0, 1.0},
    {"alpha_zero", 5, 6, 7, false, false, 0, 0, 0, 0.0, 0.5},
    {"k_above_block", 20, 20, 600, false, false, 0, 0, 0, 1.0, 1.0},
    {"large", 300, 517, 259, false, false},
    {"large_trans_b", 300, 517, 259, false, true},
    {"large_trans_a", 259, 300, 517, true, false, 0, 0, 0, 1.0, 1.0},
    {"n_above_nc_block", 20, 4200, 9, false, true},
    {"m_above_mc_block", 400, 24, 30, false, false},
    {"m_eq_1_small_k_registers", 1, 300, 5, true, false},
    {"m_eq_1_small_k_tail", 1, 37, 3, false, false, 0, 0, 0, 2.0, 1.0},
    {"m_eq_1_streams_much_row", 1, 784, 512, false, false},  // row path, parallel by bytes
    {"small_m_streams_much_dot", 3, 512, 784, false, true},  // dot path, parallel by bytes
    {"small_k_outer_product", 512, 784, 1, true, false},     // dW of a layer at batch 1
    {"small_k_accumulate", 256, 512, 4, true, false, 0, 0, 0, 1.0, 1.0},
    {"small_k_strided", 7, 300, 3, false, false, 2, 5, 3, 1.5, 0.5},
    {"small_k_strided_trans_a", 9, 260, 6, true, false, 4, 1, 2, -0.5, 0.0},
    {"small_k_above_limit", 64, 300, 8, true, false},
};

class GemmTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = get_num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

TEST_F(GemmTest, EveryKernelSetMatchesReferenceFloat) {
  for (const Impl& impl : runnable_impls()) {
    for (const Case& cs : kCases) check_case<float>(cs, impl);
  }
}

TEST_F(GemmTest, EveryKernelSetMatchesReferenceDouble) {
  for (const Impl& impl : runnable_impls()) {
    for (const Case& cs : kCases) check_case<double>(cs, impl);
  }
}

TEST_F(GemmTest, UnavailableKernelSetIsRefused) {
  float a = 1.0f, b = 1.0f, c = 0.0f;
  for (GemmKernels set : {GemmKernels::avx512, GemmKernels::avx2}) {
    if (gemm_kernels_available(set)) continue;
    EXPECT_THROW(gemm_with<float>(set, false, false, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1),
                 std::invalid_argument);
  }
  EXPECT_TRUE(gemm_kernels_available(GemmKernels::portable));
}

// The small-k path (each row of C one row-kernel call, B read in place) and the shapes around its
// limits: k up to the float and double limits and past them, rows of C just below and above
// its minimum length, n around the vector and tile widths, C read or not.
template <class T>
void check_small_k_grid(const Impl& impl) {
  for (int64_t m : {2, 7, 512}) {
    for (int64_t n : {1, 7, 15, 16, 17, 127, 128, 255, 256, 784}) {
      for (int64_t k = 1; k <= 9; ++k) {
        for (bool trans_a : {false, true}) {
          for (double beta : {0.0, 1.0}) {
            const std::string name = "small_k m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                     " k=" + std::to_string(k) + (trans_a ? " trans_a" : "") +
                                     (beta == 0.0 ? " beta_zero" : " beta_one");
            const double alpha = beta == 0.0 ? 1.0 : 0.75;
            check_case<T>({name.c_str(), m, n, k, trans_a, false, 0, 0, 0, alpha, beta}, impl);
          }
        }
      }
    }
  }
}

TEST_F(GemmTest, SmallKShapesFloat) {
  for (const Impl& impl : runnable_impls()) check_small_k_grid<float>(impl);
}

TEST_F(GemmTest, SmallKShapesDouble) {
  for (const Impl& impl : runnable_impls()) check_small_k_grid<double>(impl);
}

// Non-temporal stores of C (the streaming kernels of the packed and small-k paths, forced on here
// for any size of C) change where bytes go, never their values: the result equals that of cached
// stores bit for bit, wherever C starts relative to a cache line, with full and partial tiles,
// one k block or several, C read or not (NaN in C at beta 0 must not leak), on 1 and 2 threads.
// Padding columns of C stay untouched.
template <class T>
void check_streaming(const Case& cs, const Impl& impl) {
  SCOPED_TRACE(std::string(cs.name) + " [" + impl.name + "]" +
               (sizeof(T) == 4 ? " float" : " double"));
  const Operands<T> op = make_operands<T>(cs, 99);
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  std::vector<T> store(op.c0.size() + 2 * size_t(kLine));
  const auto addr = reinterpret_cast<std::uintptr_t>(store.data());
  T* line_start = store.data() + int64_t((64 - addr % 64) % 64) / int64_t(sizeof(T));
  for (int64_t shift : {int64_t(0), int64_t(1), kLine / 2, kLine - 1}) {
    T* c = line_start + shift;
    std::vector<T> results[2][2];  // [streamed][threads - 1]
    for (int streamed = 0; streamed < 2; ++streamed) {
      const int64_t saved = set_gemm_stream_min_bytes(
          streamed ? 0 : std::numeric_limits<int64_t>::max());
      for (int threads = 1; threads <= 2; ++threads) {
        set_num_threads(threads);
        std::copy(op.c0.begin(), op.c0.end(), c);
        call<T>(impl, cs.trans_a, cs.trans_b, cs.m, cs.n, cs.k, T(cs.alpha), op.a.data(),
                op.lda, op.b.data(), op.ldb, T(cs.beta), c, op.ldc);
        results[streamed][threads - 1].assign(c, c + op.c0.size());
      }
      set_gemm_stream_min_bytes(saved);
    }
    const size_t bytes = op.c0.size() * sizeof(T);
    for (int threads = 1; threads <= 2; ++threads) {
      EXPECT_TRUE(std::memcmp(results[1][threads - 1].data(), results[0][0].data(), bytes) == 0)
          << "streamed stores differ from cached ones: shift " << shift << ", " << threads
          << " threads";
    }
    EXPECT_TRUE(std::memcmp(results[0][1].data(), results[0][0].data(), bytes) == 0);
    for (int64_t i = 0; i < cs.m; ++i) {
      for (int64_t j = 0; j < cs.n; ++j) {
        ASSERT_FALSE(std::isnan(results[1][0][size_t(i * op.ldc + j)])) << "C read at beta 0";
      }
    }
  }
}

const Case kStreamingCases[] = {
    {"weight_grad_batch_32", 512, 784, 32, true, false},
    {"partial_tiles", 97, 83, 20, false, true},
    {"k_one_block", 50, 96, 384, false, false},
    {"k_two_blocks", 40, 64, 400, false, false},
    {"beta_one", 60, 80, 16, true, false, 0, 0, 0, 1.0, 1.0},
    {"alpha_scaled", 30, 48, 24, false, true, 0, 0, 0, -2.0, 0.0},
    {"padded_c", 50, 64, 16, false, false, 0, 0, 16},
    {"padded_c_off_line", 50, 64, 16, false, false, 0, 0, 5},
    {"small_m_direct_b", 20, 256, 32, false, false},
    {"narrow", 24, 9, 30, true, false},
    {"small_k_weight_grad_batch_1", 512, 784, 1, true, false},  // small-k path from here on
    {"small_k_tail", 40, 300, 3, false, false},
    {"small_k_padded_c", 64, 256, 4, true, false, 0, 0, 7},
    {"small_k_beta_one", 64, 256, 2, true, false, 0, 0, 0, 1.0, 1.0},
};

TEST_F(GemmTest, StreamedStoresEqualCachedStoresFloat) {
  for (const Impl& impl : runnable_impls()) {
    for (const Case& cs : kStreamingCases) check_streaming<float>(cs, impl);
  }
}

TEST_F(GemmTest, StreamedStoresEqualCachedStoresDouble) {
  for (const Impl& impl : runnable_impls()) {
    for (const Case& cs : kStreamingCases) check_streaming<double>(cs, impl);
  }
}

TEST_F(GemmTest, LastLevelCacheSizeIsPlausible) {
  // 0 means unknown (no sysfs); otherwise at least a few KB and at most a few GB.
  const int64_t bytes = last_level_cache_bytes();
  EXPECT_TRUE(bytes == 0 || (bytes >= (int64_t(16) << 10) && bytes <= (int64_t(16) << 30)))
      << bytes;
}

TEST_F(GemmTest, ZeroSized) {
  for (const Impl& impl : runnable_impls()) {
    std::vector<float> a(12, 1.0f), b(12, 1.0f);
    std::vector<float> c(12, std::numeric_limits<float>::quiet_NaN());
    // m == 0 and n == 0 touch nothing.
    call<float>(impl, false, false, 0, 3, 4, 1.0f, a.data(), 4, b.data(), 3, 0.0f, c.data(),
                3);
    call<float>(impl, false, false, 3, 0, 4, 1.0f, a.data(), 4, b.data(), 1, 0.0f, c.data(),
                1);
    for (float x : c) EXPECT_TRUE(std::isnan(x));
    // k == 0: C = beta * C, and with beta == 0 C becomes zeros without being read.
    call<float>(impl, false, false, 3, 4, 0, 1.0f, a.data(), 1, b.data(), 4, 0.0f, c.data(),
                4);
    for (float x : c) EXPECT_EQ(x, 0.0f);
    std::vector<float> d(12, 2.0f);
    call<float>(impl, false, false, 3, 4, 0, 1.0f, a.data(), 1, b.data(), 4, 0.5f, d.data(),
                4);
    for (float x : d) EXPECT_EQ(x, 1.0f);
  }
}

TEST_F(GemmTest, KernelIsaIsReported) {
  const std::string isa = kernel_isa();
  EXPECT_TRUE(isa == "avx512f" || isa == "avx2+fma" || isa == "portable") << isa;
  EXPECT_EQ(isa == "avx512f", gemm_kernels_available(GemmKernels::avx512));
}

TEST_F(GemmTest, FusedEpilogueCoversEveryElementOnce) {
  // Counts how often the epilogue visits each element, over every path.
  struct Visits {
    std::vector<int>* hits;
    int64_t n;
  };
  const Case shapes[] = {{"dot", 5, 70, 30, false, true},
                         {"direct", 5, 70, 30, false, false},
                         {"packed", 100, 70, 30, false, false},
                         {"packed_many_slivers_and_blocks", 150, 300, 20, false, true},
                         {"row", 1, 300, 20, false, false},
                         {"small_k", 100, 300, 3, true, false},
                         {"small_k_parallel", 512, 784, 2, true, false},
                         {"k_eq_0", 4, 5, 0, false, false}};
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Case& cs : shapes) {
      SCOPED_TRACE(cs.name);
      const Operands<float> op = make_operands<float>(cs, 7);
      std::vector<float> c = op.c0;
      std::vector<int> hits(size_t(cs.m * cs.n), 0);
      Visits v{&hits, cs.n};
      GemmEpilogue<float> epi;
      epi.ctx = &v;
      epi.apply = [](const void* ctx, float*, int64_t, int64_t r0, int64_t c0, int64_t rows,
                     int64_t cols) {
        const auto* vis = static_cast<const Visits*>(ctx);
        for (int64_t i = r0; i < r0 + rows; ++i) {
          for (int64_t j = c0; j < c0 + cols; ++j) (*vis->hits)[size_t(i * vis->n + j)] += 1;
        }
      };
      gemm_fused<float>(cs.trans_a, cs.trans_b, cs.m, cs.n, cs.k, 1.0f, op.a.data(), op.lda,
                        op.b.data(), op.ldb, 0.0f, c.data(), op.ldc, epi);
      for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i], 1) << "element " << i;
    }
  }
}

}  // namespace
}  // namespace fastnn
