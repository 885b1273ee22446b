// Run-time CPU feature detection, used to pick ISA-specific kernels.
#pragma once

namespace fastnn {

// True when this build contains AVX2+FMA kernels and the CPU (and OS) can run them.
bool cpu_has_avx2_fma();
// Name of the instruction set the fast kernels use on this machine: "avx2+fma" or "portable".
const char* kernel_isa();

}  // namespace fastnn
