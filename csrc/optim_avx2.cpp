// AVX2 loops for the float Adam and SGD steps (see optim.h, namespace detail): the portable
// loops' operations in the same order. This file is compiled without multiply-add contraction
// (CMakeLists.txt), so both match the portable loops bit for bit.
#include <immintrin.h>

#include "optim.h"

namespace fastnn::detail {

int64_t adam_chunk_avx2(const AdamTensor<float>& t, int64_t begin, int64_t end,
                        const AdamScalars& s) {
  const __m256 sign = _mm256_set1_ps(s.sign), wd = _mm256_set1_ps(s.weight_decay);
  const __m256 decay_scale = _mm256_set1_ps(s.decay_scale);
  const __m256 omb1 = _mm256_set1_ps(s.one_minus_beta1), beta2 = _mm256_set1_ps(s.beta2);
  const __m256 omb2 = _mm256_set1_ps(s.one_minus_beta2), step = _mm256_set1_ps(s.step_size);
  const __m256 bc2 = _mm256_set1_ps(s.bias_correction2_sqrt), eps = _mm256_set1_ps(s.eps);
  float* p = t.param;
  const float* grad = t.grad;
  float* m = t.exp_avg;
  float* v = t.exp_avg_sq;
  float* vmax = t.max_exp_avg_sq;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    __m256 g = _mm256_mul_ps(sign, _mm256_loadu_ps(grad + i));
    __m256 pi = _mm256_loadu_ps(p + i);
    if (s.decay) {
      if (s.decoupled) {
        pi = _mm256_mul_ps(pi, decay_scale);
      } else {
        g = _mm256_add_ps(g, _mm256_mul_ps(wd, pi));
      }
    }
    const __m256 m0 = _mm256_loadu_ps(m + i);
    const __m256 mi = _mm256_add_ps(m0, _mm256_mul_ps(omb1, _mm256_sub_ps(g, m0)));
    __m256 vi = _mm256_add_ps(_mm256_mul_ps(beta2, _mm256_loadu_ps(v + i)),
                              _mm256_mul_ps(_mm256_mul_ps(omb2, g), g));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    if (vmax) {
      // max_ps(a, b) returns b when either is NaN, as std::max(vmax, vi) returns vmax.
      vi = _mm256_max_ps(vi, _mm256_loadu_ps(vmax + i));
      _mm256_storeu_ps(vmax + i, vi);
    }
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(step, _mm256_div_ps(mi, denom))));
  }
  return i;
}

namespace {

template <bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
int64_t sgd_loop(const SgdTensor<float>& t, int64_t begin, int64_t end, const SgdScalars& s) {
  const __m256 sign = _mm256_set1_ps(s.sign), wd = _mm256_set1_ps(s.weight_decay);
  const __m256 lr = _mm256_set1_ps(s.lr), mom = _mm256_set1_ps(s.momentum);
  const __m256 keep = _mm256_set1_ps(s.keep);
  float* p = t.param;
  const float* grad = t.grad;
  float* buf = t.momentum_buffer;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    __m256 g = _mm256_mul_ps(sign, _mm256_loadu_ps(grad + i));
    const __m256 pi = _mm256_loadu_ps(p + i);
    if constexpr (kDecay) g = _mm256_add_ps(g, _mm256_mul_ps(wd, pi));
    if constexpr (kMomentum) {
      __m256 bi = g;
      if constexpr (!kFirst) {
        bi = _mm256_add_ps(_mm256_mul_ps(mom, _mm256_loadu_ps(buf + i)), _mm256_mul_ps(keep, g));
      }
      _mm256_storeu_ps(buf + i, bi);
      g = kNesterov ? _mm256_add_ps(g, _mm256_mul_ps(mom, bi)) : bi;
    }
    _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(lr, g)));
  }
  return i;
}

template <bool kDecay, bool kMomentum>
int64_t sgd_loop_by_step(const SgdTensor<float>& t, int64_t begin, int64_t end,
                         const SgdScalars& s) {
  if (s.first_step) {
    return s.nesterov ? sgd_loop<kDecay, kMomentum, true, true>(t, begin, end, s)
                      : sgd_loop<kDecay, kMomentum, true, false>(t, begin, end, s);
  }
  return s.nesterov ? sgd_loop<kDecay, kMomentum, false, true>(t, begin, end, s)
                    : sgd_loop<kDecay, kMomentum, false, false>(t, begin, end, s);
}

}  // namespace

int64_t sgd_chunk_avx2(const SgdTensor<float>& t, int64_t begin, int64_t end,
                       const SgdScalars& s) {
  if (s.decay) {
    return s.momentum_on ? sgd_loop_by_step<true, true>(t, begin, end, s)
                         : sgd_loop_by_step<true, false>(t, begin, end, s);
  }
  return s.momentum_on ? sgd_loop_by_step<false, true>(t, begin, end, s)
                       : sgd_loop_by_step<false, false>(t, begin, end, s);
}

}  // namespace fastnn::detail
