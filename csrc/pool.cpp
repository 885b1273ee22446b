// Pooling kernels. Every kernel splits the N*C planes across threads; each plane is read and
// written by one chunk only, so results do not depend on the thread count. The window bounds
// follow PyTorch's CPU kernels exactly, so outputs, chosen maxima and divisors match theirs.
#include "pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "threading.h"

namespace fastnn {
namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Planes per parallel chunk: enough work per chunk to be worth a thread hand-off.
int64_t plane_grain(int64_t plane_work) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(plane_work, 1));
}

int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

// PyTorch's average-pool window for output index o along one axis: [lo, hi) clipped to the
// input, and the window length clipped to the padded input (the count_include_pad divisor).
struct AvgWindow {
  int64_t lo, hi, padded_len;
};
AvgWindow avg_window(int64_t o, int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t start = o * stride - pad;
  const int64_t end = std::min(start + kernel, in + pad);
  return {std::max<int64_t>(start, 0), std::min(end, in), end - start};
}

}  // namespace

int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                         int64_t dilation, bool ceil_mode) {
  int64_t out = floor_div(in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0),
                          stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

bool pool2d_finish_shape(Pool2dShape& s) {
  s.oh = pool_output_size(s.h, s.kh, s.stride_h, s.pad_h, s.dilation_h, s.ceil_mode);
  s.ow = pool_output_size(s.w, s.kw, s.stride_w, s.pad_w, s.dilation_w, s.ceil_mode);
  return s.oh > 0 && s.ow > 0;
}

namespace {

// The usual CNN pooling, 2x2 windows at stride 2 that all lie inside the plane: the same
// results as the general loop with its bounds arithmetic taken out. The outputs are taken in
// runs (a whole 13x13 plane is one run) and each run in three passes: the four window taps are
// copied apart into contiguous arrays, a loop with no loads left to skip picks each winner by
// selects (vector compares and blends), and the winners' plane positions are written. Written
// as one loop over the interleaved taps it compiled to branches that mispredict on real data
// (5.5 ms for the MNIST CNN's first pooling at batch 64, one thread, against 1.4 ms now).
template <class T>
void max_pool_2x2_plane(T* out, int64_t* idx, const T* in, const Pool2dShape& s) {
  // Long runs leave the vector loop few leftover elements (a run of one 13-wide row had one
  // in four).
  constexpr int64_t kRun = 256;
  T tap[4][kRun];
  int32_t which[kRun];
  const int64_t total = s.oh * s.ow;
  for (int64_t q0 = 0; q0 < total; q0 += kRun) {
    const int64_t n = std::min(kRun, total - q0);
    // Visits the run's outputs row piece by row piece: f(q, oh, ow, count).
    const auto each_row_piece = [&](auto&& f) {
      for (int64_t q = 0; q < n;) {
        const int64_t oh = (q0 + q) / s.ow, ow = (q0 + q) % s.ow;
        const int64_t count = std::min(s.ow - ow, n - q);
        f(q, oh, ow, count);
        q += count;
      }
    };
    each_row_piece([&](int64_t q, int64_t oh, int64_t ow, int64_t count) {
      const T* r0 = in + 2 * oh * s.w + 2 * ow;
      const T* r1 = r0 + s.w;
      for (int64_t c = 0; c < count; ++c) {
        tap[0][q + c] = r0[2 * c];
        tap[1][q + c] = r0[2 * c + 1];
        tap[2][q + c] = r1[2 * c];
        tap[3][q + c] = r1[2 * c + 1];
      }
    });
    T* best = out + q0;
    for (int64_t q = 0; q < n; ++q) {
      T b = tap[0][q];
      int32_t t = 0;
      // A NaN first element stays (nothing is greater); later NaNs take over, as in PyTorch.
      for (int32_t c = 1; c < 4; ++c) {
        const T v = tap[c][q];
        const bool take = (v > b) | (v != v);
        b = take ? v : b;
        t = take ? c : t;
      }
      best[q] = b;
      which[q] = t;
    }
    // Tap t of the window at (oh, ow) sits at row 2 * oh + t / 2, column 2 * ow + t % 2.
    each_row_piece([&](int64_t q, int64_t oh, int64_t ow, int64_t count) {
      const int64_t base = 2 * oh * s.w + 2 * ow;
      for (int64_t c = 0; c < count; ++c) {
        const int32_t t = which[q + c];
        idx[q0 + q + c] = base + 2 * c + (t & 1) + (t >> 1) * s.w;
      }
    });
  }
}

bool is_plain_2x2(const Pool2dShape& s) {
  return s.kh == 2 && s.kw == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 &&
         s.pad_w == 0 && s.dilation_h == 1 && s.dilation_w == 1 && 2 * s.oh <= s.h &&
         2 * s.ow <= s.w;
}

}  // namespace

template <class T>
void max_pool2d_forward(T* y, int64_t* indices, const T* x, const Pool2dShape& s) {
  const int64_t hw = s.h * s.w, ohw = s.oh * s.ow;
  const int64_t work = ohw * s.kh * s.kw;
  const bool plain_2x2 = is_plain_2x2(s);
  parallel_for(s.planes(), plane_grain(work), work, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      const T* in = x + pl * hw;
      T* out = y + pl * ohw;
      int64_t* idx = indices + pl * ohw;
      if (plain_2x2) {
        max_pool_2x2_plane(out, idx, in, s);
        continue;
      }
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        int64_t h0 = oh * s.stride_h - s.pad_h;
        const int64_t h1 = std::min(h0 + (s.kh - 1) * s.dilation_h + 1, s.h);
        while (h0 < 0) h0 += s.dilation_h;
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          int64_t w0 = ow * s.stride_w - s.pad_w;
          const int64_t w1 = std::min(w0 + (s.kw - 1) * s.dilation_w + 1, s.w);
          while (w0 < 0) w0 += s.dilation_w;
          int64_t best_i = h0 * s.w + w0;
          T best = -std::numeric_limits<T>::infinity();
          for (int64_t ih = h0; ih < h1; ih += s.dilation_h) {
            for (int64_t iw = w0; iw < w1; iw += s.dilation_w) {
              // Branch-free select: on real data the comparison is a coin toss, and a
              // mispredicted branch per element costs more than the whole update.
              const T v = in[ih * s.w + iw];
              const bool take = (v > best) | (v != v);
              best = take ? v : best;
              best_i = take ? ih * s.w + iw : best_i;
            }
          }
          out[oh * s.ow + ow] = best;
          idx[oh * s.ow + ow] = best_i;
        }
      }
    }
  });
}

template <class T>
void max_pool2d_backward(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s) {
  const int64_t hw = s.h * s.w, ohw = s.oh * s.ow;
  parallel_for(s.planes(), plane_grain(hw + ohw), hw + ohw, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      T* out = dx + pl * hw;
      const T* g = dy + pl * ohw;
      const int64_t* idx = indices + pl * ohw;
      std::fill(out, out + hw, T(0));
      for (int64_t i = 0; i < ohw; ++i) {
        // Indices come from the caller; one outside the plane (only possible when the forward
        // had a window entirely in the padding, or the array was altered) is skipped.
        if (idx[i] >= 0 && idx[i] < hw) out[idx[i]] += g[i];
      }
    }
  });
}

template <class T>
void avg_pool2d_forward(T* y, const T* x, const Pool2dShape& s, bool count_include_pad,
                        int64_t divisor_override) {
  const int64_t hw = s.h * s.w, ohw = s.oh * s.ow;
  const int64_t work = ohw * s.kh * s.kw;
  parallel_for(s.planes(), plane_grain(work), work, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      const T* in = x + pl * hw;
      T* out = y + pl * ohw;
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const AvgWindow wh = avg_window(oh, s.h, s.kh, s.stride_h, s.pad_h);
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          const AvgWindow ww = avg_window(ow, s.w, s.kw, s.stride_w, s.pad_w);
          if (wh.lo >= wh.hi || ww.lo >= ww.hi) {
            out[oh * s.ow + ow] = T(0);
            continue;
          }
          T sum = 0;
          for (int64_t ih = wh.lo; ih < wh.hi; ++ih) {
            for (int64_t iw = ww.lo; iw < ww.hi; ++iw) sum += in[ih * s.w + iw];
          }
          const int64_t divisor = divisor_override > 0 ? divisor_override
                                  : count_include_pad  ? wh.padded_len * ww.padded_len
                                                       : (wh.hi - wh.lo) * (ww.hi - ww.lo);
          out[oh * s.ow + ow] = sum / static_cast<T>(divisor);
        }
      }
    }
  });
}

template <class T>
void avg_pool2d_backward(T* dx, const T* dy, const Pool2dShape& s, bool count_include_pad,
                         int64_t divisor_override) {
  const int64_t hw = s.h * s.w, ohw = s.oh * s.ow;
  const int64_t work = hw + ohw * s.kh * s.kw;
  parallel_for(s.planes(), plane_grain(work), work, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      T* out = dx + pl * hw;
      const T* g = dy + pl * ohw;
      std::fill(out, out + hw, T(0));
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const AvgWindow wh = avg_window(oh, s.h, s.kh, s.stride_h, s.pad_h);
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          const AvgWindow ww = avg_window(ow, s.w, s.kw, s.stride_w, s.pad_w);
          if (wh.lo >= wh.hi || ww.lo >= ww.hi) continue;
          const int64_t divisor = divisor_override > 0 ? divisor_override
                                  : count_include_pad  ? wh.padded_len * ww.padded_len
                                                       : (wh.hi - wh.lo) * (ww.hi - ww.lo);
          const T share = g[oh * s.ow + ow] / static_cast<T>(divisor);
          for (int64_t ih = wh.lo; ih < wh.hi; ++ih) {
            for (int64_t iw = ww.lo; iw < ww.hi; ++iw) out[ih * s.w + iw] += share;
          }
        }
      }
    }
  });
}

template <class T>
void adaptive_avg_pool2d_forward(T* y, const T* x, int64_t planes, int64_t h, int64_t w,
                                 int64_t oh, int64_t ow) {
  const int64_t hw = h * w, ohw = oh * ow;
  parallel_for(planes, plane_grain(hw + ohw), hw + ohw, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      const T* in = x + pl * hw;
      T* out = y + pl * ohw;
      for (int64_t i = 0; i < oh; ++i) {
        const int64_t h0 = adaptive_start(i, h, oh), h1 = adaptive_end(i, h, oh);
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t w0 = adaptive_start(j, w, ow), w1 = adaptive_end(j, w, ow);
          T sum = 0;
          for (int64_t ih = h0; ih < h1; ++ih) {
            for (int64_t iw = w0; iw < w1; ++iw) sum += in[ih * w + iw];
          }
          out[i * ow + j] = sum / static_cast<T>((h1 - h0) * (w1 - w0));
        }
      }
    }
  });
}

template <class T>
void adaptive_avg_pool2d_backward(T* dx, const T* dy, int64_t planes, int64_t h, int64_t w,
                                  int64_t oh, int64_t ow) {
  const int64_t hw = h * w, ohw = oh * ow;
  parallel_for(planes, plane_grain(2 * hw + ohw), 2 * hw + ohw, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      T* out = dx + pl * hw;
      const T* g = dy + pl * ohw;
      std::fill(out, out + hw, T(0));
      for (int64_t i = 0; i < oh; ++i) {
        const int64_t h0 = adaptive_start(i, h, oh), h1 = adaptive_end(i, h, oh);
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t w0 = adaptive_start(j, w, ow), w1 = adaptive_end(j, w, ow);
          const T share = g[i * ow + j] / static_cast<T>((h1 - h0) * (w1 - w0));
          for (int64_t ih = h0; ih < h1; ++ih) {
            for (int64_t iw = w0; iw < w1; ++iw) out[ih * w + iw] += share;
          }
        }
      }
    }
  });
}

#define FASTNN_INSTANTIATE_POOL(T)                                                             \
  template void max_pool2d_forward<T>(T*, int64_t*, const T*, const Pool2dShape&);             \
  template void max_pool2d_backward<T>(T*, const T*, const int64_t*, const Pool2dShape&);      \
  template void avg_pool2d_forward<T>(T*, const T*, const Pool2dShape&, bool, int64_t);        \
  template void avg_pool2d_backward<T>(T*, const T*, const Pool2dShape&, bool, int64_t);       \
  template void adaptive_avg_pool2d_forward<T>(T*, const T*, int64_t, int64_t, int64_t,        \
                                               int64_t, int64_t);                              \
  template void adaptive_avg_pool2d_backward<T>(T*, const T*, int64_t, int64_t, int64_t,       \
                                                int64_t, int64_t);
FASTNN_INSTANTIATE_POOL(float)
FASTNN_INSTANTIATE_POOL(double)
#undef FASTNN_INSTANTIATE_POOL

}  // namespace fastnn
