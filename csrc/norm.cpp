// Normalization kernels.
//
// Batch norm reduces each channel over N planes of S elements. Work is split by plane (n, c):
// each plane's partial sum is computed by one chunk, in double, and each channel then adds its
// N plane partials in sample order. Layer norm reduces its parameter gradients over rows in a
// fixed number of row blocks whose partials are added in block order. Neither split depends on
// the thread count.
#include "norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "threading.h"

namespace fastnn {
namespace {

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(work_per_item, 1));
}

// Fills out[plane] = f(plane) for the n*c planes in parallel, then returns the per-channel
// totals sum_n out[n*c + ch], added in sample order.
template <class F>
std::vector<double> per_channel_sums(int64_t n, int64_t c, int64_t s, F&& plane_sum) {
  std::vector<double> partial(static_cast<size_t>(n * c));
  parallel_for(n * c, grain_for(s), std::max<int64_t>(s, 1), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) partial[p] = plane_sum(p);
  });
  std::vector<double> total(static_cast<size_t>(c), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t ch = 0; ch < c; ++ch) total[ch] += partial[i * c + ch];
  }
  return total;
}

template <class T>
T param_or(const T* a, int64_t i, T fallback) {
  return a ? a[i] : fallback;
}

// Layer-norm parameter gradients are reduced over at most this many row blocks.
constexpr int64_t kMaxRowBlocks = 64;

}  // namespace

template <class T>
void batch_norm_forward_train(T* y, T* save_mean, T* save_invstd, T* running_mean,
                              T* running_var, const T* x, const T* gamma, const T* beta,
                              int64_t n, int64_t c, int64_t s, double eps, double momentum) {
  const double m = static_cast<double>(n * s);
  const std::vector<double> sums = per_channel_sums(n, c, s, [&](int64_t p) {
    const T* in = x + p * s;
    double acc = 0.0;
    for (int64_t i = 0; i < s; ++i) acc += static_cast<double>(in[i]);
    return acc;
  });
  std::vector<double> mean(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) mean[ch] = m > 0 ? sums[ch] / m : 0.0;
  const std::vector<double> squares = per_channel_sums(n, c, s, [&](int64_t p) {
    const T* in = x + p * s;
    const double mu = mean[p % c];
    double acc = 0.0;
    for (int64_t i = 0; i < s; ++i) {
      const double d = static_cast<double>(in[i]) - mu;
      acc += d * d;
    }
    return acc;
  });
  std::vector<T> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const double var = m > 0 ? squares[ch] / m : 0.0;
    const double invstd = 1.0 / std::sqrt(var + eps);
    save_mean[ch] = static_cast<T>(mean[ch]);
    save_invstd[ch] = static_cast<T>(invstd);
    const double g = gamma ? static_cast<double>(gamma[ch]) : 1.0;
    const double b = beta ? static_cast<double>(beta[ch]) : 0.0;
    scale[ch] = static_cast<T>(g * invstd);
    shift[ch] = static_cast<T>(b - mean[ch] * g * invstd);
    if (running_mean) {
      running_mean[ch] = static_cast<T>((1.0 - momentum) * running_mean[ch] + momentum * mean[ch]);
    }
    if (running_var) {
      const double unbiased = m > 1 ? squares[ch] / (m - 1) : 0.0;
      running_var[ch] = static_cast<T>((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
  }
  parallel_for(n * c, grain_for(s), std::max<int64_t>(s, 1), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T a = scale[p % c], b = shift[p % c];
      const T* in = x + p * s;
      T* out = y + p * s;
      for (int64_t i = 0; i < s; ++i) out[i] = in[i] * a + b;
    }
  });
}

template <class T>
void batch_norm_forward_eval(T* y, const T* x, const T* running_mean, const T* running_var,
                             const T* gamma, const T* beta, int64_t n, int64_t c, int64_t s,
                             double eps) {
  std::vector<T> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps);
    const double g = gamma ? static_cast<double>(gamma[ch]) : 1.0;
    const double b = beta ? static_cast<double>(beta[ch]) : 0.0;
    scale[ch] = static_cast<T>(g * invstd);
    shift[ch] = static_cast<T>(b - static_cast<double>(running_mean[ch]) * g * invstd);
  }
  parallel_for(n * c, grain_for(s), std::max<int64_t>(s, 1), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T a = scale[p % c], b = shift[p % c];
      const T* in = x + p * s;
      T* out = y + p * s;
      for (int64_t i = 0; i < s; ++i) out[i] = in[i] * a + b;
    }
  });
}

template <class T>
void batch_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                         const T* invstd, const T* gamma, int64_t n, int64_t c, int64_t s,
                         bool training, bool accumulate) {
  const bool need_sums = dgamma || dbeta || (dx && training);
  std::vector<double> sum_dy, sum_dy_xc;  // sum dy and sum dy * (x - mean), per channel
  if (need_sums) {
    sum_dy = per_channel_sums(n, c, s, [&](int64_t p) {
      const T* g = dy + p * s;
      double acc = 0.0;
      for (int64_t i = 0; i < s; ++i) acc += static_cast<double>(g[i]);
      return acc;
    });
    sum_dy_xc = per_channel_sums(n, c, s, [&](int64_t p) {
      const T* g = dy + p * s;
      const T* in = x + p * s;
      const double mu = static_cast<double>(mean[p % c]);
      double acc = 0.0;
      for (int64_t i = 0; i < s; ++i) {
        acc += static_cast<double>(g[i]) * (static_cast<double>(in[i]) - mu);
      }
      return acc;
    });
  }
  for (int64_t ch = 0; need_sums && ch < c; ++ch) {
    const double dg = sum_dy_xc[ch] * static_cast<double>(invstd[ch]);
    if (dgamma) dgamma[ch] = static_cast<T>(accumulate ? dgamma[ch] + dg : dg);
    if (dbeta) dbeta[ch] = static_cast<T>(accumulate ? dbeta[ch] + sum_dy[ch] : sum_dy[ch]);
  }
  if (!dx) return;
  // dx = k * (dy - a - (x - mean) * b) per channel: a = mean of dy and
  // b = invstd^2 * mean of dy * (x - mean) when training (the statistics depend on x), else 0.
  const double m = static_cast<double>(n * s);
  std::vector<T> k(static_cast<size_t>(c)), a(static_cast<size_t>(c)), b(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const double is = static_cast<double>(invstd[ch]);
    k[ch] = static_cast<T>(static_cast<double>(param_or(gamma, ch, T(1))) * is);
    a[ch] = static_cast<T>(training && m > 0 ? sum_dy[ch] / m : 0.0);
    b[ch] = static_cast<T>(training && m > 0 ? is * is * sum_dy_xc[ch] / m : 0.0);
  }
  parallel_for(n * c, grain_for(s), std::max<int64_t>(s, 1), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t ch = p % c;
      const T kk = k[ch], aa = a[ch], bb = b[ch], mu = mean[ch];
      const T* g = dy + p * s;
      const T* in = x + p * s;
      T* out = dx + p * s;
      for (int64_t i = 0; i < s; ++i) out[i] = kk * (g[i] - aa - (in[i] - mu) * bb);
    }
  });
}

template <class T>
void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                        int64_t rows, int64_t d, double eps) {
  // Rows are independent: each is normalized by one chunk.
  parallel_for(rows, grain_for(3 * d), 3 * d, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* in = x + r * d;
      T* out = y + r * d;
      double sum = 0.0;
      for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(in[i]);
      const double mu = d > 0 ? sum / static_cast<double>(d) : 0.0;
      double sq = 0.0;
      for (int64_t i = 0; i < d; ++i) {
        const double dev = static_cast<double>(in[i]) - mu;
        sq += dev * dev;
      }
      const double rs = 1.0 / std::sqrt((d > 0 ? sq / static_cast<double>(d) : 0.0) + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      const T m_t = static_cast<T>(mu), rs_t = static_cast<T>(rs);
      for (int64_t i = 0; i < d; ++i) {
        const T xhat = (in[i] - m_t) * rs_t;
        out[i] = xhat * param_or(gamma, i, T(1)) + param_or(beta, i, T(0));
      }
    }
  });
}

template <class T>
void layer_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, int64_t rows, int64_t d,
                         bool accumulate) {
  const bool params = dgamma || dbeta;
  const int64_t block = std::max<int64_t>(1, (rows + kMaxRowBlocks - 1) / kMaxRowBlocks);
  const int64_t blocks = rows > 0 ? (rows + block - 1) / block : 0;
  // Per block: d partial sums of dy * xhat, then d partial sums of dy.
  std::vector<double> partial(params ? static_cast<size_t>(blocks * 2 * d) : 0, 0.0);
  parallel_for(blocks, 1, block * 4 * d, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      double* pg = params ? partial.data() + blk * 2 * d : nullptr;
      double* pb = params ? pg + d : nullptr;
      for (int64_t r = blk * block; r < std::min(rows, (blk + 1) * block); ++r) {
        const T* g = dy + r * d;
        const T* in = x + r * d;
        const T mu = mean[r], rs = rstd[r];
        if (params) {
          for (int64_t i = 0; i < d; ++i) {
            const double xhat = static_cast<double>((in[i] - mu) * rs);
            pg[i] += static_cast<double>(g[i]) * xhat;
            pb[i] += static_cast<double>(g[i]);
          }
        }
        if (!dx) continue;
        // dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)), gy = dy * gamma.
        double sum_gy = 0.0, sum_gy_xhat = 0.0;
        for (int64_t i = 0; i < d; ++i) {
          const double gy = static_cast<double>(g[i] * param_or(gamma, i, T(1)));
          sum_gy += gy;
          sum_gy_xhat += gy * static_cast<double>((in[i] - mu) * rs);
        }
        const T a = static_cast<T>(sum_gy / static_cast<double>(d));
        const T b = static_cast<T>(sum_gy_xhat / static_cast<double>(d));
        T* out = dx + r * d;
        for (int64_t i = 0; i < d; ++i) {
          const T xhat = (in[i] - mu) * rs;
          out[i] = rs * (g[i] * param_or(gamma, i, T(1)) - a - xhat * b);
        }
      }
    }
  });
  if (!params) return;
  for (int64_t i = 0; i < d; ++i) {
    double sg = 0.0, sb = 0.0;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      sg += partial[blk * 2 * d + i];
      sb += partial[blk * 2 * d + d + i];
    }
    if (dgamma) dgamma[i] = static_cast<T>(accumulate ? dgamma[i] + sg : sg);
    if (dbeta) dbeta[i] = static_cast<T>(accumulate ? dbeta[i] + sb : sb);
  }
}

template <class T>
void dropout2d_apply(T* y, const T* x, const T* mask, int64_t n, int64_t c, int64_t s, T scale) {
  parallel_for(n * c, grain_for(s), std::max<int64_t>(s, 1), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T k = mask[p] * scale;
      const T* in = x + p * s;
      T* out = y + p * s;
      for (int64_t i = 0; i < s; ++i) out[i] = in[i] * k;
    }
  });
}

#define FASTNN_INSTANTIATE_NORM(T)                                                            \
  template void batch_norm_forward_train<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, \
                                            int64_t, int64_t, int64_t, double, double);       \
  template void batch_norm_forward_eval<T>(T*, const T*, const T*, const T*, const T*,        \
                                           const T*, int64_t, int64_t, int64_t, double);      \
  template void batch_norm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,    \
                                       const T*, int64_t, int64_t, int64_t, bool, bool);      \
  template void layer_norm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t,      \
                                      int64_t, double);                                       \
  template void layer_norm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,    \
                                       const T*, int64_t, int64_t, bool);                     \
  template void dropout2d_apply<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, T);
FASTNN_INSTANTIATE_NORM(float)
FASTNN_INSTANTIATE_NORM(double)
#undef FASTNN_INSTANTIATE_NORM

}  // namespace fastnn
