// The in-place channels_last forward (direct_nhwc.inc), compiled for each instruction set (its
// own translation unit: the unrolled tiles take a while to compile). direct_pixels(nb): the output
// pixels of a tile of nb channel blocks, from the register budget (UR*nb accumulators plus nb
// weight vectors; AVX-512 has 32 registers of one block, AVX2 16 of half a block).
#include <algorithm>
#include <cstring>

#include "cpu/blocked.h"

#define FASTDW_INSTANTIATE_DIRECT(scalar_t)                                             \
  template void forward_direct_nhwc<scalar_t>(const DepthwiseParams&, const scalar_t*,   \
                                              const float*, scalar_t*, int64_t, int64_t);

namespace fastdw {
namespace cpu {
namespace generic {
#define FASTDW_TARGET
constexpr int direct_pixels(int nb) { return nb == 1 ? 2 : 1; }
#include "cpu/lanes.inc"
#include "cpu/direct_nhwc.inc"
FASTDW_BLOCKED_DTYPES(FASTDW_INSTANTIATE_DIRECT)
#undef FASTDW_TARGET
}  // namespace generic

namespace avx2 {
#define FASTDW_TARGET FASTDW_TARGET_AVX2
constexpr int direct_pixels(int nb) { return nb == 1 ? 4 : nb == 2 ? 2 : 1; }
#include "cpu/lanes.inc"
#include "cpu/direct_nhwc.inc"
FASTDW_BLOCKED_DTYPES(FASTDW_INSTANTIATE_DIRECT)
#undef FASTDW_TARGET
}  // namespace avx2

namespace avx512 {
#define FASTDW_TARGET FASTDW_TARGET_AVX512
constexpr int direct_pixels(int nb) { return nb == 1 ? 8 : nb == 2 ? 6 : 4; }
#include "cpu/lanes.inc"
#include "cpu/direct_nhwc.inc"
FASTDW_BLOCKED_DTYPES(FASTDW_INSTANTIATE_DIRECT)
#undef FASTDW_TARGET
}  // namespace avx512
}  // namespace cpu
}  // namespace fastdw
