// 2-D convolution (cross-correlation, as in PyTorch), NCHW, C-contiguous.
//
// Legend: N batch, C input channels, H x W input plane, OC output channels, KH x KW kernel,
// G groups (C and OC divisible by G; each group maps C/G input channels to OC/G outputs),
// OH x OW output plane. Shapes:
//   x (N, C, H, W)   w (OC, C/G, KH, KW)   b (OC,)   y (N, OC, OH, OW)
// Padding may differ on the two sides of an axis (PyTorch's "same" with an even kernel pads one
// more on the bottom/right); taps that fall in the padding read zero.
// conv1d is this with H = 1, KH = 1 and no vertical padding.
#pragma once

#include <cstdint>

#include "activation_kind.h"

namespace fastnn {

struct Conv2dShape {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t oc = 0, kh = 0, kw = 0;      // weight (OC, C/G, KH, KW)
  int64_t groups = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t oh = 0, ow = 0;  // set by conv2d_finish_shape

  int64_t cg() const { return c / groups; }                 // input channels per group
  int64_t ocg() const { return oc / groups; }               // output channels per group
  int64_t patch() const { return cg() * kh * kw; }          // GEMM depth per group
  int64_t out_plane() const { return oh * ow; }
};

// Output length of one axis, or a value <= 0 when the dilated kernel does not fit in the padded
// input (the caller reports that). All arguments must be >= 1 except the paddings (>= 0).
int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before,
                         int64_t pad_after, int64_t dilation);

// Fills s.oh and s.ow from the other fields; returns false when either is <= 0.
bool conv2d_finish_shape(Conv2dShape& s);

// y = act(conv(x, w) + b), overwriting y. b may be null (no bias); z, when not null, receives
// the pre-activation conv(x, w) + b (for activations whose derivative needs it).
template <class T>
void conv2d_forward(T* y, T* z, const T* x, const T* w, const T* b, const Conv2dShape& s,
                    Activation act);

// Gradients of conv2d_forward. dZ = dy * act'(.) is formed on the fly from z (the forward's
// pre-activation) when it is not null, else from y (its output), which suffices only for the
// activations act_derivative_from_output accepts; both may be null for the identity. Any of dx,
// dw, db may be null (skipped).
//   dx (N, C, H, W) is always overwritten.
//   dw (OC, C/G, KH, KW) and db (OC,) are accumulated (+=) when accumulate, else overwritten.
// dw and db sum over the batch in an order fixed by the shape alone, so they are bit-identical
// for any thread count.
template <class T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                     const T* z, const Conv2dShape& s, Activation act, bool accumulate);

// The plain convolution (identity activation).
template <class T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s) {
  conv2d_forward<T>(y, nullptr, x, w, b, s, Activation{});
}
template <class T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                     const Conv2dShape& s, bool accumulate) {
  conv2d_backward<T>(dx, dw, db, dy, x, w, nullptr, nullptr, s, Activation{}, accumulate);
}

// Direct seven-nested-loop versions of the plain convolution, kept as the reference the fast
// path is tested against (the tests apply the activation separately). Sums in T, in a plain
// loop order.
template <class T>
void conv2d_forward_reference(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s);
template <class T>
void conv2d_backward_reference(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                               const Conv2dShape& s, bool accumulate);

}  // namespace fastnn
