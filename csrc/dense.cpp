// Dense layer kernels (contracts in dense.h). The forward hands the bias + activation to the
// GEMM as an epilogue, so each block of Y is finished while the GEMM has it in cache; the
// backward computes dZ in one elementwise pass and then runs two GEMMs on it.
#include "dense.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "activation_math.h"
#include "gemm.h"
#include "threading.h"

namespace fastnn {
namespace {

// Rough cost of one activation (forward or derivative) in work units, for parallel_for.
int64_t act_cost(Act act) {
  switch (act) {
    case Act::identity:
    case Act::relu:
    case Act::leaky_relu: return 1;
    default: return 16;  // exp, tanh, erf
  }
}

// ----- forward ----------------------------------------------------------------------------------

template <class T>
struct ForwardEpilogue {
  const T* bias;  // (OUT) or null
  T* z;           // (N, OUT) or null
  int64_t out;
  Act act;
  T alpha;
};

// Finishes one block of Y in place: + bias, copy to Z, activation.
template <class T>
void finish_forward_block(const void* ctx, T* y, int64_t ldy, int64_t row0, int64_t col0,
                          int64_t rows, int64_t cols) {
  const auto& e = *static_cast<const ForwardEpilogue<T>*>(ctx);
  with_act(e.act, [&](auto tag) {
    constexpr Act K = decltype(tag)::value;
    for (int64_t i = 0; i < rows; ++i) {
      T* yr = y + i * ldy;
      if (e.bias) {
        const T* br = e.bias + col0;
        for (int64_t j = 0; j < cols; ++j) yr[j] += br[j];
      }
      if (e.z) std::copy(yr, yr + cols, e.z + (row0 + i) * e.out + col0);
      if (K != Act::identity) {
        for (int64_t j = 0; j < cols; ++j) yr[j] = act_forward(K, yr[j], e.alpha);
      }
    }
  });
}

// ----- backward ---------------------------------------------------------------------------------

// dZ = dY * act'(.) over `count` elements (see dense.h for which of Y / Z is read).
template <class T>
void activation_grad(T* dz, const T* dy, const T* y, const T* z, int64_t count, Act act,
                     T alpha) {
  const bool from_output = act_derivative_from_output(act, double(alpha));
  // When the derivative needs the pre-activation only, y may be absent: the formulas for those
  // activations never read it, so z stands in for it.
  const T* xs = from_output ? y : z;
  const T* ys = y ? y : z;
  with_act(act, [&](auto tag) {
    constexpr Act K = decltype(tag)::value;
    parallel_for(count, 1 << 14, act_cost(K), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dz[i] = dy[i] * act_derivative(K, xs[i], ys[i], alpha);
    });
  });
}

void check_backward_inputs(Act act, double alpha, const void* y, const void* z, int64_t count) {
  if (act == Act::identity || count == 0) return;
  if (act_derivative_from_output(act, alpha) ? y == nullptr : z == nullptr) {
    throw std::invalid_argument(std::string("dense_backward: the gradient of ") + act_name(act) +
                                (act_derivative_from_output(act, alpha)
                                     ? " needs the output Y"
                                     : " needs the pre-activation Z"));
  }
}

// Scratch for dZ, kept per calling thread so a training loop does not allocate every step.
template <class T>
T* dz_scratch(size_t count) {
  thread_local std::vector<T> store;
  if (store.size() < count) store.resize(count);
  return store.data();
}

// Rows per block of the column sums: partial sums of fixed row blocks are added in block order,
// so tall inputs (conv activations) parallelise over rows yet sum the same way on any thread
// count.
constexpr int64_t kBiasRowBlock = 512;
constexpr int64_t kBiasColChunk = 256;

}  // namespace

template <class T>
void dense_forward(T* y, T* z, const T* x, const T* w, const T* b, int64_t n, int64_t in,
                   int64_t out, Act act, T alpha) {
  if (!b && !z && act == Act::identity) {
    gemm<T>(false, true, n, out, in, T(1), x, in, w, in, T(0), y, out);
    return;
  }
  const ForwardEpilogue<T> ctx{b, z, out, act, alpha};
  GemmEpilogue<T> epilogue;
  epilogue.apply = &finish_forward_block<T>;
  epilogue.ctx = &ctx;
  gemm_fused<T>(false, true, n, out, in, T(1), x, in, w, in, T(0), y, out, epilogue);
}

template <class T>
void dense_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                    const T* z, int64_t n, int64_t in, int64_t out, Act act, T alpha,
                    bool accumulate) {
  check_backward_inputs(act, double(alpha), y, z, n * out);
  const T* dz = dy;
  if (act != Act::identity && n * out > 0) {
    T* buf = dz_scratch<T>(size_t(n * out));
    activation_grad(buf, dy, y, z, n * out, act, alpha);
    dz = buf;
  }
  const T beta = accumulate ? T(1) : T(0);
  if (db) bias_grad(db, dz, n, out, accumulate);
  if (dw) gemm<T>(true, false, out, in, n, T(1), dz, out, x, in, beta, dw, in);
  if (dx) gemm<T>(false, false, n, in, out, T(1), dz, out, w, in, T(0), dx, in);
}

template <class T>
void bias_add(T* y, const T* b, int64_t rows, int64_t cols) {
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(cols, 1));
  parallel_for(rows, grain, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      T* yr = y + i * cols;
      for (int64_t j = 0; j < cols; ++j) yr[j] += b[j];
    }
  });
}

template <class T>
void bias_grad(T* db, const T* dy, int64_t rows, int64_t cols, bool accumulate) {
  if (cols <= 0) return;
  const int64_t blocks = std::max<int64_t>(1, (rows + kBiasRowBlock - 1) / kBiasRowBlock);
  const int64_t chunks = (cols + kBiasColChunk - 1) / kBiasColChunk;
  std::vector<double> partial(size_t(blocks * cols), 0.0);
  // Task (block, chunk) sums rows of one block for one chunk of columns, in row order. Its cost
  // counts the rows it really has: a batch of 32 is not worth waking a second thread for.
  const int64_t task_cost = std::min(rows, kBiasRowBlock) * kBiasColChunk;
  parallel_for(blocks * chunks, 1, task_cost, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t blk = t / chunks, c0 = (t % chunks) * kBiasColChunk;
      const int64_t c1 = std::min(cols, c0 + kBiasColChunk);
      const int64_t r1 = std::min(rows, (blk + 1) * kBiasRowBlock);
      double* acc = partial.data() + blk * cols;
      for (int64_t i = blk * kBiasRowBlock; i < r1; ++i) {
        const T* row = dy + i * cols;
        for (int64_t j = c0; j < c1; ++j) acc[j] += double(row[j]);
      }
    }
  });
  for (int64_t j = 0; j < cols; ++j) {
    double s = accumulate ? double(db[j]) : 0.0;
    for (int64_t blk = 0; blk < blocks; ++blk) s += partial[size_t(blk * cols + j)];
    db[j] = T(s);
  }
}

// ----- references -------------------------------------------------------------------------------

template <class T>
void dense_forward_reference(T* y, T* z, const T* x, const T* w, const T* b, int64_t n,
                             int64_t in, int64_t out, Act act, T alpha) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      T s = 0;
      for (int64_t p = 0; p < in; ++p) s += x[i * in + p] * w[o * in + p];
      if (b) s += b[o];
      if (z) z[i * out + o] = s;
      y[i * out + o] = act_forward(act, s, alpha);
    }
  }
}

template <class T>
void dense_backward_reference(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                              const T* y, const T* z, int64_t n, int64_t in, int64_t out,
                              Act act, T alpha, bool accumulate) {
  check_backward_inputs(act, double(alpha), y, z, n * out);
  const bool from_output = act_derivative_from_output(act, double(alpha));
  std::vector<T> dz(dy, dy + n * out);
  for (int64_t e = 0; act != Act::identity && e < n * out; ++e) {
    const T xv = from_output ? y[e] : z[e];
    const T yv = y ? y[e] : z[e];
    dz[e] = dy[e] * act_derivative(act, xv, yv, alpha);
  }
  if (dw) {
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t p = 0; p < in; ++p) {
        T s = 0;
        for (int64_t i = 0; i < n; ++i) s += dz[i * out + o] * x[i * in + p];
        dw[o * in + p] = accumulate ? dw[o * in + p] + s : s;
      }
    }
  }
  if (db) bias_grad_reference(db, dz.data(), n, out, accumulate);
  if (dx) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t p = 0; p < in; ++p) {
        T s = 0;
        for (int64_t o = 0; o < out; ++o) s += dz[i * out + o] * w[o * in + p];
        dx[i * in + p] = s;
      }
    }
  }
}

template <class T>
void bias_add_reference(T* y, const T* b, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) y[i * cols + j] += b[j];
  }
}

template <class T>
void bias_grad_reference(T* db, const T* dy, int64_t rows, int64_t cols, bool accumulate) {
  for (int64_t j = 0; j < cols; ++j) {
    double s = 0;
    for (int64_t i = 0; i < rows; ++i) s += double(dy[i * cols + j]);
    db[j] = accumulate ? T(double(db[j]) + s) : T(s);
  }
}

#define FASTNN_INSTANTIATE_DENSE(T)                                                          \
  template void dense_forward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,     \
                                 int64_t, Act, T);                                           \
  template void dense_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                  const T*, int64_t, int64_t, int64_t, Act, T, bool);        \
  template void bias_add<T>(T*, const T*, int64_t, int64_t);                                 \
  template void bias_grad<T>(T*, const T*, int64_t, int64_t, bool);                          \
  template void dense_forward_reference<T>(T*, T*, const T*, const T*, const T*, int64_t,    \
                                           int64_t, int64_t, Act, T);                        \
  template void dense_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*,        \
                                            const T*, const T*, int64_t, int64_t, int64_t,   \
                                            Act, T, bool);                                   \
  template void bias_add_reference<T>(T*, const T*, int64_t, int64_t);                       \
  template void bias_grad_reference<T>(T*, const T*, int64_t, int64_t, bool);
FASTNN_INSTANTIATE_DENSE(float)
FASTNN_INSTANTIATE_DENSE(double)
#undef FASTNN_INSTANTIATE_DENSE

}  // namespace fastnn
