// Depthwise forward on the CPU.
//
// NCHW: each output row is accumulated in a small acc_t buffer, one kernel tap at a time. For a
// tap, the output columns that read in-bounds input form one analytic range, so the border needs
// no special code and the inner loop is a bounds-check-free axpy along W that vectorises.
// NHWC: the vector dimension is the channel; each output pixel accumulates its taps over a
// contiguous run of channels.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"

namespace fastdw {
namespace cpu {

template <typename scalar_t, typename acc_t>
void forward_nchw(const DepthwiseParams& p, const scalar_t* __restrict input,
                  const acc_t* __restrict weight, const acc_t* __restrict bias,
                  scalar_t* __restrict output, int64_t begin, int64_t end) {
  const int64_t taps = p.taps();
  std::vector<acc_t> acc_buf(p.out_w);
  acc_t* __restrict acc = acc_buf.data();
  std::vector<Range> cols(p.kernel_w);
  for (int64_t j = 0; j < p.kernel_w; ++j)
    cols[j] = valid_outputs_for_tap(j, p.in_w, p.out_w, p.stride_w, p.pad_w, p.dilation_w);

  for (int64_t r = begin; r < end; ++r) {
    const int64_t oh = r % p.out_h;
    const int64_t co = (r / p.out_h) % p.out_channels;
    const int64_t n = r / (p.out_h * p.out_channels);
    const scalar_t* plane = input + (n * p.in_channels + co / p.multiplier) * p.in_h * p.in_w;
    const acc_t* w = weight + co * taps;
    std::fill(acc, acc + p.out_w, bias ? bias[co] : acc_t(0));
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
      if (ih < 0 || ih >= p.in_h) continue;
      const scalar_t* row = plane + ih * p.in_w;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const acc_t wv = w[i * p.kernel_w + j];
        const int64_t offset = j * p.dilation_w - p.pad_w;
        const int64_t b = cols[j].begin, e = cols[j].end;
        if (p.stride_w == 1) {
#pragma omp simd
          for (int64_t ow = b; ow < e; ++ow) acc[ow] += wv * static_cast<acc_t>(row[ow + offset]);
        } else {
          const int64_t s = p.stride_w;
#pragma omp simd
          for (int64_t ow = b; ow < e; ++ow)
            acc[ow] += wv * static_cast<acc_t>(row[ow * s + offset]);
        }
      }
    }
    scalar_t* out_row = output + r * p.out_w;
#pragma omp simd
    for (int64_t ow = 0; ow < p.out_w; ++ow) out_row[ow] = static_cast<scalar_t>(acc[ow]);
  }
}

template <typename scalar_t, typename acc_t>
void forward_nhwc(const DepthwiseParams& p, const scalar_t* __restrict input,
                  const acc_t* __restrict weight, const acc_t* __restrict bias,
                  scalar_t* __restrict output, int64_t begin, int64_t end) {
  const int64_t C = p.in_channels, Cout = p.out_channels, m = p.multiplier;
  std::vector<acc_t> acc_buf(Cout);
  acc_t* __restrict acc = acc_buf.data();
  for (int64_t r = begin; r < end; ++r) {
    const int64_t oh = r % p.out_h;
    const int64_t n = r / p.out_h;
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      if (bias) std::copy(bias, bias + Cout, acc);
      else std::fill(acc, acc + Cout, acc_t(0));
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
        if (ih < 0 || ih >= p.in_h) continue;
        for (int64_t j = 0; j < p.kernel_w; ++j) {
          const int64_t iw = ow * p.stride_w - p.pad_w + j * p.dilation_w;
          if (iw < 0 || iw >= p.in_w) continue;
          const scalar_t* __restrict px = input + ((n * p.in_h + ih) * p.in_w + iw) * C;
          const acc_t* __restrict w = weight + (i * p.kernel_w + j) * Cout;
          if (m == 1) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * static_cast<acc_t>(px[c]);
          } else {
            for (int64_t c = 0; c < C; ++c) {
              const acc_t v = static_cast<acc_t>(px[c]);
              for (int64_t q = 0; q < m; ++q) acc[c * m + q] += w[c * m + q] * v;
            }
          }
        }
      }
      scalar_t* __restrict o = output + ((n * p.out_h + oh) * p.out_w + ow) * Cout;
#pragma omp simd
      for (int64_t co = 0; co < Cout; ++co) o[co] = static_cast<scalar_t>(acc[co]);
    }
  }
}

#define FASTDW_INSTANTIATE_FORWARD(scalar_t, acc_t)                                             \
  template void forward_nchw<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*,         \
                                              const acc_t*, const acc_t*, scalar_t*, int64_t,  \
                                              int64_t);                                        \
  template void forward_nhwc<scalar_t, acc_t>(const DepthwiseParams&, const scalar_t*,         \
                                              const acc_t*, const acc_t*, scalar_t*, int64_t,  \
                                              int64_t);
FASTDW_INSTANTIATE_FORWARD(double, double)
FASTDW_INSTANTIATE_FORWARD(float, float)
FASTDW_INSTANTIATE_FORWARD(c10::BFloat16, float)
FASTDW_INSTANTIATE_FORWARD(c10::Half, float)

}  // namespace cpu
}  // namespace fastdw
