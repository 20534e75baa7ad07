// Depthwise backward-weight and bias on the CPU, deterministic for any thread count: every sum
// is formed in a fixed order that depends only on the shape. No atomics, no per-thread partials.
//
// NCHW: one work item per output channel walks all its (n, oh) rows; each tap's contribution
// from a row is a dot product along W.
// NHWC: the channel is the contiguous axis, so output rows are cut into shape-determined chunks,
// each chunk sums all channels at once into its own partial slot, and a second pass adds the
// partials in chunk order.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"

namespace fastdw {
namespace cpu {

template <typename scalar_t>
void backward_weight_nchw(const DepthwiseParams& p, const scalar_t* __restrict grad_output,
                          const scalar_t* __restrict input, double* grad_weight,
                          double* grad_bias, int64_t begin, int64_t end) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const int64_t taps = p.taps();
  std::vector<double> sums(taps);
  std::vector<Range> cols(p.kernel_w);
  for (int64_t j = 0; j < p.kernel_w; ++j)
    cols[j] = valid_outputs_for_tap(j, p.in_w, p.out_w, p.stride_w, p.pad_w, p.dilation_w);

  for (int64_t co = begin; co < end; ++co) {
    const int64_t c = co / p.multiplier;
    std::fill(sums.begin(), sums.end(), 0.0);
    double bias_sum = 0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const scalar_t* plane = input + (n * p.in_channels + c) * p.in_h * p.in_w;
      const scalar_t* gplane = grad_output + (n * p.out_channels + co) * p.out_h * p.out_w;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const scalar_t* __restrict grow = gplane + oh * p.out_w;
        acc_t row_sum = 0;
#pragma omp simd reduction(+ : row_sum)
        for (int64_t ow = 0; ow < p.out_w; ++ow) row_sum += static_cast<acc_t>(grow[ow]);
        bias_sum += row_sum;
        for (int64_t i = 0; i < p.kernel_h; ++i) {
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) continue;
          const scalar_t* __restrict row = plane + ih * p.in_w;
          for (int64_t j = 0; j < p.kernel_w; ++j) {
            const int64_t offset = j * p.dilation_w - p.pad_w;
            const int64_t b = cols[j].begin, e = cols[j].end, s = p.stride_w;
            acc_t dot = 0;
            if (s == 1) {
#pragma omp simd reduction(+ : dot)
              for (int64_t ow = b; ow < e; ++ow)
                dot += static_cast<acc_t>(grow[ow]) * static_cast<acc_t>(row[ow + offset]);
            } else {
#pragma omp simd reduction(+ : dot)
              for (int64_t ow = b; ow < e; ++ow)
                dot += static_cast<acc_t>(grow[ow]) * static_cast<acc_t>(row[ow * s + offset]);
            }
            sums[i * p.kernel_w + j] += dot;
          }
        }
      }
    }
    std::copy(sums.begin(), sums.end(), grad_weight + co * taps);
    grad_bias[co] = bias_sum;
  }
}

int64_t backward_weight_nhwc_rows_per_chunk(const DepthwiseParams& p) {
  // Enough chunks to feed many threads, few enough that the partials stay small. Depends on
  // the shape only, never on the thread count, so the summation order is fixed.
  const int64_t rows = p.batch * p.out_h;
  constexpr int64_t kMaxChunks = 64;
  return std::max<int64_t>(1, (rows + kMaxChunks - 1) / kMaxChunks);
}

template <typename scalar_t, typename acc_t>
void backward_weight_nhwc_partials(const DepthwiseParams& p,
                                   const scalar_t* __restrict grad_output,
                                   const scalar_t* __restrict input, int64_t rows_per_chunk,
                                   acc_t* partial, int64_t begin, int64_t end) {
  const int64_t C = p.in_channels, Cout = p.out_channels, m = p.multiplier;
  const int64_t taps = p.taps();
  const int64_t rows = p.batch * p.out_h;
  std::vector<Range> cols(p.kernel_w);
  for (int64_t j = 0; j < p.kernel_w; ++j)
    cols[j] = valid_outputs_for_tap(j, p.in_w, p.out_w, p.stride_w, p.pad_w, p.dilation_w);

  for (int64_t chunk = begin; chunk < end; ++chunk) {
    acc_t* __restrict part = partial + chunk * (taps + 1) * Cout;
    std::fill(part, part + (taps + 1) * Cout, acc_t(0));
    acc_t* __restrict bias_part = part + taps * Cout;
    const int64_t row_end = std::min(rows, (chunk + 1) * rows_per_chunk);
    for (int64_t r = chunk * rows_per_chunk; r < row_end; ++r) {
      const int64_t oh = r % p.out_h;
      const int64_t n = r / p.out_h;
      const scalar_t* grow = grad_output + r * p.out_w * Cout;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const scalar_t* __restrict g = grow + ow * Cout;
#pragma omp simd
        for (int64_t co = 0; co < Cout; ++co) bias_part[co] += static_cast<acc_t>(g[co]);
      }
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
        if (ih < 0 || ih >= p.in_h) continue;
        const scalar_t* irow = input + (n * p.in_h + ih) * p.in_w * C;
        for (int64_t j = 0; j < p.kernel_w; ++j) {
          acc_t* __restrict a = part + (i * p.kernel_w + j) * Cout;
          const int64_t offset = j * p.dilation_w - p.pad_w;
          for (int64_t ow = cols[j].begin; ow < cols[j].end; ++ow) {
            const scalar_t* __restrict g = grow + ow * Cout;
            const scalar_t* __restrict x = irow + (ow * p.stride_w + offset) * C;
            if (m == 1) {
#pragma omp simd
              for (int64_t c = 0; c < C; ++c)
                a[c] += static_cast<acc_t>(g[c]) * static_cast<acc_t>(x[c]);
            } else {
              for (int64_t c = 0; c < C; ++c) {
                const acc_t v = static_cast<acc_t>(x[c]);
                for (int64_t q = 0; q < m; ++q)
                  a[c * m + q] += static_cast<acc_t>(g[c * m + q]) * v;
              }
            }
          }
        }
      }
    }
  }
}

template <typename acc_t>
void backward_weight_nhwc_reduce(const DepthwiseParams& p, const acc_t* partial,
                                 int64_t num_chunks, double* grad_weight, double* grad_bias,
                                 int64_t begin, int64_t end) {
  const int64_t Cout = p.out_channels, taps = p.taps();
  for (int64_t co = begin; co < end; ++co) {
    for (int64_t t = 0; t <= taps; ++t) {
      double s = 0;
      for (int64_t chunk = 0; chunk < num_chunks; ++chunk)
        s += partial[(chunk * (taps + 1) + t) * Cout + co];
      if (t < taps) grad_weight[co * taps + t] = s;
      else grad_bias[co] = s;
    }
  }
}

#define FASTDW_INSTANTIATE_BACKWARD_WEIGHT(scalar_t, acc_t)                                     \
  template void backward_weight_nchw<scalar_t>(const DepthwiseParams&, const scalar_t*,         \
                                               const scalar_t*, double*, double*, int64_t,      \
                                               int64_t);                                        \
  template void backward_weight_nhwc_partials<scalar_t, acc_t>(                                 \
      const DepthwiseParams&, const scalar_t*, const scalar_t*, int64_t, acc_t*, int64_t, int64_t);
FASTDW_INSTANTIATE_BACKWARD_WEIGHT(double, double)
FASTDW_INSTANTIATE_BACKWARD_WEIGHT(float, float)
FASTDW_INSTANTIATE_BACKWARD_WEIGHT(c10::BFloat16, float)
FASTDW_INSTANTIATE_BACKWARD_WEIGHT(c10::Half, float)
template void backward_weight_nhwc_reduce<double>(const DepthwiseParams&, const double*, int64_t,
                                                  double*, double*, int64_t, int64_t);
template void backward_weight_nhwc_reduce<float>(const DepthwiseParams&, const float*, int64_t,
                                                 double*, double*, int64_t, int64_t);

}  // namespace cpu
}  // namespace fastdw
