// AVX2 loops for relu and leaky_relu (see activations.h, namespace detail).
#include <immintrin.h>

#include "activations.h"

namespace fastnn::detail {

int64_t relu_family_forward_avx2(float* y, const float* x, int64_t n, bool leaky, float alpha) {
  const __m256 zero = _mm256_setzero_ps(), a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 positive = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);  // false for NaN, as x > 0
    const __m256 other = leaky ? _mm256_mul_ps(a, v) : zero;
    _mm256_storeu_ps(y + i, _mm256_blendv_ps(other, v, positive));
  }
  return i;
}

int64_t relu_family_backward_avx2(float* dx, const float* dy, const float* src, int64_t n,
                                  bool leaky, float alpha) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 slope = leaky ? _mm256_set1_ps(alpha) : zero;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 positive = _mm256_cmp_ps(_mm256_loadu_ps(src + i), zero, _CMP_GT_OQ);
    // Multiply by the derivative (1 or the slope) rather than select dy, so that NaN and
    // infinite dy propagate exactly as in the scalar dy * act_derivative(...).
    const __m256 d = _mm256_blendv_ps(slope, one, positive);
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), d));
  }
  return i;
}

}  // namespace fastnn::detail
