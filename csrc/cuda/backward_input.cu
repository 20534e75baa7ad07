// depthwise_conv2d_backward_input on CUDA: checks, layout, path choice.
#include <ATen/ops/empty.h>

#include "depthwise_args.h"
#include "direct.cuh"
#include "launchers.h"
#include "ops.h"

namespace fastdw {
namespace cuda {

// grad_output and weight share a device (checked), and the dispatcher sends a call here only
// when one of them is a CUDA tensor.
at::Tensor depthwise_conv2d_backward_input(const at::Tensor& grad_output,
                                           const at::Tensor& weight, c10::IntArrayRef input_size,
                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                           c10::IntArrayRef dilation) {
  check_floating(grad_output, "grad_output");
  check_same_device_dtype(grad_output, "grad_output", weight, "weight");
  const c10::MemoryFormat fmt = kernel_memory_format(grad_output);
  const DepthwiseParams p = make_params(input_size, weight.sizes(), stride, padding, dilation,
                                        fmt == c10::MemoryFormat::ChannelsLast);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.batch &&
                  grad_output.size(1) == p.out_channels && grad_output.size(2) == p.out_h &&
                  grad_output.size(3) == p.out_w,
              "fastdw: grad_output must have shape (", p.batch, ", ", p.out_channels, ", ",
              p.out_h, ", ", p.out_w, "), got ", grad_output.sizes());
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor g = grad_output.contiguous(fmt);
  const at::Tensor w = weight.contiguous();
  at::Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const bool done = p.channels_last ? backward_input_nhwc(g, w, grad_input, p)
                                    : backward_input_nchw(g, w, grad_input, p);
  if (!done) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                    "fastdw_depthwise_backward_input_direct_cuda", [&] {
      launch_direct<scalar_t, true>(g, w.const_data_ptr<scalar_t>(), nullptr, grad_input, p,
                                    at::cuda::getCurrentCUDAStream());
    });
  }
  return grad_input;
}

}  // namespace cuda
}  // namespace fastdw
