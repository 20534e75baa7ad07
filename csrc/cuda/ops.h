#pragma once
// The three fastdw ops on CUDA tensors: argument checks, layout, and the choice of kernel path.
// register.cu binds them to the dispatcher's CUDA key; the CPU harness (tests/cuda_harness)
// binds the same functions to its own op namespace and runs their launches in its simulator.
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <tuple>

namespace fastdw {
namespace cuda {

at::Tensor depthwise_conv2d(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation);

at::Tensor depthwise_conv2d_backward_input(const at::Tensor& grad_output,
                                           const at::Tensor& weight, c10::IntArrayRef input_size,
                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                           c10::IntArrayRef dilation);

// (grad_weight, grad_bias); deterministic.
std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, c10::IntArrayRef weight_size,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation);

}  // namespace cuda
}  // namespace fastdw
