#pragma once
// Compiles one kernel family (a *.inc file) for every instruction set and dtype. Usage, in the
// family's .cpp:   #define FASTDW_FAMILY_INC "cpu/forward.inc"
//                  #define FASTDW_INSTANTIATE(scalar_t, acc_t) ...explicit instantiations...
//                  #include "cpu/instantiate.h"
#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"

#if FASTDW_HAVE_AVX2_BUILD
#include <immintrin.h>
#endif

#define FASTDW_INSTANTIATE_ALL_TYPES      \
  FASTDW_INSTANTIATE(double, double)      \
  FASTDW_INSTANTIATE(float, float)        \
  FASTDW_INSTANTIATE(c10::BFloat16, float) \
  FASTDW_INSTANTIATE(c10::Half, float)

namespace fastdw {
namespace cpu {
namespace generic {
#define FASTDW_TARGET
#include "cpu/plane.inc"
#include FASTDW_FAMILY_INC
FASTDW_INSTANTIATE_ALL_TYPES
#undef FASTDW_TARGET
}  // namespace generic

namespace avx2 {
#define FASTDW_TARGET FASTDW_TARGET_AVX2
#if FASTDW_HAVE_AVX2_BUILD
#define FASTDW_AVX2_KERNELS
#include "cpu/vec_avx2.inc"
#endif
#include "cpu/plane.inc"
#include FASTDW_FAMILY_INC
FASTDW_INSTANTIATE_ALL_TYPES
#undef FASTDW_AVX2_KERNELS
#undef FASTDW_TARGET
}  // namespace avx2
}  // namespace cpu
}  // namespace fastdw
