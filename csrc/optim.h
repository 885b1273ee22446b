// Optimizer steps and gradient utilities over lists of tensors (multi-tensor: one call updates
// every parameter, so a training step crosses the Python boundary once per optimizer).
//
// Legend: a list holds one entry per parameter tensor; entry i points at `size` contiguous
// elements of the parameter, its gradient and each state buffer, all the same size. Every step
// overwrites parameters and state in place and never writes gradients. Formulas are PyTorch's
// (torch.optim, single-tensor form), evaluated in T with scalar coefficients computed in double.
// Elementwise, so results are bit-identical for any thread count; the work is split into fixed
// chunks across the whole list, so many small tensors still share the threads.
#pragma once

#include <cstdint>
#include <vector>

namespace fastnn {

template <class T>
struct SgdTensor {
  T* param;
  const T* grad;
  T* momentum_buffer;  // needed when momentum != 0, else may be nullptr
  int64_t size;
};

struct SgdOptions {
  double lr = 0.0, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false, maximize = false;
  bool first_step = false;  // the buffer is set to the gradient (no momentum, no dampening)
};

// g = -+grad (+ weight_decay * param); buf = momentum * buf + (1 - dampening) * g (buf = g on the
// first step); g = g + momentum * buf (nesterov) or buf; param -= lr * g.
template <class T>
void sgd_step(const std::vector<SgdTensor<T>>& tensors, const SgdOptions& options);

template <class T>
struct AdamTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  T* max_exp_avg_sq;  // amsgrad when not nullptr (all entries of a list alike)
  int64_t size;
};

struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // AdamW
  bool maximize = false;
  int64_t step = 1;  // 1-based count after this step's increment, for the bias corrections
};

// m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g * g; vmax = max(vmax, v) with
// amsgrad; param -= lr / (1 - beta1^step) * m / (sqrt(v or vmax) / sqrt(1 - beta2^step) + eps).
// Weight decay adds weight_decay * param to g, or (decoupled) scales param by 1 - lr * wd first.
template <class T>
void adam_step(const std::vector<AdamTensor<T>>& tensors, const AdamOptions& options);

template <class T>
struct RmspropTensor {
  T* param;
  const T* grad;
  T* square_avg;
  T* momentum_buffer;  // needed when momentum > 0
  T* grad_avg;         // needed when centered
  int64_t size;
};

struct RmspropOptions {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool centered = false, maximize = false;
};

// s = alpha * s + (1 - alpha) * g * g; centered: a = lerp(a, g, 1 - alpha), d = sqrt(s - a * a)
// + eps, else d = sqrt(s) + eps; momentum > 0: buf = momentum * buf + g / d, param -= lr * buf;
// otherwise param -= lr * g / d.
template <class T>
void rmsprop_step(const std::vector<RmspropTensor<T>>& tensors, const RmspropOptions& options);

template <class T>
struct AdagradTensor {
  T* param;
  const T* grad;
  T* state_sum;
  int64_t size;
};

struct AdagradOptions {
  double lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0, eps = 1e-10;
  bool maximize = false;
  int64_t step = 1;  // 1-based, after the increment
};

// sum += g * g; param -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(sum) + eps).
template <class T>
void adagrad_step(const std::vector<AdagradTensor<T>>& tensors, const AdagradOptions& options);

// A read-only or writable span of one tensor, for the list utilities below.
template <class T>
struct Span {
  T* data;
  int64_t size;
};

// Sum of squares of every element of every tensor, in double, in a fixed order (chunks of each
// tensor in list order), so bit-identical for any thread count.
template <class T>
double sum_of_squares(const std::vector<Span<const T>>& tensors);

// Every element *= factor, in place.
template <class T>
void scale_(const std::vector<Span<T>>& tensors, T factor);

// Every element = min(max(x, lo), hi), in place; NaN stays NaN. lo <= hi.
template <class T>
void clamp_(const std::vector<Span<T>>& tensors, T lo, T hi);

// Plain single-threaded versions with the same contracts, one tensor and element at a time; the
// tests hold the fast steps against them.
template <class T>
void sgd_step_reference(const std::vector<SgdTensor<T>>& tensors, const SgdOptions& options);
template <class T>
void adam_step_reference(const std::vector<AdamTensor<T>>& tensors, const AdamOptions& options);
template <class T>
void rmsprop_step_reference(const std::vector<RmspropTensor<T>>& tensors,
                            const RmspropOptions& options);
template <class T>
void adagrad_step_reference(const std::vector<AdagradTensor<T>>& tensors,
                            const AdagradOptions& options);
template <class T>
double sum_of_squares_reference(const std::vector<Span<const T>>& tensors);

namespace detail {

// Adam's per-element constants, computed once per step.
struct AdamScalars {
  float sign, weight_decay, decay_scale, one_minus_beta1, beta2, one_minus_beta2, step_size,
      bias_correction2_sqrt, eps;
  bool decay, decoupled;
};

// AVX2 loop for float Adam over a prefix of [begin, end) in whole vectors; returns where it
// stopped so the caller finishes the tail. GCC does not vectorise the portable loop's sqrt
// without -fno-math-errno. Call only if cpu_has_avx2_fma().
int64_t adam_chunk_avx2(const AdamTensor<float>& t, int64_t begin, int64_t end,
                        const AdamScalars& s);

// SGD's per-element constants (see sgd_step); `first_step` and `nesterov` as in SgdOptions.
struct SgdScalars {
  float sign, weight_decay, lr, momentum, keep;
  bool decay, momentum_on, first_step, nesterov;
};

// AVX2 loop for float SGD over a prefix of [begin, end) in whole vectors; returns where it
// stopped. Separate multiplies and adds in the portable loop's order, so results are the same
// bit for bit (an SSE2 build of the portable loop executes about twice the instructions, and at
// batch 1 an MLP's update is the largest single cost of a step). Call only if cpu_has_avx2_fma().
int64_t sgd_chunk_avx2(const SgdTensor<float>& t, int64_t begin, int64_t end,
                       const SgdScalars& s);

}  // namespace detail
}  // namespace fastnn
