// depthwise_conv2d_backward_weight on CUDA: checks, layout, pass 1 (per-layout partial sums,
// or the 64-bit tap-owner fallback) and pass 2 (this file: partials added in split order).
// Deterministic: every sum has a fixed, shape-determined order; no atomics.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "depthwise_args.h"
#include "launchers.h"
#include "ops.h"
#include "wgrad_taps.cuh"

namespace fastdw {
namespace cuda {
namespace {

// Pass 2: one thread per (co, tap or bias) adds its `splits` partials in split order.
template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
wgrad_reduce_kernel(const at::opmath_type<scalar_t>* __restrict__ partial,
                    scalar_t* __restrict__ grad_weight, scalar_t* __restrict__ grad_bias,
                    const int64_t cout, const int64_t taps, const int64_t splits) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = cout * (taps + 1);
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  acc_t s = 0;
  for (int64_t k = 0; k < splits; ++k) s += partial[k * total + idx];
  const int64_t co = idx / (taps + 1);
  const int64_t t = idx - co * (taps + 1);
  if (t < taps) {
    grad_weight[co * taps + t] = static_cast<scalar_t>(s);
  } else {
    grad_bias[co] = static_cast<scalar_t>(s);
  }
}

}  // namespace

// input and grad_output share a device (checked), and the dispatcher sends a call here only
// when one of them is a CUDA tensor.
std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, c10::IntArrayRef weight_size,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation) {
  check_floating(input, "input");
  check_same_device_dtype(input, "input", grad_output, "grad_output");
  TORCH_CHECK(input.dim() == 4, "fastdw: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  const c10::MemoryFormat fmt = kernel_memory_format(input);
  const DepthwiseParams p = make_params(input.sizes(), weight_size, stride, padding, dilation,
                                        fmt == c10::MemoryFormat::ChannelsLast);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.batch &&
                  grad_output.size(1) == p.out_channels && grad_output.size(2) == p.out_h &&
                  grad_output.size(3) == p.out_w,
              "fastdw: grad_output must have shape (", p.batch, ", ", p.out_channels, ", ",
              p.out_h, ", ", p.out_w, "), got ", grad_output.sizes());
  const c10::cuda::CUDAGuard guard(input.device());
  if (grad_output.numel() == 0) {
    return {at::zeros(weight_size, input.options()), at::zeros({p.out_channels}, input.options())};
  }
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor g = grad_output.contiguous(fmt);
  at::Tensor grad_weight = at::empty(weight_size, input.options());
  at::Tensor grad_bias = at::empty({p.out_channels}, input.options());
  at::Tensor partial;
  int64_t splits = 0;
  const bool done = p.channels_last ? backward_weight_partials_nhwc(g, x, p, partial, splits)
                                    : backward_weight_partials_nchw(g, x, p, partial, splits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "fastdw_depthwise_backward_weight_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (!done) {
      // 64-bit tap-owner kernel: any layout, any size.
      launch_wgrad_taps<scalar_t, 0, int64_t>(g, x, p, partial, splits);
    }
    const int64_t total = p.out_channels * (p.taps() + 1);
    launch_kernel<wgrad_reduce_kernel<scalar_t>>(
        static_cast<unsigned>(cdiv(total, kMaxThreads)), kMaxThreads, 0,
        at::cuda::getCurrentCUDAStream(), partial.const_data_ptr<acc_t>(),
        grad_weight.mutable_data_ptr<scalar_t>(), grad_bias.mutable_data_ptr<scalar_t>(),
        p.out_channels, p.taps(), splits);
  });
  return {grad_weight, grad_bias};
}

}  // namespace cuda
}  // namespace fastdw
