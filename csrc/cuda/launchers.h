#pragma once
// Host entry points of the per-layout CUDA translation units (kept apart so that nvcc compiles
// them in parallel). Tensors are dense in the layout p.channels_last names, on the current
// device; kernels run on the current stream. Each returns false, launching nothing, when the
// problem does not fit its path, and the caller falls back to a 64-bit kernel.
#include <ATen/core/Tensor.h>

#include "depthwise.h"

namespace fastdw {
namespace cuda {

// out = depthwise_conv2d(x, w, b); b may be undefined.
bool forward_nchw(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::Tensor& out,
                  const DepthwiseParams& p);
bool forward_nhwc(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::Tensor& out,
                  const DepthwiseParams& p);

bool backward_input_nchw(const at::Tensor& g, const at::Tensor& w, at::Tensor& grad_input,
                         const DepthwiseParams& p);
bool backward_input_nhwc(const at::Tensor& g, const at::Tensor& w, at::Tensor& grad_input,
                         const DepthwiseParams& p);

// Weight and bias gradient, pass 1: allocates `partial` (splits x Cout x (taps + 1), in the
// accumulation dtype; slot `taps` holds the bias) and fills every element of it.
bool backward_weight_partials_nchw(const at::Tensor& g, const at::Tensor& x,
                                   const DepthwiseParams& p, at::Tensor& partial,
                                   int64_t& splits);
bool backward_weight_partials_nhwc(const at::Tensor& g, const at::Tensor& x,
                                   const DepthwiseParams& p, at::Tensor& partial,
                                   int64_t& splits);

}  // namespace cuda
}  // namespace fastdw
