#pragma once
// Compiles one kernel file once per ISA copy of FASTDW_CPU_ISAS (isa.h). Usage, in the kernel
// file's .cpp:
//     #define FASTDW_KERNEL_FILE "cpu/forward_nchw.inc"
//     #include "cpu/per_isa.h"
// Each copy lives in namespace fastdw::cpu::<isa> with FASTDW_TARGET (its target attribute, on
// every function of the copy) and kFvecRegisters (how many 16-float vectors its register file
// holds, which sets the register tiles) and FASTDW_DPBF16 (whether the copy may use the
// bfloat16 dot-product instruction vdpbf16ps) defined, after the vector dialect (vec.inc). Only the
// declarations in kernels.h leave a copy; everything else in it has internal linkage.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>
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
#define FASTDW_DPBF16 0
constexpr int kFvecRegisters = 4;  // 16 SSE registers of 4 floats
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_DPBF16
#undef FASTDW_TARGET
}  // namespace generic

namespace avx2 {
#define FASTDW_TARGET FASTDW_TARGET_avx2
#define FASTDW_ISA_LEVEL 1
#define FASTDW_DPBF16 0
constexpr int kFvecRegisters = 8;  // 16 AVX registers of 8 floats
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_DPBF16
#undef FASTDW_TARGET
}  // namespace avx2

namespace avx512 {
#define FASTDW_TARGET FASTDW_TARGET_avx512
#define FASTDW_ISA_LEVEL 2
#define FASTDW_DPBF16 0
constexpr int kFvecRegisters = 32;  // 32 AVX-512 registers of 16 floats
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_DPBF16
#undef FASTDW_TARGET
}  // namespace avx512

// The AVX-512 copy again, where the bfloat16 kernels that can multiply pairs of bfloat16 with
// vdpbf16ps do (CPUs with AVX512_BF16: Cooper Lake, Sapphire Rapids and later, Zen 4).
namespace avx512_bf16 {
#define FASTDW_TARGET FASTDW_TARGET_avx512_bf16
#define FASTDW_ISA_LEVEL 2
#define FASTDW_DPBF16 1
constexpr int kFvecRegisters = 32;
#include "cpu/vec.inc"
#include FASTDW_KERNEL_FILE
#undef FASTDW_ISA_LEVEL
#undef FASTDW_DPBF16
#undef FASTDW_TARGET
}  // namespace avx512_bf16

}  // namespace cpu
}  // namespace fastdw
