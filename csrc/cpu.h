// Run-time CPU feature detection, used to pick ISA-specific kernels.
#pragma once

#include <cstdint>

namespace fastnn {

// True when this build contains AVX2+FMA kernels and the CPU (and OS) can run them.
bool cpu_has_avx2_fma();
// True when, in addition, the CPU and OS can run the AVX-512F kernels (which the GEMM prefers).
bool cpu_has_avx512f();
// Name of the instruction set the fastest kernels use on this machine: "avx512f" (the GEMM's
// micro-kernel; the other kernels stay AVX2), "avx2+fma" or "portable".
const char* kernel_isa();
// Size in bytes of the largest data cache the operating system reports for CPU 0 (the last
// level, usually shared by several cores), or 0 when it does not say. Read once.
int64_t last_level_cache_bytes();

}  // namespace fastnn
