#pragma once
// Fallback forward / backward-input kernel: one thread per destination element, 64-bit
// indexing throughout, any layout (element strides). Taken only when the tiled kernels cannot
// be (one image over 2^31 elements, or a kernel too large for shared memory).
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

template <typename scalar_t, bool BWD>
__global__ void __launch_bounds__(kMaxThreads)
direct_kernel(const scalar_t* __restrict__ src, const scalar_t* __restrict__ weight,
              const scalar_t* __restrict__ bias, scalar_t* __restrict__ dst,
              const DirectArgs a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = a.kh * a.kw;
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
    acc_t acc = (!BWD && bias != nullptr) ? static_cast<acc_t>(bias[c]) : acc_t(0);
    const int64_t jcount = BWD ? a.mult : 1;
    for (int64_t j = 0; j < jcount; ++j) {
      const int64_t sc = BWD ? c * a.mult + j : c / a.mult;
      const int64_t wc = BWD ? sc : c;
      const scalar_t* sp = src + n * a.s_sn + sc * a.s_sc;
      const scalar_t* wp = weight + wc * taps;
      for (int64_t kh = 0; kh < a.kh; ++kh) {
        int64_t sh;
        if (BWD) {
          const int64_t t = h + a.pad_h - kh * a.dil_h;
          if (t < 0 || t % a.stride_h != 0) continue;
          sh = t / a.stride_h;
        } else {
          sh = h * a.stride_h - a.pad_h + kh * a.dil_h;
        }
        if (sh < 0 || sh >= a.src_h) continue;
        for (int64_t kw = 0; kw < a.kw; ++kw) {
          int64_t sw;
          if (BWD) {
            const int64_t t = w + a.pad_w - kw * a.dil_w;
            if (t < 0 || t % a.stride_w != 0) continue;
            sw = t / a.stride_w;
          } else {
            sw = w * a.stride_w - a.pad_w + kw * a.dil_w;
          }
          if (sw < 0 || sw >= a.src_w) continue;
          acc += static_cast<acc_t>(sp[sh * a.s_sh + sw * a.s_sw]) *
                 static_cast<acc_t>(wp[kh * a.kw + kw]);
        }
      }
    }
    dst[n * a.d_sn + c * a.d_sc + h * a.d_sh + w * a.d_sw] = static_cast<scalar_t>(acc);
  }
}

// src / dst: dense tensors in the layout p.channels_last names.
template <typename scalar_t, bool BWD>
void launch_direct(const at::Tensor& src, const scalar_t* weight, const scalar_t* bias,
                   at::Tensor& dst, const DepthwiseParams& p, cudaStream_t stream) {
  DirectArgs a{};
  a.numel = dst.numel();
  a.dst_c = dst.size(1);
  a.dst_h = dst.size(2);
  a.dst_w = dst.size(3);
  a.src_c = src.size(1);
  a.src_h = src.size(2);
  a.src_w = src.size(3);
  a.d_sn = dst.stride(0);
  a.d_sc = dst.stride(1);
  a.d_sh = dst.stride(2);
  a.d_sw = dst.stride(3);
  a.s_sn = src.stride(0);
  a.s_sc = src.stride(1);
  a.s_sh = src.stride(2);
  a.s_sw = src.stride(3);
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
  const int64_t blocks = std::min<int64_t>(cdiv(a.numel, kMaxThreads), 65536 * 8);
  launch_kernel<direct_kernel<scalar_t, BWD>>(static_cast<unsigned>(blocks), kMaxThreads, 0,
                                              stream, src.const_data_ptr<scalar_t>(), weight,
                                              bias, dst.mutable_data_ptr<scalar_t>(), a);
}

}  // namespace cuda
}  // namespace fastdw
