// 2-D pooling, NCHW, C-contiguous, with PyTorch's semantics.
//
// Legend: N batch, C channels, H x W input plane, OH x OW output plane, KH x KW window.
// Every kernel treats the N*C planes independently:
//   x (N, C, H, W)   y (N, C, OH, OW)   indices (N, C, OH, OW) int64
// Padding is symmetric, as in torch.nn.functional's pooling.
#pragma once

#include <cstdint>

namespace fastnn {

struct Pool2dShape {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  bool ceil_mode = false;
  int64_t oh = 0, ow = 0;  // set by pool2d_finish_shape

  int64_t planes() const { return n * c; }
};

// PyTorch's pooling output length of one axis: floor (or ceil) of the window count, and with
// ceil_mode a last window that would start inside the right padding is dropped. Returns a value
// <= 0 when no window fits.
int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                         int64_t dilation, bool ceil_mode);

// Fills s.oh and s.ow; returns false when either is <= 0.
bool pool2d_finish_shape(Pool2dShape& s);

// y = max over each (dilated) window, overwriting y; indices receives the flat position
// (ih * W + iw) of the maximum within its input plane. A NaN wins (the last one, as in
// PyTorch); among equal values the first in row-major window order wins.
template <class T>
void max_pool2d_forward(T* y, int64_t* indices, const T* x, const Pool2dShape& s);

// dx (N, C, H, W) = scatter-add of dy at indices, overwriting dx.
template <class T>
void max_pool2d_backward(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s);

// y = window mean, overwriting y (dilation must be 1). The divisor is divisor_override when it
// is > 0; else the window size clipped to the padded input when count_include_pad, or the
// number of real input elements in the window otherwise (PyTorch's rules).
template <class T>
void avg_pool2d_forward(T* y, const T* x, const Pool2dShape& s, bool count_include_pad,
                        int64_t divisor_override);

// dx (N, C, H, W) overwritten with the gradient of avg_pool2d_forward.
template <class T>
void avg_pool2d_backward(T* dx, const T* dy, const Pool2dShape& s, bool count_include_pad,
                         int64_t divisor_override);

// Adaptive average pooling to (oh, ow): output cell (i, j) averages input rows
// [floor(i*H/OH), ceil((i+1)*H/OH)) and the same for columns. x (N, C, H, W), y (N, C, OH, OW)
// overwritten. Global average pooling is oh = ow = 1.
template <class T>
void adaptive_avg_pool2d_forward(T* y, const T* x, int64_t planes, int64_t h, int64_t w,
                                 int64_t oh, int64_t ow);
// dx (N, C, H, W) overwritten with the gradient of adaptive_avg_pool2d_forward.
template <class T>
void adaptive_avg_pool2d_backward(T* dx, const T* dy, int64_t planes, int64_t h, int64_t w,
                                  int64_t oh, int64_t ow);

}  // namespace fastnn
