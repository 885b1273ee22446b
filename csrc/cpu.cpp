#include "cpu.h"

#include <cstdlib>
#include <cstring>

namespace fastnn {

bool cpu_has_avx2_fma() {
#if defined(FASTNN_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  // FASTNN_DISABLE_AVX2=1 forces the portable kernels, so they can be tested on any machine.
  static const bool usable = [] {
    const char* off = std::getenv("FASTNN_DISABLE_AVX2");
    if (off && std::strcmp(off, "0") != 0 && off[0] != '\0') return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return usable;
#else
  return false;
#endif
}

const char* kernel_isa() { return cpu_has_avx2_fma() ? "avx2+fma" : "portable"; }

}  // namespace fastnn
