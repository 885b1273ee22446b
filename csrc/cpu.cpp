#include "cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace fastnn {

namespace {

// Whether the environment variable `name` is set to something other than "" or "0".
bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value && value[0] != '\0' && std::strcmp(value, "0") != 0;
}

}  // namespace

bool cpu_has_avx2_fma() {
#if defined(FASTNN_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  // FASTNN_DISABLE_AVX2=1 forces the portable kernels, so they can be tested on any machine.
  static const bool usable = [] {
    if (env_flag("FASTNN_DISABLE_AVX2")) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return usable;
#else
  return false;
#endif
}

bool cpu_has_avx512f() {
  // The AVX-512 kernels are built wherever the AVX2 ones are. FASTNN_DISABLE_AVX512=1 keeps a
  // process on the AVX2 kernels (to compare the two on one machine); the compiler's check also
  // asks the OS (XGETBV) whether it saves the zmm registers.
#if defined(FASTNN_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  static const bool usable =
      cpu_has_avx2_fma() && !env_flag("FASTNN_DISABLE_AVX512") && __builtin_cpu_supports("avx512f");
  return usable;
#else
  return false;
#endif
}

const char* kernel_isa() {
  if (cpu_has_avx512f()) return "avx512f";
  return cpu_has_avx2_fma() ? "avx2+fma" : "portable";
}

namespace {

// Linux describes each cache of a CPU in /sys/devices/system/cpu/cpu0/cache/index<N>/ (level,
// type, size as "8192K"). This is what the kernel derived from CPUID for this (virtual) machine,
// which inside a VM can differ from what CPUID's cache leaves report to user space.
int64_t sysfs_cache_bytes(int index, int* level) {
  const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
  std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
  std::string type, size;
  if (!(level_file >> *level) || !(type_file >> type) || !(size_file >> size)) return -1;
  if (type == "Instruction") return 0;
  const int64_t value = std::strtoll(size.c_str(), nullptr, 10);
  const char unit = size.empty() ? ' ' : size.back();
  if (unit == 'K') return value << 10;
  if (unit == 'M') return value << 20;
  return value;
}

}  // namespace

int64_t last_level_cache_bytes() {
  static const int64_t bytes = [] {
    int64_t best = 0;
    int best_level = 0;
    for (int index = 0; index < 16; ++index) {
      int level = 0;
      const int64_t size = sysfs_cache_bytes(index, &level);
      if (size < 0) break;
      if (size > 0 && level >= best_level) {
        best = level > best_level ? size : std::max(best, size);
        best_level = level;
      }
    }
    return best;
  }();
  return bytes;
}

}  // namespace fastnn
