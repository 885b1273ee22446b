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

namespace fastnn::detail {
namespace {

// exp(x) for x <= 0 (NaN passes through). Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2,
// a degree-6 polynomial for exp(r) (the Cephes expf coefficients) and 2^n built in the
// exponent bits. Below -87.3, where 2^n would leave the normal range, the result is zero.
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.3365447f);
  const __m256 below = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 xc = _mm256_max_ps(x, lowest);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  y = _mm256_andnot_ps(below, y);
  return _mm256_blendv_ps(y, x, nan);
}

// sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below, with e = exp(-|x|) <= 1.
inline __m256 sigmoid(__m256 x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 e = exp_nonpositive(_mm256_or_ps(x, sign_bit));  // exp(-|x|)
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 denom = _mm256_add_ps(one, e);
  const __m256 nonneg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  return _mm256_div_ps(_mm256_blendv_ps(e, one, nonneg), denom);
}

// tanh(x): Cephes tanhf's odd polynomial for |x| < 0.625, where 1 - e would lose digits to
// cancellation; sign(x) * (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29 above.
inline __m256 tanh(__m256 x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256 ax = _mm256_andnot_ps(sign_bit, x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
  // x + x^3 * p(x^2) has the sign of x there; set it explicitly so that tanh(-0) = -0.
  const __m256 small_abs = _mm256_fmadd_ps(_mm256_mul_ps(p, z), ax, ax);
  const __m256 small = _mm256_or_ps(small_abs, _mm256_and_ps(sign_bit, x));
  const __m256 e = exp_nonpositive(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0f)));
  const __m256 large = _mm256_or_ps(
      _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e)), _mm256_and_ps(sign_bit, x));
  return _mm256_blendv_ps(large, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

// The argument of tanh in gelu_tanh: sqrt(2 / pi) * (x + 0.044715 x^3).
inline __m256 gelu_tanh_inner(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  return _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                       _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(0.044715f), x3)));
}

}  // namespace

int64_t tanh_forward_avx2(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, tanh(_mm256_loadu_ps(x + i)));
  return i;
}

int64_t gelu_tanh_forward_avx2(float* y, const float* x, int64_t n) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 t = tanh(gelu_tanh_inner(v));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, t)));
  }
  return i;
}

int64_t gelu_tanh_backward_avx2(float* dx, const float* dy, const float* x, int64_t n) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256 k = _mm256_set1_ps(0.7978845608028654f);
  const __m256 c3 = _mm256_set1_ps(float(3 * 0.044715));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 t = tanh(gelu_tanh_inner(v));
    // 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
    const __m256 v2 = _mm256_mul_ps(v, v);
    const __m256 du = _mm256_mul_ps(k, _mm256_add_ps(one, _mm256_mul_ps(c3, v2)));
    const __m256 sech2 = _mm256_sub_ps(one, _mm256_mul_ps(t, t));
    const __m256 d = _mm256_add_ps(_mm256_mul_ps(half, _mm256_add_ps(one, t)),
                                   _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), sech2), du));
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), d));
  }
  return i;
}

int64_t exp_shifted_avx2(float* y, const float* x, float shift, int64_t n) {
  const __m256 s = _mm256_set1_ps(shift);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
  }
  return i;
}

float sum_exp_shifted_avx2(const float* x, float shift, int64_t n, int64_t* done) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc = _mm256_add_ps(acc, exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
  }
  *done = i;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.0f;
  for (float l : lanes) sum += l;
  return sum;
}

float row_max_avx2(const float* x, int64_t cols) {
  float m = x[0];
  int64_t j = 0;
  if (cols >= 8) {
    __m256 acc = _mm256_loadu_ps(x);
    for (j = 8; j + 8 <= cols; j += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + j));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (float l : lanes) m = l > m ? l : m;
  }
  for (; j < cols; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

int64_t sigmoid_forward_avx2(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, sigmoid(_mm256_loadu_ps(x + i)));
  return i;
}

int64_t silu_forward_avx2(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(v, sigmoid(v)));
  }
  return i;
}

int64_t silu_backward_avx2(float* dx, const float* dy, const float* x, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 s = sigmoid(v);
    // s * (1 + x * (1 - s))
    const __m256 d = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(v, _mm256_sub_ps(one, s))));
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), d));
  }
  return i;
}

}  // namespace fastnn::detail
