#pragma once
// Argument checks and Params construction shared by the CPU and CUDA host code. The Python API
// validates first with friendlier messages; these checks guard direct torch.ops.fastdw calls.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

#include "depthwise.h"

namespace fastdw {

inline void check_pair(c10::IntArrayRef v, const char* name, int64_t min_value) {
  TORCH_CHECK(v.size() == 2, "fastdw: ", name, " must have 2 elements (h, w), got ", v.size());
  TORCH_CHECK(v[0] >= min_value && v[1] >= min_value, "fastdw: ", name, " must be >= ",
              min_value, ", got (", v[0], ", ", v[1], ")");
}

// Layout the kernels run in: the input's own when it is NCHW- or NHWC-dense, so neither is
// ever copied; anything else is made dense in its suggested format first.
inline c10::MemoryFormat kernel_memory_format(const at::Tensor& t) {
  return t.suggest_memory_format() == c10::MemoryFormat::ChannelsLast
             ? c10::MemoryFormat::ChannelsLast
             : c10::MemoryFormat::Contiguous;
}

// Builds Params from the input/weight sizes, checking everything that does not depend on data.
inline DepthwiseParams make_params(c10::IntArrayRef input_size, c10::IntArrayRef weight_size,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   c10::IntArrayRef dilation, bool channels_last) {
  TORCH_CHECK(input_size.size() == 4, "fastdw: input must be 4-D (N, C, H, W), got ",
              input_size.size(), "-D");
  TORCH_CHECK(weight_size.size() == 4, "fastdw: weight must be 4-D (C*m, 1, kh, kw), got ",
              weight_size.size(), "-D");
  check_pair(stride, "stride", 1);
  check_pair(padding, "padding", 0);
  check_pair(dilation, "dilation", 1);
  DepthwiseParams p{};
  p.batch = input_size[0];
  p.in_channels = input_size[1];
  p.in_h = input_size[2];
  p.in_w = input_size[3];
  p.out_channels = weight_size[0];
  TORCH_CHECK(p.in_channels > 0, "fastdw: input must have at least one channel");
  TORCH_CHECK(weight_size[1] == 1 && p.out_channels > 0 && p.out_channels % p.in_channels == 0,
              "fastdw: weight must have shape (C*m, 1, kh, kw) with C = ", p.in_channels,
              " input channels, got ", weight_size);
  TORCH_CHECK(weight_size[2] > 0 && weight_size[3] > 0, "fastdw: kernel size must be positive, got ",
              weight_size);
  p.multiplier = p.out_channels / p.in_channels;
  p.kernel_h = weight_size[2];
  p.kernel_w = weight_size[3];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_h = padding[0];
  p.pad_w = padding[1];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];
  TORCH_CHECK(p.batch == 0 || (p.in_h > 0 && p.in_w > 0),
              "fastdw: input height and width must be positive for a non-empty batch, got ",
              input_size);
  // Sizes must stay far from int64 overflow (dilation * kernel, input + 2 * padding), as every
  // index computed from them must.
  constexpr int64_t kMaxExtent = int64_t(1) << 60;
  TORCH_CHECK(p.pad_h < kMaxExtent / 4 && p.pad_w < kMaxExtent / 4 &&
                  p.dilation_h < kMaxExtent / p.kernel_h &&
                  p.dilation_w < kMaxExtent / p.kernel_w && p.stride_h < kMaxExtent &&
                  p.stride_w < kMaxExtent,
              "fastdw: stride, padding or dilation too large (stride ", stride, ", padding ",
              padding, ", dilation ", dilation, ")");
  const int64_t eff_h = p.dilation_h * (p.kernel_h - 1) + 1;
  const int64_t eff_w = p.dilation_w * (p.kernel_w - 1) + 1;
  TORCH_CHECK(eff_h <= p.in_h + 2 * p.pad_h && eff_w <= p.in_w + 2 * p.pad_w,
              "fastdw: dilated kernel (", eff_h, ", ", eff_w,
              ") is larger than the padded input (", p.in_h + 2 * p.pad_h, ", ",
              p.in_w + 2 * p.pad_w, ")");
  p.out_h = conv_output_size(p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  p.out_w = conv_output_size(p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
  p.channels_last = channels_last;
  return p;
}

inline void check_same_device_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                                    const char* b_name) {
  TORCH_CHECK(a.device() == b.device(), "fastdw: ", b_name, " is on ", b.device(), " but ",
              a_name, " is on ", a.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "fastdw: ", b_name, " has dtype ",
              b.scalar_type(), " but ", a_name, " has dtype ", a.scalar_type());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "fastdw: ", name,
              " must be float64, float32, float16 or bfloat16, got ", t.scalar_type());
}

inline DepthwiseParams check_forward(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias,
                                     c10::IntArrayRef stride, c10::IntArrayRef padding,
                                     c10::IntArrayRef dilation) {
  check_floating(input, "input");
  check_same_device_dtype(input, "input", weight, "weight");
  if (bias.has_value()) {
    check_same_device_dtype(input, "input", *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "fastdw: bias must have shape (", weight.size(0), "), got ", bias->sizes());
  }
  TORCH_CHECK(input.dim() == 4, "fastdw: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  TORCH_CHECK(weight.dim() == 4, "fastdw: weight must be 4-D (C*m, 1, kh, kw), got ",
              weight.dim(), "-D");
  return make_params(input.sizes(), weight.sizes(), stride, padding, dilation,
                     kernel_memory_format(input) == c10::MemoryFormat::ChannelsLast);
}

}  // namespace fastdw
