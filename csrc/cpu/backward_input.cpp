// Depthwise backward-input on the CPU: the kernels are in backward_input.inc, compiled per ISA.
#define FASTDW_FAMILY_INC "cpu/backward_input.inc"
#define FASTDW_INSTANTIATE(scalar_t, acc_t)                                                   \
  template void backward_input_nchw<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*, \
                                                     const acc_t*, scalar_t*, int64_t,         \
                                                     int64_t);                                 \
  template void backward_input_nhwc<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*, \
                                                     const acc_t*, scalar_t*, int64_t, int64_t);
#include "cpu/instantiate.h"
