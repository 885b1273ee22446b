// Convolution on top of gemm<T>: each group of each sample is one matrix product
//   y[n, g] (OC/G x OH*OW) = w[g] (OC/G x C/G*KH*KW) @ cols (C/G*KH*KW x OH*OW)
// where cols is the im2col unfolding of x[n, g] (a 1x1, stride-1, unpadded convolution uses
// x[n, g] itself). Several samples are unfolded side by side into one wider cols matrix when
// the output plane is small, so the GEMM sees enough columns to run at full speed.
//
// Stride-1 convolutions use a "wide" unfolding: cols gets one column per position of the
// (padded) input rows, OH*Wp instead of OH*OW. Each row of cols is then one contiguous run of
// the input plane, shifted by the tap's offset, instead of OH runs of OW elements, and the
// gradient fold-back is likewise one run per row. The Wp - OW extra columns of each output row
// cost that fraction more GEMM work; their results are dropped, and in the backward pass their
// dY columns are zero so they add nothing to dW or dX. The wide form is used only when that
// waste is small.
//
// Threads split the batch into chunks whose boundaries depend only on the shape. The weight and
// bias gradients are summed per chunk into separate partials that are then added in chunk order,
// so the result is the same for any thread count.
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "activation_math.h"
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
// ... and fewer when the weight is large, so the partials stay within this many elements.
constexpr int64_t kPartialBudget = int64_t(1) << 22;

// Per-thread scratch that grows to the largest size requested and is then reused: convolution
// buffers are large enough that allocating them per call would hit mmap and page faults. The
// memory is kept until the thread exits (it is sized by the largest convolution seen, e.g. about
// 1.5 MB per thread for the MNIST CNN's second layer at batch 64).
template <class T>
T* scratch(int slot, int64_t count) {
  thread_local std::vector<T> buffers[4];
  std::vector<T>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < count) b.resize(static_cast<size_t>(count));
  return b.data();
}

bool is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.pad_bottom == 0 && s.pad_right == 0;
}

// Splits n items into the fewest near-equal parts of at most `target` items; returns the part
// size. Equal parts keep both threads busy to the end of a parallel loop.
int64_t balanced_part(int64_t n, int64_t target) {
  if (n <= 1) return 1;
  const int64_t parts = (n + target - 1) / target;
  return (n + parts - 1) / parts;
}

// How one sample's block of columns in the unfolded matrix is laid out (see the file comment).
struct Layout {
  bool pointwise = false;  // 1x1, stride 1, no padding: x itself is the unfolded matrix
  bool wide = false;       // one column per padded-input position of each output row
  bool padded = false;     // wide, and the input needs a zero-padded copy first
  int64_t wp = 0, plane = 0;  // wide: padded row length and padded plane size
  int64_t len = 0;            // columns per sample
  int64_t row_stride = 0;     // columns between consecutive output rows
};

Layout layout_of(const Conv2dShape& s) {
  Layout l;
  l.pointwise = is_pointwise(s);
  l.wp = s.w + s.pad_left + s.pad_right;
  // Wide only for stride 1, and only when the extra columns are at most a quarter more work.
  l.wide = !l.pointwise && s.stride_h == 1 && s.stride_w == 1 && 4 * l.wp <= 5 * s.ow;
  if (l.wide) {
    l.padded = s.pad_top || s.pad_bottom || s.pad_left || s.pad_right;
    l.plane = (s.h + s.pad_top + s.pad_bottom) * l.wp;
    l.len = s.oh * l.wp;
    l.row_stride = l.wp;
  } else {
    l.len = s.oh * s.ow;
    l.row_stride = s.ow;
  }
  return l;
}

// Samples unfolded side by side into one GEMM, out of a run of n samples.
int64_t samples_per_gemm(const Layout& l, int64_t n) {
  if (l.pointwise) return 1;  // x is used in place, and its samples are not adjacent columns
  const int64_t len = std::max<int64_t>(l.len, 1);
  return balanced_part(n, (kTargetColumns + len - 1) / len);
}

// Sum of n values with eight independent accumulators (so the adds pipeline and vectorize), in
// a fixed order.
template <class T>
double plane_sum(const T* v, int64_t n) {
  T lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += v[i + l];
  }
  double sum = 0.0;
  for (int l = 0; l < 8; ++l) sum += static_cast<double>(lanes[l]);
  for (; i < n; ++i) sum += static_cast<double>(v[i]);
  return sum;
}

// For kernel offset k (already dilated) along an axis: the output positions [lo, hi) whose
// input index o * stride - pad + k lies inside [0, in).
void valid_range(int64_t k, int64_t in, int64_t out, int64_t stride, int64_t pad, int64_t* lo,
                 int64_t* hi) {
  *lo = std::clamp<int64_t>(ceil_div(pad - k, stride), 0, out);
  *hi = std::clamp<int64_t>(floor_div(in - 1 + pad - k, stride) + 1, *lo, out);
}

// Copies a short run (typically one output row, a dozen elements). Inline: a memcpy call per
// row costs more than the copy at these lengths.
template <class T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T a = src[i], b = src[i + 1], c = src[i + 2], d = src[i + 3];
    dst[i] = a, dst[i + 1] = b, dst[i + 2] = c, dst[i + 3] = d;
  }
  for (; i < n; ++i) dst[i] = src[i];
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
            copy_run(out + ow_lo, in + ow_lo, ow_hi - ow_lo);
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

// Copies the C/G planes at x into pad (C/G padded planes of l.plane), zeros around them.
template <class T>
void pad_planes(T* pad, const T* x, const Conv2dShape& s, const Layout& l) {
  std::fill(pad, pad + s.cg() * l.plane, T(0));
  for (int64_t ci = 0; ci < s.cg(); ++ci) {
    for (int64_t h = 0; h < s.h; ++h) {
      copy_run(pad + ci * l.plane + (h + s.pad_top) * l.wp + s.pad_left,
               x + (ci * s.h + h) * s.w, s.w);
    }
  }
}

// Unfolds the C/G planes at x into cols (leading dimension ldc) in layout l. pad is scratch of
// C/G padded planes, used when l.padded.
template <class T>
void unfold(T* cols, int64_t ldc, const T* x, T* pad, const Conv2dShape& s, const Layout& l) {
  if (!l.wide) {
    im2col(cols, ldc, x, s);
    return;
  }
  const T* src = x;
  if (l.padded) {
    pad_planes(pad, x, s, l);
    src = pad;
  }
  for (int64_t ci = 0; ci < s.cg(); ++ci) {
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        T* row = cols + ((ci * s.kh + i) * s.kw + j) * ldc;
        const int64_t shift = i * s.dilation_h * l.wp + j * s.dilation_w;
        // The last output row's extra columns run past the plane's end: they are zeros.
        const int64_t n = std::min(l.len, l.plane - shift);
        std::memcpy(row, src + ci * l.plane + shift, sizeof(T) * static_cast<size_t>(n));
        std::fill(row + n, row + l.len, T(0));
      }
    }
  }
}

// The adjoint of unfold: adds cols back onto the C/G planes at dx (which hold the values to add
// to). pad is scratch as for unfold.
template <class T>
void fold(T* dx, const T* cols, int64_t ldc, T* pad, const Conv2dShape& s, const Layout& l) {
  if (!l.wide) {
    col2im(dx, cols, ldc, s);
    return;
  }
  T* dst = dx;
  if (l.padded) {
    std::fill(pad, pad + s.cg() * l.plane, T(0));
    dst = pad;
  }
  for (int64_t ci = 0; ci < s.cg(); ++ci) {
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        const T* row = cols + ((ci * s.kh + i) * s.kw + j) * ldc;
        const int64_t shift = i * s.dilation_h * l.wp + j * s.dilation_w;
        const int64_t n = std::min(l.len, l.plane - shift);
        T* out = dst + ci * l.plane + shift;
        for (int64_t q = 0; q < n; ++q) out[q] += row[q];
      }
    }
  }
  if (!l.padded) return;
  for (int64_t ci = 0; ci < s.cg(); ++ci) {
    for (int64_t h = 0; h < s.h; ++h) {
      T* out = dx + (ci * s.h + h) * s.w;
      const T* in = pad + ci * l.plane + (h + s.pad_top) * l.wp + s.pad_left;
      for (int64_t q = 0; q < s.w; ++q) out[q] += in[q];
    }
  }
}

// Fused epilogue and activation gradient over a run of n elements. The activation is a template
// argument so that its switch folds away and each loop vectorizes; a per-element switch would
// cost more than the convolution's own epilogue.
template <Act K, class T>
void epilogue_run(T* y, T* z, const T* src, T bias, int64_t n, T alpha) {
  if (z) {
    for (int64_t q = 0; q < n; ++q) z[q] = src[q] + bias;
    for (int64_t q = 0; q < n; ++q) y[q] = act_forward(K, z[q], alpha);
  } else {
    for (int64_t q = 0; q < n; ++q) y[q] = act_forward(K, src[q] + bias, alpha);
  }
}

// dz = dy * act'(.) from z when given, else from y (see act_derivative).
template <Act K, class T>
void grad_run(T* dz, const T* dy, const T* y, const T* z, int64_t n, T alpha) {
  if constexpr (K == Act::relu) {
    // Spelled out: the compiler does not always inline act_derivative's large switch, and a
    // call per element would cost more than the rest of the backward's epilogue. dy is loaded
    // whatever the sign, so the choice is a select: written as `? dy[q] :` the load is
    // conditional, the loop compiles to a branch that mispredicts on half the elements, and
    // this gather cost more than the GEMMs of the backward pass.
    const T* gate = z ? z : y;
    for (int64_t q = 0; q < n; ++q) {
      const T g = dy[q];
      dz[q] = gate[q] > T(0) ? g : T(0);
    }
    return;
  }
  if (z) {
    for (int64_t q = 0; q < n; ++q) {
      dz[q] = dy[q] * act_derivative(K, z[q], act_forward(K, z[q], alpha), alpha);
    }
  } else {
    for (int64_t q = 0; q < n; ++q) dz[q] = dy[q] * act_derivative(K, T(0), y[q], alpha);
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
void conv2d_forward(T* y, T* z, const T* x, const T* w, const T* b, const Conv2dShape& s,
                    Activation act) {
  const T alpha = static_cast<T>(act.alpha);
  const int64_t p = s.out_plane(), k = s.patch(), ocg = s.ocg(), cg = s.cg();
  const int64_t x_sample = s.c * s.h * s.w, y_sample = s.oc * p;
  const Layout l = layout_of(s);
  const int64_t sb = samples_per_gemm(l, s.n);
  const int64_t batches = (s.n + sb - 1) / sb;
  // Each sub-batch of sb samples writes only its own outputs: safe to run in any order.
  parallel_for(batches, 1, sb * 2 * s.oc * k * p, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi) {
      const int64_t n0 = bi * sb, nb = std::min(sb, s.n - n0), ld = nb * l.len;
      // One exact-layout sample: the GEMM writes y directly.
      const bool direct = nb == 1 && !l.wide;
      T* cols = l.pointwise ? nullptr : scratch<T>(0, k * ld);
      T* out = direct ? nullptr : scratch<T>(1, ocg * ld);
      T* pad = l.padded ? scratch<T>(2, cg * l.plane) : nullptr;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* wg = w + g * ocg * k;
        const T* xg = x + n0 * x_sample + g * cg * s.h * s.w;
        T* yg = y + n0 * y_sample + g * ocg * p;
        if (!l.pointwise) {
          for (int64_t i = 0; i < nb; ++i) {
            unfold(cols + i * l.len, ld, xg + i * x_sample, pad, s, l);
          }
        }
        const T* b_mat = l.pointwise ? xg : cols;
        if (direct) {
          gemm<T>(false, false, ocg, p, k, T(1), wg, k, b_mat, p, T(0), yg, p);
          if (act.kind == Act::identity && !z && !b) continue;  // nothing to add
        } else {
          gemm<T>(false, false, ocg, ld, k, T(1), wg, k, b_mat, ld, T(0), out, ld);
        }
        // Epilogue: bias and activation, dispatched once here, not per row. The product's
        // sample blocks are scattered to NCHW on the way, dropping wide columns.
        with_act(act.kind, [&](auto kind) {
          constexpr Act K = decltype(kind)::value;
          for (int64_t i = 0; i < nb; ++i) {
            for (int64_t o = 0; o < ocg; ++o) {
              const T bias = b ? b[g * ocg + o] : T(0);
              const int64_t e = (n0 + i) * y_sample + (g * ocg + o) * p;
              if (direct) {  // in place, the plane in one run
                epilogue_run<K>(y + e, z ? z + e : nullptr, y + e, bias, p, alpha);
                continue;
              }
              for (int64_t oh = 0; oh < s.oh; ++oh) {
                const T* src = out + o * ld + i * l.len + oh * l.row_stride;
                const int64_t eo = e + oh * s.ow;
                epilogue_run<K>(y + eo, z ? z + eo : nullptr, src, bias, s.ow, alpha);
              }
            }
          }
        });
      }
    }
  });
}

template <class T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                     const T* z, const Conv2dShape& s, Activation act, bool accumulate) {
  const int64_t p = s.out_plane(), k = s.patch(), ocg = s.ocg(), cg = s.cg();
  const int64_t x_sample = s.c * s.h * s.w, y_sample = s.oc * p, w_size = s.oc * k;
  const Layout l = layout_of(s);
  const bool fused = act.kind != Act::identity;
  const T alpha = static_cast<T>(act.alpha);
  // dst[0, n) = dZ at output elements [e, e + n).
  const auto dz_run = [&](T* dst, int64_t e, int64_t n) {
    if (!fused) {
      copy_run(dst, dy + e, n);
      return;
    }
    with_act(act.kind, [&](auto kind) {
      grad_run<decltype(kind)::value>(dst, dy + e, y ? y + e : nullptr, z ? z + e : nullptr, n,
                                      alpha);
    });
  };

  // With dx or dw wanted, db is summed from the dZ matrices the chunk loop forms anyway.
  const bool db_in_loop = db && (dx || dw) && s.n > 0;
  if (db && !db_in_loop) {
    // One channel per item, summed over samples in a fixed order, in double.
    parallel_for(s.oc, 1, s.n * p, [&](int64_t o0, int64_t o1) {
      T* dz = fused ? scratch<T>(0, p) : nullptr;
      for (int64_t o = o0; o < o1; ++o) {
        double sum = 0.0;
        for (int64_t n = 0; n < s.n; ++n) {
          const int64_t e = n * y_sample + o * p;
          if (fused) dz_run(dz, e, p);
          sum += plane_sum(fused ? dz : dy + e, p);
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
  const int64_t max_chunks =
      std::clamp<int64_t>(kPartialBudget / std::max<int64_t>(w_size, 1), 1, kMaxGradChunks);
  const int64_t chunk = (s.n + max_chunks - 1) / max_chunks;
  const int64_t chunks = (s.n + chunk - 1) / chunk;
  const int64_t sb = samples_per_gemm(l, chunk);
  // With fewer output channels than patch rows (a first layer: C = 1, 3x3), the GEMM runs far
  // better producing dW^T (K x OC/G), whose long side is then the GEMM's n.
  const bool transposed = k < ocg;
  std::vector<T> partials(dw ? static_cast<size_t>(chunks * w_size) : 0);
  std::vector<double> db_partials(db_in_loop ? static_cast<size_t>(chunks * s.oc) : 0, 0.0);

  parallel_for(chunks, 1, chunk * (dx && dw ? 4 : 2) * s.oc * k * p, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t first = ci * chunk, last = std::min(s.n, first + chunk);
      T* part = dw ? partials.data() + ci * w_size : nullptr;
      for (int64_t n0 = first; n0 < last; n0 += sb) {
        const int64_t nb = std::min(sb, last - n0), ld = nb * l.len;
        const T beta = n0 == first ? T(0) : T(1);
        // One exact-layout sample: dy is used as it lies; else dZ is gathered into layout l.
        const bool direct = nb == 1 && !l.wide && !fused;
        T* cols = l.pointwise ? nullptr : scratch<T>(0, k * ld);
        T* dy_cols = direct ? nullptr : scratch<T>(1, ocg * ld);
        T* pad = l.padded ? scratch<T>(3, cg * l.plane) : nullptr;
        if (dx) std::fill(dx + n0 * x_sample, dx + (n0 + nb) * x_sample, T(0));
        for (int64_t g = 0; g < s.groups; ++g) {
          const T* wg = w + g * ocg * k;
          const T* xg = x + n0 * x_sample + g * cg * s.h * s.w;
          const T* dyg = dy + n0 * y_sample + g * ocg * p;
          int64_t ld_dy = p;
          if (!direct) {
            // The activation is dispatched once here, not per output row.
            with_act(act.kind, [&](auto kind) {
              constexpr Act K = decltype(kind)::value;
              for (int64_t i = 0; i < nb; ++i) {
                for (int64_t o = 0; o < ocg; ++o) {
                  for (int64_t oh = 0; oh < s.oh; ++oh) {
                    const int64_t e = (n0 + i) * y_sample + (g * ocg + o) * p + oh * s.ow;
                    T* dst = dy_cols + o * ld + i * l.len + oh * l.row_stride;
                    if constexpr (K == Act::identity) {
                      copy_run(dst, dy + e, s.ow);
                    } else {
                      grad_run<K>(dst, dy + e, y ? y + e : nullptr, z ? z + e : nullptr, s.ow,
                                  alpha);
                    }
                    // Wide columns get a zero gradient, so they add nothing to dW or dX.
                    std::fill(dst + s.ow, dst + l.row_stride, T(0));
                  }
                }
              }
            });
            dyg = dy_cols;
            ld_dy = ld;
          }
          if (db_in_loop) {
            // Rows of dZ hold every output of their channel in this sub-batch (zeros in the wide
            // columns); sub-batches add in order.
            double* dbp = db_partials.data() + ci * s.oc + g * ocg;
            for (int64_t o = 0; o < ocg; ++o) dbp[o] += plane_sum(dyg + o * ld_dy, ld);
          }
          if (dw) {
            const T* b_mat = xg;
            if (!l.pointwise) {
              for (int64_t i = 0; i < nb; ++i) {
            unfold(cols + i * l.len, ld, xg + i * x_sample, pad, s, l);
          }
              b_mat = cols;
            }
            T* pg = part + g * ocg * k;
            if (transposed) {  // pg (K x OC/G) (+)= cols @ dy^T
              gemm<T>(false, true, k, ocg, ld, T(1), b_mat, ld, dyg, ld_dy, beta, pg, ocg);
            } else {  // pg (OC/G x K) (+)= dy @ cols^T
              gemm<T>(false, true, ocg, k, ld, T(1), dyg, ld_dy, b_mat, ld, beta, pg, k);
            }
          }
          if (dx) {
            T* dxg = dx + n0 * x_sample + g * cg * s.h * s.w;
            if (l.pointwise) {
              gemm<T>(true, false, k, p, ocg, T(1), wg, k, dyg, ld_dy, T(0), dxg, p);
            } else {
              // dcols (K x nb*len) = w[g]^T @ dy, then folded back onto the input planes.
              T* dcols = scratch<T>(2, k * ld);
              gemm<T>(true, false, k, ld, ocg, T(1), wg, k, dyg, ld_dy, T(0), dcols, ld);
              for (int64_t i = 0; i < nb; ++i) {
                fold(dxg + i * x_sample, dcols + i * l.len, ld, pad, s, l);
              }
            }
          }
        }
      }
    }
  });

  if (db_in_loop) {
    for (int64_t o = 0; o < s.oc; ++o) {
      double sum = 0.0;
      for (int64_t ci = 0; ci < chunks; ++ci) sum += db_partials[ci * s.oc + o];
      db[o] = static_cast<T>(accumulate ? static_cast<double>(db[o]) + sum : sum);
    }
  }
  if (dw) {
    // Each weight element adds the chunk partials in chunk order.
    parallel_for(w_size, 4096, chunks, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        // e indexes dw as (g, o, r); the partials may hold each group transposed as (r, o).
        const int64_t g = e / (ocg * k), o = (e / k) % ocg, r = e % k;
        const int64_t at = transposed ? g * ocg * k + r * ocg + o : e;
        T sum = accumulate ? dw[e] : T(0);
        for (int64_t ci = 0; ci < chunks; ++ci) sum += partials[ci * w_size + at];
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
  template void conv2d_forward<T>(T*, T*, const T*, const T*, const T*, const Conv2dShape&,   \
                                  Activation);                                                \
  template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                   const T*, const Conv2dShape&, Activation, bool);           \
  template void conv2d_forward_reference<T>(T*, const T*, const T*, const T*,                 \
                                            const Conv2dShape&);                              \
  template void conv2d_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*,        \
                                             const Conv2dShape&, bool);
FASTNN_INSTANTIATE_CONV(float)
FASTNN_INSTANTIATE_CONV(double)
#undef FASTNN_INSTANTIATE_CONV

}  // namespace fastnn
