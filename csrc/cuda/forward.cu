// depthwise_conv2d on CUDA: checks, layout, and the choice between the tiled NCHW / vectorised
// NHWC kernels and the 64-bit fallback.
#include <ATen/ops/empty.h>

#include "depthwise_args.h"
#include "direct.cuh"
#include "launchers.h"
#include "ops.h"

namespace fastdw {
namespace cuda {

// The dispatcher sends a call here only when a tensor argument is on a CUDA device, and
// check_forward requires every tensor on the input's device: the input is a CUDA tensor.
at::Tensor depthwise_conv2d(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation) {
  const DepthwiseParams p = check_forward(input, weight, bias, stride, padding, dilation);
  const c10::cuda::CUDAGuard guard(input.device());
  const c10::MemoryFormat fmt = kernel_memory_format(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w},
                             input.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const bool done = p.channels_last ? forward_nhwc(x, w, b, out, p) : forward_nchw(x, w, b, out, p);
  if (!done) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "fastdw_depthwise_forward_direct_cuda", [&] {
      launch_direct<scalar_t, false>(x, w.const_data_ptr<scalar_t>(),
                                     b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, out, p,
                                     at::cuda::getCurrentCUDAStream());
    });
  }
  return out;
}

}  // namespace cuda
}  // namespace fastdw
