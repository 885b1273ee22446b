// Convolution on top of gemm<T>: each group of each sample is one matrix product
//   y[n, g] (OC/G x OH*OW) = w[g] (OC/G x C/G*KH*KW) @ cols (C/G*KH*KW x OH*OW)
// where cols is the im2col unfolding of x[n, g] (a 1x1, stride-1, unpadded convolution uses
// x[n, g] itself). Several samples are unfolded side by side into one wider cols matrix when
// the output plane is small, so the GEMM sees enough columns to run at full speed.
//
// Threads split the batch into chunks whose boundaries depend only on the shape. The weight and
// bias gradients are summed per chunk into separate partials that are then added in chunk order,
// so the result is the same for any thread count.
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "threading.h"

namespace fastnn {
namespace {

// Floor and ceiling of a / b for b > 0 and any sign of a.
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// The GEMM runs at speed once it has a few hundred columns; below that, samples are batched.
constexpr int64_t kTargetColumns = 512;
// The backward pass splits the batch into at most this many chunks, each with its own weight-
// gradient partial. Fixed, so the summation order does not depend on the thread count.
constexpr int64_t kMaxGradChunks = 8;

// Per-thread scratch that grows to the largest size requested and is then reused: convolution
// buffers are large enough that allocating them per call would hit mmap and page faults.
template <class T>
T* scratch(int slot, int64_t count) {
  thread_local std::vector<T> buffers[3];
  std::vector<T>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < count) b.resize(static_cast<size_t>(count));
  return b.data();
}

bool is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.pad_bottom == 0 && s.pad_right == 0;
}

// Samples unfolded side by side into one GEMM.
int64_t samples_per_gemm(const Conv2dShape& s) {
  if (is_pointwise(s)) return 1;  // x is used in place, and its samples are not adjacent columns
  const int64_t p = std::max<int64_t>(s.out_plane(), 1);
  return std::clamp<int64_t>((kTargetColumns + p - 1) / p, 1, std::max<int64_t>(s.n, 1));
}

// For kernel offset k (already dilated) along an axis: the output positions [lo, hi) whose
// input index o * stride - pad + k lies inside [0, in).
void valid_range(int64_t k, int64_t in, int64_t out, int64_t stride, int64_t pad, int64_t* lo,
                 int64_t* hi) {
  *lo = std::clamp<int64_t>(ceil_div(pad - k, stride), 0, out);
  *hi = std::clamp<int64_t>(floor_div(in - 1 + pad - k, stride) + 1, *lo, out);
}

// cols (C/G*KH*KW rows, leading dimension ldc) receives the unfolding of the C/G channel planes
// starting at x, written at column offset 0 of each row (the caller offsets cols per sample).
template <class T>
void im2col(T* cols, int64_t ldc, const T* x, const Conv2dShape& s) {
  const int64_t hw = s.h * s.w;
  for (int64_t ci = 0; ci < s.cg(); ++ci) {
    const T* plane = x + ci * hw;
    for (int64_t i = 0; i < s.kh; ++i) {
      int64_t oh_lo, oh_hi;
      valid_range(i * s.dilation_h, s.h, s.oh, s.stride_h, s.pad_top, &oh_lo, &oh_hi);
      for (int64_t j = 0; j < s.kw; ++j) {
        int64_t ow_lo, ow_hi;
        valid_range(j * s.dilation_w, s.w, s.ow, s.stride_w, s.pad_left, &ow_lo, &ow_hi);
        T* row = cols + ((ci * s.kh + i) * s.kw + j) * ldc;
        std::fill(row, row + oh_lo * s.ow, T(0));
        const int64_t col0 = j * s.dilation_w - s.pad_left;
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          T* out = row + oh * s.ow;
          const T* in = plane + (oh * s.stride_h - s.pad_top + i * s.dilation_h) * s.w + col0;
          std::fill(out, out + ow_lo, T(0));
          if (s.stride_w == 1) {
            std::memcpy(out + ow_lo, in + ow_lo, sizeof(T) * static_cast<size_t>(ow_hi - ow_lo));
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out[ow] = in[ow * s.stride_w];
          }
          std::fill(out + ow_hi, out + s.ow, T(0));
        }
        std::fill(row + oh_hi * s.ow, row + s.oh * s.ow, T(0));
      }
    }
  }
}

// The adjoint of im2col: adds each column entry into the input position it was read from.
// dx (C/G planes) must already hold the value to add to (zero for a fresh gradient).
template <class T>
void col2im(T* dx, const T* cols, int64_t ldc, const Conv2dShape& s) {
  const int64_t hw = s.h * s.w;
  for (int64_t ci = 0; ci < s.cg(); ++ci) {
    T* plane = dx + ci * hw;
    for (int64_t i = 0; i < s.kh; ++i) {
      int64_t oh_lo, oh_hi;
      valid_range(i * s.dilation_h, s.h, s.oh, s.stride_h, s.pad_top, &oh_lo, &oh_hi);
      for (int64_t j = 0; j < s.kw; ++j) {
        int64_t ow_lo, ow_hi;
        valid_range(j * s.dilation_w, s.w, s.ow, s.stride_w, s.pad_left, &ow_lo, &ow_hi);
        const T* row = cols + ((ci * s.kh + i) * s.kw + j) * ldc;
        const int64_t col0 = j * s.dilation_w - s.pad_left;
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const T* in = row + oh * s.ow;
          T* out = plane + (oh * s.stride_h - s.pad_top + i * s.dilation_h) * s.w + col0;
          if (s.stride_w == 1) {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out[ow] += in[ow];
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out[ow * s.stride_w] += in[ow];
          }
        }
      }
    }
  }
}

}  // namespace

int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before,
                         int64_t pad_after, int64_t dilation) {
  const int64_t span = dilation * (kernel - 1) + 1;
  const int64_t room = in + pad_before + pad_after - span;
  return room < 0 ? 0 : room / stride + 1;
}

bool conv2d_finish_shape(Conv2dShape& s) {
  s.oh = conv_output_size(s.h, s.kh, s.stride_h, s.pad_top, s.pad_bottom, s.dilation_h);
  s.ow = conv_output_size(s.w, s.kw, s.stride_w, s.pad_left, s.pad_right, s.dilation_w);
  return s.oh > 0 && s.ow > 0;
}

template <class T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s) {
  const int64_t p = s.out_plane(), k = s.patch(), ocg = s.ocg(), cg = s.cg();
  const int64_t x_sample = s.c * s.h * s.w, y_sample = s.oc * p;
  const int64_t sb = samples_per_gemm(s);
  const int64_t batches = (s.n + sb - 1) / sb;
  const bool pointwise = is_pointwise(s);
  // Each sub-batch of sb samples writes only its own outputs: safe to run in any order.
  parallel_for(batches, 1, sb * 2 * s.oc * k * p, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi) {
      const int64_t n0 = bi * sb, nb = std::min(sb, s.n - n0), ld = nb * p;
      T* cols = pointwise ? nullptr : scratch<T>(0, k * ld);
      T* out = nb > 1 ? scratch<T>(1, ocg * ld) : nullptr;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* wg = w + g * ocg * k;
        const T* xg = x + n0 * x_sample + g * cg * s.h * s.w;
        T* yg = y + n0 * y_sample + g * ocg * p;
        if (pointwise) {
          gemm<T>(false, false, ocg, p, k, T(1), wg, k, xg, p, T(0), yg, p);
        } else {
          for (int64_t i = 0; i < nb; ++i) im2col(cols + i * p, ld, xg + i * x_sample, s);
          if (nb == 1) {
            gemm<T>(false, false, ocg, p, k, T(1), wg, k, cols, ld, T(0), yg, p);
          } else {
            gemm<T>(false, false, ocg, ld, k, T(1), wg, k, cols, ld, T(0), out, ld);
            for (int64_t i = 0; i < nb; ++i) {
              for (int64_t o = 0; o < ocg; ++o) {
                std::memcpy(yg + i * y_sample + o * p, out + o * ld + i * p,
                            sizeof(T) * static_cast<size_t>(p));
              }
            }
          }
        }
        if (b) {
          for (int64_t i = 0; i < nb; ++i) {
            for (int64_t o = 0; o < ocg; ++o) {
              T* row = yg + i * y_sample + o * p;
              const T bias = b[g * ocg + o];
              for (int64_t q = 0; q < p; ++q) row[q] += bias;
            }
          }
        }
      }
    }
  });
}

template <class T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                     const Conv2dShape& s, bool accumulate) {
  const int64_t p = s.out_plane(), k = s.patch(), ocg = s.ocg(), cg = s.cg();
  const int64_t x_sample = s.c * s.h * s.w, y_sample = s.oc * p, w_size = s.oc * k;
  const bool pointwise = is_pointwise(s);

  if (db) {
    // One channel per item, summed over samples and positions in a fixed order, in double.
    parallel_for(s.oc, 1, s.n * p, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        double sum = 0.0;
        for (int64_t n = 0; n < s.n; ++n) {
          const T* row = dy + n * y_sample + o * p;
          T part = 0;
          for (int64_t q = 0; q < p; ++q) part += row[q];
          sum += static_cast<double>(part);
        }
        db[o] = static_cast<T>(accumulate ? static_cast<double>(db[o]) + sum : sum);
      }
    });
  }
  if (!dx && !dw) return;
  if (s.n == 0) {
    if (dw && !accumulate) std::fill(dw, dw + w_size, T(0));
    return;
  }

  // Chunks of samples: each chunk writes dx for its samples and one weight-gradient partial.
  const int64_t chunk = (s.n + kMaxGradChunks - 1) / kMaxGradChunks;
  const int64_t chunks = (s.n + chunk - 1) / chunk;
  const int64_t sb = std::min(samples_per_gemm(s), chunk);
  std::vector<T> partials(dw && chunks > 1 ? static_cast<size_t>(chunks * w_size) : 0);

  parallel_for(chunks, 1, chunk * (dx && dw ? 4 : 2) * s.oc * k * p, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t first = ci * chunk, last = std::min(s.n, first + chunk);
      // A single chunk writes dw directly (accumulating into it if asked).
      T* part = chunks > 1 ? partials.data() + ci * w_size : dw;
      bool part_started = chunks == 1 && accumulate;
      for (int64_t n0 = first; n0 < last; n0 += sb) {
        const int64_t nb = std::min(sb, last - n0), ld = nb * p;
        T* cols = pointwise ? nullptr : scratch<T>(0, k * ld);
        // dy of the sub-batch gathered as one (OC/G x nb*P) matrix when nb > 1.
        T* dyg_buf = nb > 1 ? scratch<T>(1, ocg * ld) : nullptr;
        if (dx) std::fill(dx + n0 * x_sample, dx + (n0 + nb) * x_sample, T(0));
        for (int64_t g = 0; g < s.groups; ++g) {
          const T* wg = w + g * ocg * k;
          const T* xg = x + n0 * x_sample + g * cg * s.h * s.w;
          const T* dyg = dy + n0 * y_sample + g * ocg * p;
          int64_t ld_dy = p;
          if (nb > 1) {
            for (int64_t i = 0; i < nb; ++i) {
              for (int64_t o = 0; o < ocg; ++o) {
                std::memcpy(dyg_buf + o * ld + i * p, dyg + i * y_sample + o * p,
                            sizeof(T) * static_cast<size_t>(p));
              }
            }
            dyg = dyg_buf;
            ld_dy = ld;
          }
          if (dw) {
            const T* b_mat = xg;
            if (!pointwise) {
              for (int64_t i = 0; i < nb; ++i) im2col(cols + i * p, ld, xg + i * x_sample, s);
              b_mat = cols;
            }
            // part[g] (OC/G x K) (+)= dy (OC/G x nb*P) @ cols^T.
            gemm<T>(false, true, ocg, k, ld, T(1), dyg, ld_dy, b_mat, pointwise ? p : ld,
                    part_started ? T(1) : T(0), part + g * ocg * k, k);
          }
          if (dx) {
            T* dxg = dx + n0 * x_sample + g * cg * s.h * s.w;
            if (pointwise) {
              gemm<T>(true, false, k, p, ocg, T(1), wg, k, dyg, ld_dy, T(0), dxg, p);
            } else {
              // dcols (K x nb*P) = w[g]^T @ dy, then folded back onto the input planes.
              T* dcols = scratch<T>(2, k * ld);
              gemm<T>(true, false, k, ld, ocg, T(1), wg, k, dyg, ld_dy, T(0), dcols, ld);
              for (int64_t i = 0; i < nb; ++i) col2im(dxg + i * x_sample, dcols + i * p, ld, s);
            }
          }
        }
        part_started = true;
      }
    }
  });

  if (dw && chunks > 1) {
    // Each weight element sums the chunk partials in chunk order.
    parallel_for(w_size, 4096, chunks, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        T sum = accumulate ? dw[e] : T(0);
        for (int64_t ci = 0; ci < chunks; ++ci) sum += partials[ci * w_size + e];
        dw[e] = sum;
      }
    });
  }
}

template <class T>
void conv2d_forward_reference(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s) {
  const int64_t cg = s.cg(), ocg = s.ocg();
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t o = 0; o < s.oc; ++o) {
      const int64_t g = o / ocg;
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          T sum = b ? b[o] : T(0);
          for (int64_t ci = 0; ci < cg; ++ci) {
            for (int64_t i = 0; i < s.kh; ++i) {
              const int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
              if (ih < 0 || ih >= s.h) continue;
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
                if (iw < 0 || iw >= s.w) continue;
                sum += x[((n * s.c + g * cg + ci) * s.h + ih) * s.w + iw] *
                       w[((o * cg + ci) * s.kh + i) * s.kw + j];
              }
            }
          }
          y[((n * s.oc + o) * s.oh + oh) * s.ow + ow] = sum;
        }
      }
    }
  }
}

template <class T>
void conv2d_backward_reference(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                               const Conv2dShape& s, bool accumulate) {
  const int64_t cg = s.cg(), ocg = s.ocg();
  if (dx) std::fill(dx, dx + s.n * s.c * s.h * s.w, T(0));
  if (dw && !accumulate) std::fill(dw, dw + s.oc * s.patch(), T(0));
  if (db && !accumulate) std::fill(db, db + s.oc, T(0));
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t o = 0; o < s.oc; ++o) {
      const int64_t g = o / ocg;
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          const T grad = dy[((n * s.oc + o) * s.oh + oh) * s.ow + ow];
          if (db) db[o] += grad;
          for (int64_t ci = 0; ci < cg; ++ci) {
            for (int64_t i = 0; i < s.kh; ++i) {
              const int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
              if (ih < 0 || ih >= s.h) continue;
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
                if (iw < 0 || iw >= s.w) continue;
                const int64_t xi = ((n * s.c + g * cg + ci) * s.h + ih) * s.w + iw;
                const int64_t wi = ((o * cg + ci) * s.kh + i) * s.kw + j;
                if (dx) dx[xi] += grad * w[wi];
                if (dw) dw[wi] += grad * x[xi];
              }
            }
          }
        }
      }
    }
  }
}

#define FASTNN_INSTANTIATE_CONV(T)                                                            \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, const Conv2dShape&);      \
  template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*,                  \
                                   const Conv2dShape&, bool);                                 \
  template void conv2d_forward_reference<T>(T*, const T*, const T*, const T*,                 \
                                            const Conv2dShape&);                              \
  template void conv2d_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*,        \
                                             const Conv2dShape&, bool);
FASTNN_INSTANTIATE_CONV(float)
FASTNN_INSTANTIATE_CONV(double)
#undef FASTNN_INSTANTIATE_CONV

}  // namespace fastnn
