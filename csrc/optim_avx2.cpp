// AVX2 loop for the float Adam step (see optim.h, namespace detail). Same operations as the
// portable loop in optim.cpp; with FMA available the compiler may fuse a multiply and an add,
// so results can differ from the portable path by rounding, never across thread counts.
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

}  // namespace fastnn::detail
