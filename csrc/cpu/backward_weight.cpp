// Depthwise backward-weight and bias on the CPU: the kernels are in backward_weight.inc,
// compiled per ISA here.
#define FASTDW_FAMILY_INC "cpu/backward_weight.inc"
#define FASTDW_INSTANTIATE(scalar_t, acc_t)                                                     \
  template void backward_weight_nchw<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*, \
                                                      const scalar_t*, double*, double*,        \
                                                      int64_t, int64_t);                        \
  template void backward_weight_nhwc_partials<scalar_t, acc_t>(                                 \
      const DepthwiseParams&, const scalar_t*, const scalar_t*, int64_t, acc_t*, int64_t, int64_t);
#define FASTDW_INSTANTIATE_REDUCE(acc_t)                                                     \
  template void backward_weight_nhwc_reduce<acc_t>(const DepthwiseParams&, const acc_t*,     \
                                                   int64_t, double*, double*, int64_t, int64_t);
#include "cpu/instantiate.h"

namespace fastdw {
namespace cpu {
namespace generic {
FASTDW_INSTANTIATE_REDUCE(double)
FASTDW_INSTANTIATE_REDUCE(float)
}  // namespace generic
namespace avx2 {
FASTDW_INSTANTIATE_REDUCE(double)
FASTDW_INSTANTIATE_REDUCE(float)
}  // namespace avx2

int64_t backward_weight_nhwc_rows_per_chunk(const DepthwiseParams& p) {
  const int64_t rows = p.batch * p.out_h;
  constexpr int64_t kMaxChunks = 64;
  return std::max<int64_t>(1, (rows + kMaxChunks - 1) / kMaxChunks);
}

}  // namespace cpu
}  // namespace fastdw
