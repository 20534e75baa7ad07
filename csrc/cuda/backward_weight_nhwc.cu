// Weight and bias gradient, channels_last, pass 1 (partial sums; backward_weight.cu adds them).
//
// Specialised K x K (stride S): thread = VC consecutive channels (blockDim.x lanes, coalesced
// along C) x a sequence of strips of TWo outputs along W (blockDim.y); it accumulates all K*K
// taps and the bias for its channels in registers (VC shrinks as K grows to bound registers),
// reusing each loaded input vector across the strip. Units (n, strip, oh) are ordered row-fastest
// so concurrently running strips share input rows in L1. The blockDim.y partial sums are then
// added in a fixed order through shared memory into partial[split][co][tap]: deterministic, no
// atomics.
//
// Runtime sizes (large kernels, dilation, other strides): the tap-owner kernel of wgrad_taps.cuh.
#include "launchers.h"
#include "nchw_tiled.cuh"
#include "wgrad_taps.cuh"

namespace fastdw {
namespace cuda {
namespace {

struct NhwcWgradArgs {
  int64_t units;  // N * strips_w * OH
  int in_h, in_w, in_c, out_h, out_w, out_c, mult;
  int pad_h, pad_w;
  int strips_w, cvecs, splits;
  FastDiv div_h, div_sw;  // by out_h, by strips_w
};

// Channels per thread: the 16-byte vector for 3x3, fewer for larger kernels so that
// K*K*VC accumulators stay within ~64 registers.
template <typename scalar_t, int K>
constexpr int wgrad_vc() {
  constexpr int by_regs = 64 / (K * K);
  constexpr int v = vec16<scalar_t>() < by_regs ? vec16<scalar_t>() : by_regs;
  return v >= 4 ? 4 : (v >= 2 ? 2 : 1);
}

template <int VC>
constexpr int wgrad_strip() {
  return VC >= 4 ? 4 : 8;
}

constexpr int kReduceChunk = 8;

template <typename scalar_t, int K, int S, int VC>
__global__ void __launch_bounds__(kMaxThreads)
wgrad_nhwc_reg_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ input,
                      at::opmath_type<scalar_t>* __restrict__ partial, const NhwcWgradArgs a) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int TWo = wgrad_strip<VC>();
  constexpr int NV = (K * K + 1) * VC;
  constexpr bool kVec = VC > 1;
  const int CL = blockDim.x, SY = blockDim.y;
  const int cl = threadIdx.x, sy = threadIdx.y;
  const int cv = blockIdx.x * CL + cl;
  const int split = blockIdx.y;
  const int c0 = cv * VC;
  const int ci = c0 / a.mult;

  acc_t acc[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) acc[i] = 0;

  // units < 2^31 (host check)
  const int begin = static_cast<int>(a.units * split / a.splits);
  const int end = static_cast<int>(a.units * (split + 1) / a.splits);
  const int64_t in_img = static_cast<int64_t>(a.in_h) * a.in_w * a.in_c;
  const int64_t g_img = static_cast<int64_t>(a.out_h) * a.out_w * a.out_c;
  if (cv < a.cvecs) {
    for (int u = begin + sy; u < end; u += SY) {
      int t, oh, n, ob;
      a.div_h.divmod(u, t, oh);
      a.div_sw.divmod(t, n, ob);
      const int ow0 = ob * TWo;
      const scalar_t* gp = grad + static_cast<int64_t>(n) * g_img + (oh * a.out_w) * a.out_c + c0;
      acc_t g[TWo][VC];
#pragma unroll
      for (int jo = 0; jo < TWo; ++jo) {
        if (ow0 + jo < a.out_w) {
          load_global<VC, kVec>(gp + (ow0 + jo) * a.out_c, g[jo]);
        } else {
#pragma unroll
          for (int q = 0; q < VC; ++q) g[jo][q] = 0;
        }
#pragma unroll
        for (int q = 0; q < VC; ++q) acc[K * K * VC + q] += g[jo][q];
      }
      const int ih0 = oh * S - a.pad_h;
      const int iw0 = ow0 * S - a.pad_w;
      const scalar_t* xp = input + static_cast<int64_t>(n) * in_img + ci;
      // Outputs past the row's end do not exist: their zero grad_output must not multiply the
      // input (0 * Inf would be NaN where F.conv2d has a value).
      const int outputs = a.out_w - ow0;
#pragma unroll
      for (int r = 0; r < K; ++r) {
        const int ih = ih0 + r;
        if (ih < 0 || ih >= a.in_h) continue;
        const scalar_t* rowp = xp + ih * (a.in_w * a.in_c);
#pragma unroll
        for (int i = 0; i < (TWo - 1) * S + K; ++i) {
          const int iw = iw0 + i;
          acc_t x[VC];
          if (iw >= 0 && iw < a.in_w) {
            load_global<VC, kVec>(rowp + iw * a.in_c, x);
          } else {
#pragma unroll
            for (int q = 0; q < VC; ++q) x[q] = 0;
          }
#pragma unroll
          for (int jo = 0; jo < TWo; ++jo) {
            const int kw = i - jo * S;
            if (kw >= 0 && kw < K && jo < outputs) {
#pragma unroll
              for (int q = 0; q < VC; ++q) acc[(r * K + kw) * VC + q] += g[jo][q] * x[q];
            }
          }
        }
      }
    }
  }

  // Add the SY partial sums of each lane in order, kReduceChunk values at a time.
  acc_t* scratch = smem_as<acc_t>();
  const int tid = sy * CL + cl, nthreads = CL * SY;
  constexpr int taps = K * K;
#pragma unroll
  for (int base = 0; base < NV; base += kReduceChunk) {
#pragma unroll
    for (int q = 0; q < kReduceChunk; ++q) {
      if (base + q < NV) scratch[(sy * CL + cl) * kReduceChunk + q] = acc[base + q];
    }
    __syncthreads();
    for (int idx = tid; idx < CL * kReduceChunk; idx += nthreads) {
      const int lane = idx / kReduceChunk;
      const int q = idx - lane * kReduceChunk;
      const int v = base + q;
      const int ch = (blockIdx.x * CL + lane) * VC + v % VC;
      if (v >= NV || ch >= a.out_c) continue;
      acc_t s = 0;
      for (int y = 0; y < SY; ++y) s += scratch[(y * CL + lane) * kReduceChunk + q];
      partial[(static_cast<int64_t>(split) * a.out_c + ch) * (taps + 1) + v / VC] = s;
    }
    __syncthreads();
  }
}

template <typename scalar_t, int K, int S>
bool launch_variant(const at::Tensor& g, const at::Tensor& x, const DepthwiseParams& p,
                    at::Tensor& partial, int64_t& splits_out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_img = p.in_h * p.in_w * p.in_channels;
  const int64_t g_img = p.out_h * p.out_w * p.out_channels;
  const bool small_index = fits_int32(in_img + p.in_w * p.in_channels) &&
                           fits_int32(g_img + p.out_w * p.out_channels);
  if constexpr (K > 0) {
    if (!small_index) return false;
    constexpr int VCV = wgrad_vc<scalar_t, K>();
    const bool vec = p.multiplier == 1 && p.out_channels % VCV == 0 &&
                     is_aligned(g.const_data_ptr(), VCV * sizeof(scalar_t)) &&
                     is_aligned(x.const_data_ptr(), VCV * sizeof(scalar_t));
    const int vc = vec ? VCV : 1;
    NhwcWgradArgs a{};
    a.in_h = static_cast<int>(p.in_h);
    a.in_w = static_cast<int>(p.in_w);
    a.in_c = static_cast<int>(p.in_channels);
    a.out_h = static_cast<int>(p.out_h);
    a.out_w = static_cast<int>(p.out_w);
    a.out_c = static_cast<int>(p.out_channels);
    a.mult = static_cast<int>(p.multiplier);
    a.pad_h = static_cast<int>(p.pad_h);
    a.pad_w = static_cast<int>(p.pad_w);
    const int two = vec ? wgrad_strip<VCV>() : wgrad_strip<1>();
    a.strips_w = static_cast<int>(cdiv(p.out_w, two));
    a.units = p.batch * a.strips_w * p.out_h;
    if (!fits_int32(a.units + kMaxThreads)) return false;
    a.div_h = FastDiv(p.out_h);
    a.div_sw = FastDiv(a.strips_w);
    a.cvecs = static_cast<int>(cdiv(p.out_channels, vc));
    const int cl = channel_lanes(a.cvecs);
    const int sy = std::max(1, kMaxThreads / cl);
    const int64_t grid_x = cdiv(a.cvecs, cl);
    const int64_t want = cdiv(kTargetBlocks, grid_x);
    // At least ~4 units per thread, so the closing reduction stays a small share.
    const int64_t most = std::max<int64_t>(1, a.units / (4 * sy));
    a.splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, most, 65535})));
    if (grid_x > std::numeric_limits<int32_t>::max()) return false;
    partial = at::empty({a.splits * p.out_channels * (K * K + 1)},
                        x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    const int64_t smem = static_cast<int64_t>(cl) * sy * kReduceChunk * sizeof(acc_t);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const dim3 grid(static_cast<unsigned>(grid_x), a.splits), block(cl, sy);
    if (vec) {
      launch_kernel<wgrad_nhwc_reg_kernel<scalar_t, K, S, VCV>>(
          grid, block, smem, stream, g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<acc_t>(), a);
    } else {
      launch_kernel<wgrad_nhwc_reg_kernel<scalar_t, K, S, 1>>(
          grid, block, smem, stream, g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<acc_t>(), a);
    }
    splits_out = a.splits;
  } else {
    if (!small_index || !fits_int32(p.batch * p.out_h * cdiv(p.out_w, kTapV))) return false;
    launch_wgrad_taps<scalar_t, S, int32_t>(g, x, p, partial, splits_out);
  }
  return true;
}

}  // namespace

bool backward_weight_partials_nhwc(const at::Tensor& g, const at::Tensor& x,
                                   const DepthwiseParams& p, at::Tensor& partial,
                                   int64_t& splits) {
  bool launched = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "fastdw_depthwise_backward_weight_nhwc_cuda", [&] {
    FASTDW_KERNEL_SWITCH(choose_kernel(p), K, S, [&] {
      launched = launch_variant<scalar_t, K, S>(g, x, p, partial, splits);
    });
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
