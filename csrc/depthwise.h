#pragma once
// Geometry of one depthwise convolution, shared by every device. Pure C++ (no torch headers) so
// that kernel translation units stay cheap to compile.
#include <cstdint>

namespace fastdw {

// All tensors handed to a kernel are dense in one of two layouts, chosen by the host code from
// the input's memory format: NCHW, or NHWC (channels_last). Offsets are therefore derived from
// the sizes below; index math is 64-bit throughout so tensors over 2^31 elements are safe.
struct DepthwiseParams {
  int64_t batch;
  int64_t in_channels;
  int64_t multiplier;    // output channel co reads input channel co / multiplier
  int64_t out_channels;  // in_channels * multiplier
  int64_t in_h, in_w;
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
  bool channels_last;

  int64_t input_numel() const { return batch * in_channels * in_h * in_w; }
  int64_t output_numel() const { return batch * out_channels * out_h * out_w; }
  int64_t taps() const { return kernel_h * kernel_w; }
};

// Floor division for a possibly negative numerator and a positive denominator.
inline int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Same formula as ATen's conv output size. Callers check first that the dilated kernel fits in
// the padded input, so the numerator is never negative.
inline int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                int64_t dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

// The output positions o in [begin, end) whose tap k reads an in-bounds input position
// i = o * stride - pad + k * dilation, i.e. 0 <= i < in. Lets kernels split interior from border
// analytically, with no bounds check inside the hot loop.
struct Range {
  int64_t begin, end;
  bool empty() const { return begin >= end; }
};
inline Range valid_outputs_for_tap(int64_t k, int64_t in, int64_t out, int64_t stride,
                                   int64_t pad, int64_t dilation) {
  const int64_t offset = k * dilation - pad;  // i = o * stride + offset
  int64_t begin = ceil_div(-offset, stride);
  int64_t end = floor_div(in - 1 - offset, stride) + 1;
  if (begin < 0) begin = 0;
  if (end > out) end = out;
  return {begin, end};
}

}  // namespace fastdw
