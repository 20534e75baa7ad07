// Depthwise backward-input on the CPU: grad_input = transposed depthwise conv of grad_output.
//
// Written as a gather over input rows: input row ih receives tap row i from output row
// oh = (ih + pad - i * dilation) / stride when that division is exact and in range. Each work
// item owns the row it writes, so threads never race and results do not depend on scheduling.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"

namespace fastdw {
namespace cpu {
namespace {

// The output row that reads input row ih through kernel row i, or -1.
inline int64_t source_row(const DepthwiseParams& p, int64_t ih, int64_t i) {
  const int64_t num = ih + p.pad_h - i * p.dilation_h;
  if (num < 0 || num % p.stride_h != 0) return -1;
  const int64_t oh = num / p.stride_h;
  return oh < p.out_h ? oh : -1;
}

}  // namespace

template <typename scalar_t, typename acc_t>
void backward_input_nchw(const DepthwiseParams& p, const scalar_t* __restrict grad_output,
                         const acc_t* __restrict weight, scalar_t* __restrict grad_input,
                         int64_t begin, int64_t end) {
  const int64_t taps = p.taps();
  std::vector<acc_t> acc_buf(p.in_w);
  acc_t* __restrict acc = acc_buf.data();
  std::vector<Range> cols(p.kernel_w);
  for (int64_t j = 0; j < p.kernel_w; ++j)
    cols[j] = valid_outputs_for_tap(j, p.in_w, p.out_w, p.stride_w, p.pad_w, p.dilation_w);

  for (int64_t r = begin; r < end; ++r) {
    const int64_t ih = r % p.in_h;
    const int64_t c = (r / p.in_h) % p.in_channels;
    const int64_t n = r / (p.in_h * p.in_channels);
    std::fill(acc, acc + p.in_w, acc_t(0));
    for (int64_t q = 0; q < p.multiplier; ++q) {
      const int64_t co = c * p.multiplier + q;
      const scalar_t* gplane = grad_output + (n * p.out_channels + co) * p.out_h * p.out_w;
      const acc_t* w = weight + co * taps;
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t oh = source_row(p, ih, i);
        if (oh < 0) continue;
        const scalar_t* __restrict grow = gplane + oh * p.out_w;
        for (int64_t j = 0; j < p.kernel_w; ++j) {
          const acc_t wv = w[i * p.kernel_w + j];
          const int64_t offset = j * p.dilation_w - p.pad_w;
          const int64_t b = cols[j].begin, e = cols[j].end;
          if (p.stride_w == 1) {
#pragma omp simd
            for (int64_t ow = b; ow < e; ++ow)
              acc[ow + offset] += wv * static_cast<acc_t>(grow[ow]);
          } else {
            const int64_t s = p.stride_w;
            // Distinct ow write distinct columns, so the strided scatter is still independent.
#pragma omp simd
            for (int64_t ow = b; ow < e; ++ow)
              acc[ow * s + offset] += wv * static_cast<acc_t>(grow[ow]);
          }
        }
      }
    }
    scalar_t* __restrict out_row = grad_input + r * p.in_w;
#pragma omp simd
    for (int64_t iw = 0; iw < p.in_w; ++iw) out_row[iw] = static_cast<scalar_t>(acc[iw]);
  }
}

template <typename scalar_t, typename acc_t>
void backward_input_nhwc(const DepthwiseParams& p, const scalar_t* __restrict grad_output,
                         const acc_t* __restrict weight, scalar_t* __restrict grad_input,
                         int64_t begin, int64_t end) {
  const int64_t C = p.in_channels, Cout = p.out_channels, m = p.multiplier;
  std::vector<acc_t> acc_buf(p.in_w * C);
  acc_t* __restrict acc = acc_buf.data();
  std::vector<Range> cols(p.kernel_w);
  for (int64_t j = 0; j < p.kernel_w; ++j)
    cols[j] = valid_outputs_for_tap(j, p.in_w, p.out_w, p.stride_w, p.pad_w, p.dilation_w);

  for (int64_t r = begin; r < end; ++r) {
    const int64_t ih = r % p.in_h;
    const int64_t n = r / p.in_h;
    std::fill(acc, acc + p.in_w * C, acc_t(0));
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      const int64_t oh = source_row(p, ih, i);
      if (oh < 0) continue;
      const scalar_t* grow = grad_output + (n * p.out_h + oh) * p.out_w * Cout;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const acc_t* __restrict w = weight + (i * p.kernel_w + j) * Cout;
        const int64_t offset = j * p.dilation_w - p.pad_w;
        for (int64_t ow = cols[j].begin; ow < cols[j].end; ++ow) {
          const scalar_t* __restrict g = grow + ow * Cout;
          acc_t* __restrict a = acc + (ow * p.stride_w + offset) * C;
          if (m == 1) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) a[c] += w[c] * static_cast<acc_t>(g[c]);
          } else {
            for (int64_t c = 0; c < C; ++c) {
              acc_t s = 0;
              for (int64_t q = 0; q < m; ++q) s += w[c * m + q] * static_cast<acc_t>(g[c * m + q]);
              a[c] += s;
            }
          }
        }
      }
    }
    scalar_t* __restrict out_row = grad_input + r * p.in_w * C;
#pragma omp simd
    for (int64_t k = 0; k < p.in_w * C; ++k) out_row[k] = static_cast<scalar_t>(acc[k]);
  }
}

#define FASTDW_INSTANTIATE_BACKWARD_INPUT(scalar_t, acc_t)                                     \
  template void backward_input_nchw<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*, \
                                                     const acc_t*, scalar_t*, int64_t,         \
                                                     int64_t);                                 \
  template void backward_input_nhwc<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*, \
                                                     const acc_t*, scalar_t*, int64_t, int64_t);
FASTDW_INSTANTIATE_BACKWARD_INPUT(double, double)
FASTDW_INSTANTIATE_BACKWARD_INPUT(float, float)
FASTDW_INSTANTIATE_BACKWARD_INPUT(c10::BFloat16, float)
FASTDW_INSTANTIATE_BACKWARD_INPUT(c10::Half, float)

}  // namespace cpu
}  // namespace fastdw
