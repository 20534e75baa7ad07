// Registers the fastdw ops' CUDA kernels (ops.h) with the dispatcher. Kept apart from the op
// code so that the CPU harness can compile that code and bind it to its own op namespace.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY_IMPL(fastdw, CUDA, m) {
  m.impl("depthwise_conv2d", &fastdw::cuda::depthwise_conv2d);
  m.impl("depthwise_conv2d_backward_input", &fastdw::cuda::depthwise_conv2d_backward_input);
  m.impl("depthwise_conv2d_backward_weight", &fastdw::cuda::depthwise_conv2d_backward_weight);
}
