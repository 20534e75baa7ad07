// The op schemas, and nothing else: each device registers its kernels in its own file.
#include <torch/library.h>

TORCH_LIBRARY(fastdw, m) {
  m.def(
      "depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] dilation) -> Tensor");
  // grad_input has input_size and grad_output's memory format.
  m.def(
      "depthwise_conv2d_backward_input(Tensor grad_output, Tensor weight, SymInt[4] input_size, "
      "int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  // Returns (grad_weight, grad_bias): the bias gradient is a by-product of the same pass over
  // grad_output, so it is always computed.
  m.def(
      "depthwise_conv2d_backward_weight(Tensor grad_output, Tensor input, SymInt[4] weight_size, "
      "int[2] stride, int[2] padding, int[2] dilation) -> (Tensor, Tensor)");
}
