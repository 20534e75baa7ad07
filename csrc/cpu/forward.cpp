// Depthwise forward on the CPU: the kernels are in forward.inc, compiled per ISA here.
#define FASTDW_FAMILY_INC "cpu/forward.inc"
#define FASTDW_INSTANTIATE(scalar_t, acc_t)                                                  \
  template void forward_nchw<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*,      \
                                              const acc_t*, const acc_t*, scalar_t*, int64_t, \
                                              int64_t);                                     \
  template void forward_nhwc<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*,      \
                                              const acc_t*, const acc_t*, scalar_t*, int64_t, \
                                              int64_t);
#include "cpu/instantiate.h"
