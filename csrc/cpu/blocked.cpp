// The channel-blocked kernels (blocked.inc), compiled for each instruction set. The register
// budget sets kUnroll, the pixels that share a weight load: 8 accumulators of 16 floats fill half
// of AVX-512's 32 registers; under AVX2 each accumulator takes two of the 16 registers.
#include <cstring>
#include <vector>

#include "cpu/blocked.h"

// A comma-separated list as one macro argument (shuffle indices in blocked.inc).
#define FASTDW_LIST(...) __VA_ARGS__

#define FASTDW_INSTANTIATE_BLOCKED(scalar_t)                                                   \
  template void forward_blocked<scalar_t>(const DepthwiseParams&, const BlockedGeometry&,      \
                                          const scalar_t*, const float*, scalar_t*, int64_t,   \
                                          int64_t);                                            \
  template void backward_weight_blocked<scalar_t>(const DepthwiseParams&,                      \
                                                  const BlockedGeometry&, const scalar_t*,     \
                                                  const scalar_t*, float*, int64_t, int64_t);

namespace fastdw {
namespace cpu {
namespace generic {
#define FASTDW_TARGET
constexpr int kUnroll = 2;
#include "cpu/lanes.inc"
#include "cpu/blocked.inc"
FASTDW_BLOCKED_DTYPES(FASTDW_INSTANTIATE_BLOCKED)
#undef FASTDW_TARGET
}  // namespace generic

namespace avx2 {
#define FASTDW_TARGET FASTDW_TARGET_AVX2
constexpr int kUnroll = 4;
#include "cpu/lanes.inc"
#include "cpu/blocked.inc"
FASTDW_BLOCKED_DTYPES(FASTDW_INSTANTIATE_BLOCKED)
#undef FASTDW_TARGET
}  // namespace avx2

namespace avx512 {
#define FASTDW_TARGET FASTDW_TARGET_AVX512
constexpr int kUnroll = 7;  // 7 divides every width of MobileNet, EfficientNet, ConvNeXt
#include "cpu/lanes.inc"
#include "cpu/blocked.inc"
FASTDW_BLOCKED_DTYPES(FASTDW_INSTANTIATE_BLOCKED)
#undef FASTDW_TARGET
}  // namespace avx512
}  // namespace cpu
}  // namespace fastdw
