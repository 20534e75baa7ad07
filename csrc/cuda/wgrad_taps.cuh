#pragma once
// Weight/bias gradient pass 1 for runtime kernel sizes, straight from global memory: the
// channels_last large-kernel path (index_t = int32) and, for any layout, the 64-bit fallback.
//
// Thread = (output channel: blockDim.x lanes, consecutive channels so NHWC loads coalesce) x
// (run of kChunk consecutive taps of one kernel row: blockDim.y). Block (channel block, run
// group, split) walks its fixed range of units (n, oh, chunk of V outputs) in order; each
// thread owns its taps outright, so it writes partial[split][co][tap] with no reduction and no
// atomics. Deterministic by construction.
#include "common.cuh"

namespace fastdw {
namespace cuda {

struct TapArgs {
  int64_t batch, units, g_sn, x_sn;                  // units = N * OH * chunks
  int64_t g_sc, g_sh, g_sw, x_sc, x_sh, x_sw;         // element strides
  int cout, mult, out_h, out_w, in_h, in_w;
  int kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int chunks;                                       // chunks of V outputs per row
  int runs_per_row, runs, run_groups, channel_blocks;
  int splits;
  FastDiv div_chunks, div_h;  // 32-bit unit decoding (index_t = int32 only)
};

constexpr int kTapV = 8;

template <typename scalar_t, int S, typename index_t>
__global__ void __launch_bounds__(kMaxThreads)
wgrad_taps_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ input,
                  at::opmath_type<scalar_t>* __restrict__ partial, const TapArgs a) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int V = kTapV;
  const int cb = blockIdx.x % a.channel_blocks;
  const int rg = blockIdx.x / a.channel_blocks;
  const int split = blockIdx.y;
  const int co = cb * blockDim.x + threadIdx.x;
  const int run_g = rg * blockDim.y + threadIdx.y;
  if (co >= a.cout || run_g >= a.runs) return;
  const int kh = run_g / a.runs_per_row;
  const int kw0 = (run_g - kh * a.runs_per_row) * kChunk;
  const int ci = co / a.mult;
  const int64_t begin = a.units * split / a.splits, end = a.units * (split + 1) / a.splits;
  const index_t g_sc = static_cast<index_t>(a.g_sc), g_sh = static_cast<index_t>(a.g_sh),
                g_sw = static_cast<index_t>(a.g_sw);
  const index_t x_sc = static_cast<index_t>(a.x_sc), x_sh = static_cast<index_t>(a.x_sh),
                x_sw = static_cast<index_t>(a.x_sw);

  acc_t acc[kChunk];
#pragma unroll
  for (int j = 0; j < kChunk; ++j) acc[j] = 0;
  acc_t bias_acc = 0;

  for (int64_t u = begin; u < end; ++u) {
    int chunk, oh;
    int64_t n;
    if constexpr (sizeof(index_t) == 4) {  // units < 2^31
      int t, nn;
      a.div_chunks.divmod(static_cast<int>(u), t, chunk);
      a.div_h.divmod(t, nn, oh);
      n = nn;
    } else {
      chunk = static_cast<int>(u % a.chunks);
      const int64_t t = u / a.chunks;
      oh = static_cast<int>(t % a.out_h);
      n = t / a.out_h;
    }
    const int ow0 = chunk * V;
    const scalar_t* gp = grad + n * a.g_sn + (co * g_sc + oh * g_sh);
    acc_t g[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      g[v] = ow0 + v < a.out_w ? static_cast<acc_t>(gp[(ow0 + v) * g_sw]) : acc_t(0);
    }
    if (run_g == 0) {
#pragma unroll
      for (int v = 0; v < V; ++v) bias_acc += g[v];
    }
    const int ih = oh * a.stride_h - a.pad_h + kh * a.dil_h;
    if (ih < 0 || ih >= a.in_h) continue;
    // Outputs past the row's end do not exist: their zero grad_output must not multiply the
    // input (0 * Inf would be NaN where F.conv2d has a value).
    const int outputs = a.out_w - ow0;
    const scalar_t* xp = input + n * a.x_sn + (ci * x_sc + ih * x_sh);
    if constexpr (S == 1) {
      const int iw0 = ow0 - a.pad_w + kw0;
#pragma unroll
      for (int i = 0; i < V + kChunk - 1; ++i) {
        const int iw = iw0 + i;
        const acc_t xv = (iw >= 0 && iw < a.in_w) ? static_cast<acc_t>(xp[iw * x_sw]) : acc_t(0);
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (i - j >= 0 && i - j < V && i - j < outputs) acc[j] += g[i - j] * xv;
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        const int kw = kw0 + j;
        if (kw >= a.kw) break;
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const int iw = (ow0 + v) * a.stride_w - a.pad_w + kw * a.dil_w;
          if (v < outputs && iw >= 0 && iw < a.in_w) {
            acc[j] += g[v] * static_cast<acc_t>(xp[iw * x_sw]);
          }
        }
      }
    }
  }

  const int taps = a.kh * a.kw;
  acc_t* out = partial + (static_cast<int64_t>(split) * a.cout + co) * (taps + 1);
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    if (kw0 + j < a.kw) out[kh * a.kw + kw0 + j] = acc[j];
  }
  if (run_g == 0) out[taps] = bias_acc;
}

// g, x: 4-D tensors (any strides). S = 1 requires unit stride and dilation.
template <typename scalar_t, int S, typename index_t>
void launch_wgrad_taps(const at::Tensor& g, const at::Tensor& x, const DepthwiseParams& p,
                       at::Tensor& partial, int64_t& splits_out) {
  using acc_t = at::opmath_type<scalar_t>;
  TapArgs a{};
  a.batch = p.batch;
  a.g_sn = g.stride(0);
  a.g_sc = g.stride(1);
  a.g_sh = g.stride(2);
  a.g_sw = g.stride(3);
  a.x_sn = x.stride(0);
  a.x_sc = x.stride(1);
  a.x_sh = x.stride(2);
  a.x_sw = x.stride(3);
  a.cout = static_cast<int>(p.out_channels);
  a.mult = static_cast<int>(p.multiplier);
  a.out_h = static_cast<int>(p.out_h);
  a.out_w = static_cast<int>(p.out_w);
  a.in_h = static_cast<int>(p.in_h);
  a.in_w = static_cast<int>(p.in_w);
  a.kh = static_cast<int>(p.kernel_h);
  a.kw = static_cast<int>(p.kernel_w);
  a.stride_h = static_cast<int>(p.stride_h);
  a.stride_w = static_cast<int>(p.stride_w);
  a.pad_h = static_cast<int>(p.pad_h);
  a.pad_w = static_cast<int>(p.pad_w);
  a.dil_h = static_cast<int>(p.dilation_h);
  a.dil_w = static_cast<int>(p.dilation_w);
  a.chunks = static_cast<int>(cdiv(p.out_w, kTapV));
  a.units = p.batch * p.out_h * a.chunks;
  TORCH_INTERNAL_ASSERT(sizeof(index_t) == 8 || fits_int32(a.units));
  a.div_chunks = FastDiv(a.chunks);
  a.div_h = FastDiv(p.out_h);
  a.runs_per_row = static_cast<int>(cdiv(p.kernel_w, kChunk));
  a.runs = a.kh * a.runs_per_row;
  const int lanes = static_cast<int>(std::min<int64_t>(32, p.out_channels));
  const int run_block = std::min(a.runs, std::max(1, kMaxThreads / lanes));
  a.run_groups = static_cast<int>(cdiv(a.runs, run_block));
  a.channel_blocks = static_cast<int>(cdiv(p.out_channels, lanes));
  const int64_t grid_x = static_cast<int64_t>(a.run_groups) * a.channel_blocks;
  TORCH_CHECK(grid_x <= std::numeric_limits<int32_t>::max(),
              "fastdw: backward_weight grid too large");
  const int64_t want = cdiv(kTargetBlocks, grid_x);
  a.splits = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({want, std::max<int64_t>(1, a.units / 16), 65535})));
  partial = at::empty({a.splits * p.out_channels * (p.kernel_h * p.kernel_w + 1)},
                      x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  launch_kernel<wgrad_taps_kernel<scalar_t, S, index_t>>(
      dim3(static_cast<unsigned>(grid_x), a.splits), dim3(lanes, run_block), 0, stream,
      g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
      partial.mutable_data_ptr<acc_t>(), a);
  splits_out = a.splits;
}

}  // namespace cuda
}  // namespace fastdw
