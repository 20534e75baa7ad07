#pragma once
// Fallback forward / backward-input kernel: one thread per destination element, 64-bit
// indexing throughout, any layout (element strides). Taken only when the tiled kernels cannot
// be (one image over 2^31 elements, or a kernel too large for shared memory). Its per-element
// sum (direct_value) is also the tiled NCHW kernel's path for non-finite weights.
#include "common.cuh"

namespace fastdw {
namespace cuda {

struct DirectArgs {
  int64_t numel;                              // destination elements
  int64_t dst_c, dst_h, dst_w;                // destination sizes
  int64_t src_c, src_h, src_w;
  int64_t d_sn, d_sc, d_sh, d_sw;             // destination strides (elements)
  int64_t s_sn, s_sc, s_sh, s_sw;             // source strides
  int64_t mult, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool channels_last;                         // destination iteration order
};

// Forward (bwd = false: input -> output) or backward-input (grad_output -> grad_input) of p,
// for tensors dense in the layout p.channels_last names.
inline DirectArgs direct_args(const DepthwiseParams& p, bool bwd) {
  DirectArgs a{};
  a.dst_c = bwd ? p.in_channels : p.out_channels;
  a.dst_h = bwd ? p.in_h : p.out_h;
  a.dst_w = bwd ? p.in_w : p.out_w;
  a.src_c = bwd ? p.out_channels : p.in_channels;
  a.src_h = bwd ? p.out_h : p.in_h;
  a.src_w = bwd ? p.out_w : p.in_w;
  auto dense = [&](int64_t c, int64_t h, int64_t w, int64_t& sn, int64_t& sc, int64_t& sh,
                   int64_t& sw) {
    sn = c * h * w;
    sc = p.channels_last ? 1 : h * w;
    sh = p.channels_last ? w * c : w;
    sw = p.channels_last ? c : 1;
  };
  dense(a.dst_c, a.dst_h, a.dst_w, a.d_sn, a.d_sc, a.d_sh, a.d_sw);
  dense(a.src_c, a.src_h, a.src_w, a.s_sn, a.s_sc, a.s_sh, a.s_sw);
  a.numel = p.batch * a.d_sn;
  a.mult = p.multiplier;
  a.kh = p.kernel_h;
  a.kw = p.kernel_w;
  a.stride_h = p.stride_h;
  a.stride_w = p.stride_w;
  a.pad_h = p.pad_h;
  a.pad_w = p.pad_w;
  a.dil_h = p.dilation_h;
  a.dil_w = p.dilation_w;
  a.channels_last = p.channels_last;
  return a;
}

// Along one axis: the source index that tap k of destination index d reads (forward: d's
// window; backward-input: the output that tap k of input d fed), or -1 when there is none
// (outside the source, or, backward, not on the stride).
template <bool BWD>
__device__ __forceinline__ int64_t source_index(int64_t d, int64_t k, int64_t stride,
                                                int64_t pad, int64_t dil, int64_t src_size) {
  int64_t s;
  if (BWD) {
    const int64_t t = d + pad - k * dil;
    if (t < 0 || t % stride != 0) return -1;
    s = t / stride;
  } else {
    s = d * stride - pad + k * dil;
  }
  return s >= 0 && s < src_size ? s : -1;
}

// Destination element (n, c, h, w): the bias (forward) plus the products of the taps that land
// inside the source. A tap over padding is skipped, not multiplied by zero, as in F.conv2d: a
// non-finite weight there contributes nothing.
template <typename scalar_t, bool BWD>
__device__ __forceinline__ at::opmath_type<scalar_t> direct_value(
    const scalar_t* __restrict__ src, const scalar_t* __restrict__ weight,
    const scalar_t* __restrict__ bias, const DirectArgs& a, int64_t n, int64_t c, int64_t h,
    int64_t w) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = a.kh * a.kw;
  acc_t acc = (!BWD && bias != nullptr) ? static_cast<acc_t>(bias[c]) : acc_t(0);
  const int64_t jcount = BWD ? a.mult : 1;
  for (int64_t j = 0; j < jcount; ++j) {
    const int64_t sc = BWD ? c * a.mult + j : c / a.mult;
    const int64_t wc = BWD ? sc : c;
    const scalar_t* sp = src + n * a.s_sn + sc * a.s_sc;
    const scalar_t* wp = weight + wc * taps;
    for (int64_t kh = 0; kh < a.kh; ++kh) {
      const int64_t sh = source_index<BWD>(h, kh, a.stride_h, a.pad_h, a.dil_h, a.src_h);
      if (sh < 0) continue;
      for (int64_t kw = 0; kw < a.kw; ++kw) {
        const int64_t sw = source_index<BWD>(w, kw, a.stride_w, a.pad_w, a.dil_w, a.src_w);
        if (sw < 0) continue;
        acc += static_cast<acc_t>(sp[sh * a.s_sh + sw * a.s_sw]) *
               static_cast<acc_t>(wp[kh * a.kw + kw]);
      }
    }
  }
  return acc;
}

template <typename scalar_t, bool BWD>
__global__ void __launch_bounds__(kMaxThreads)
direct_kernel(const scalar_t* __restrict__ src, const scalar_t* __restrict__ weight,
              const scalar_t* __restrict__ bias, scalar_t* __restrict__ dst,
              const DirectArgs a) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w, r = i;
    if (a.channels_last) {
      c = r % a.dst_c; r /= a.dst_c;
      w = r % a.dst_w; r /= a.dst_w;
      h = r % a.dst_h; n = r / a.dst_h;
    } else {
      w = r % a.dst_w; r /= a.dst_w;
      h = r % a.dst_h; r /= a.dst_h;
      c = r % a.dst_c; n = r / a.dst_c;
    }
    dst[n * a.d_sn + c * a.d_sc + h * a.d_sh + w * a.d_sw] =
        static_cast<scalar_t>(direct_value<scalar_t, BWD>(src, weight, bias, a, n, c, h, w));
  }
}

// src / dst: dense tensors in the layout p.channels_last names.
template <typename scalar_t, bool BWD>
void launch_direct(const at::Tensor& src, const scalar_t* weight, const scalar_t* bias,
                   at::Tensor& dst, const DepthwiseParams& p, cudaStream_t stream) {
  const DirectArgs a = direct_args(p, BWD);
  const int64_t blocks = std::min<int64_t>(cdiv(a.numel, kMaxThreads), 65536 * 8);
  launch_kernel<direct_kernel<scalar_t, BWD>>(static_cast<unsigned>(blocks), kMaxThreads, 0,
                                              stream, src.const_data_ptr<scalar_t>(), weight,
                                              bias, dst.mutable_data_ptr<scalar_t>(), a);
}

}  // namespace cuda
}  // namespace fastdw
