#pragma once
// Compiles one kernel file once per ISA copy of FASTDW_CPU_ISAS (isa.h). Usage, in the kernel
// file's .cpp:
//     #define FASTDW_KERNEL_FILE "cpu/forward_nchw.inc"
//     #include "cpu/per_isa.h"
// Each copy lives in namespace fastdw::cpu::<isa> with FASTDW_TARGET (its target attribute, on
// every function of the copy) and kFvecRegisters (how many 16-float vectors its register file
// holds, which sets the register tiles) defined, after the vector dialect (vec.inc). Only the
// declarations in kernels.h leave a copy; everything else in it has internal linkage.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cpu/kernels.h"

#if FASTDW_X86
#include <immintrin.h>
#endif

namespace fastdw {
namespace cpu {

namespace generic {
#define FASTDW_TARGET FASTDW_TARGET_generic
#define FASTDW_ISA_LEVEL 0
constexpr int kFvecRegisters = 4;  // 16 SSE registers of 4 floats
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_TARGET
}  // namespace generic

namespace avx2 {
#define FASTDW_TARGET FASTDW_TARGET_avx2
#define FASTDW_ISA_LEVEL 1
constexpr int kFvecRegisters = 8;  // 16 AVX registers of 8 floats
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_TARGET
}  // namespace avx2

namespace avx512 {
#define FASTDW_TARGET FASTDW_TARGET_avx512
#define FASTDW_ISA_LEVEL 2
constexpr int kFvecRegisters = 32;  // 32 AVX-512 registers of 16 floats
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_TARGET
}  // namespace avx512

}  // namespace cpu
}  // namespace fastdw
