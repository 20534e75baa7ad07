// Weight and bias gradient, NCHW, pass 1 (partial sums; backward_weight.cu adds them up).
//
// Deterministic by construction: block (co, split) owns a fixed, shape-determined range of
// tiles of output channel co, walks them in order, and reduces its threads' sums in a fixed
// order (shuffle tree, then warps in order) into partial[split][co][tap]. No atomics.
//
// Specialised K x K (stride S): each thread accumulates all K*K taps (+ bias) in registers for
// the V outputs it covers per tile, reading the input window from the shared-memory tile exactly
// as the forward kernel does (nchw_tiled.cuh). Several images of one channel share a block
// when a whole plane fits in a tile.
//
// Runtime sizes (large kernels, dilation, other strides): "tap owner" kernel. Thread = (run of
// kChunk consecutive taps of one kernel row) x (position group); grad_output and input tiles
// are in shared memory; per chunk of V outputs a thread reads V grad values and a
// (V + kChunk - 1) input window with 16-byte shared loads and does V * kChunk FMAs.
#include "launchers.h"
#include "nchw_tiled.cuh"

namespace fastdw {
namespace cuda {
namespace {

template <typename scalar_t, int K, int S>
__global__ void __launch_bounds__(kMaxThreads)
wgrad_nchw_reg_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ input,
                      at::opmath_type<scalar_t>* __restrict__ partial, const NchwArgs a,
                      const int64_t steps, const int splits) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int V = tile_v<scalar_t, K, S>();
  constexpr int VA = vec16<acc_t>();
  constexpr int NV = K * K + 1;
  acc_t* tile = smem_as<acc_t>();

  const int per_plane = a.tx * a.ty;
  const int pz = threadIdx.x / per_plane;
  const int rem = threadIdx.x - pz * per_plane;
  const int tyi = rem / a.tx;
  const int txi = rem - tyi * a.tx;
  const int co = blockIdx.x;
  const int split = blockIdx.y;
  const int ci = co / a.mult;
  const int64_t in_plane = static_cast<int64_t>(a.src_h) * a.src_w;
  const int64_t g_plane = static_cast<int64_t>(a.dst_h) * a.dst_w;
  const int64_t begin = steps * split / splits, end = steps * (split + 1) / splits;

  acc_t acc[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) acc[i] = 0;

  for (int64_t t = begin; t < end; ++t) {
    const int64_t ng = t / a.tiles;
    const int tile_id = static_cast<int>(t - ng * a.tiles);
    const int th = tile_id / a.tiles_w;
    const int tw = tile_id - th * a.tiles_w;
    const int d_r0 = th * a.ty, d_c0 = tw * a.tx * V;
    const int64_t n0 = ng * a.planes;
    __syncthreads();  // the previous tile is no longer read
    load_tile<scalar_t>(tile, a.planes, a.rows, a.pitch, d_r0 * S - a.pad_h, d_c0 * S - a.pad_w,
                        a.src_h, a.src_w, [&](int pp) -> const scalar_t* {
                          const int64_t n = n0 + pp;
                          return n < a.batch ? input + (n * a.src_c + ci) * in_plane : nullptr;
                        });
    __syncthreads();
    const int64_t n = n0 + pz;
    const int oh = d_r0 + tyi, ow = d_c0 + txi * V;
    if (pz >= a.planes || n >= a.batch || oh >= a.dst_h) continue;
    acc_t g[V];
    const scalar_t* gp = grad + (n * a.dst_c + co) * g_plane + oh * a.dst_w + ow;
    if (a.vec_store && ow + V <= a.dst_w) {
      load_global<V, true>(gp, g);
    } else {
#pragma unroll
      for (int v = 0; v < V; ++v) g[v] = ow + v < a.dst_w ? static_cast<acc_t>(gp[v]) : acc_t(0);
    }
#pragma unroll
    for (int v = 0; v < V; ++v) acc[K * K] += g[v];
    constexpr int WINP = round_up((V - 1) * S + K, VA);
    constexpr int AL = (V * S) % VA == 0 ? VA : 1;
    const acc_t* base = tile + (pz * a.rows + tyi * S) * a.pitch + txi * V * S;
    // Outputs past the row's end do not exist: their zero grad_output must not multiply the
    // input (0 * Inf would be NaN where F.conv2d has a value).
    const int outputs = a.dst_w - ow;
#pragma unroll
    for (int r = 0; r < K; ++r) {
      acc_t win[WINP];
      load_smem<WINP, AL>(base + r * a.pitch, win);
#pragma unroll
      for (int kw = 0; kw < K; ++kw) {
#pragma unroll
        for (int v = 0; v < V; ++v) {
          if (v < outputs) acc[r * K + kw] += g[v] * win[v * S + kw];
        }
      }
    }
  }
  __syncthreads();
  block_reduce_store<NV>(acc, tile, partial + (static_cast<int64_t>(split) * a.dst_c + co) * NV);
}

template <typename scalar_t, int S>
__global__ void __launch_bounds__(kMaxThreads)
wgrad_nchw_taps_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ input,
                       at::opmath_type<scalar_t>* __restrict__ partial, const NchwArgs a,
                       const int64_t steps, const int splits, const int run_block,
                       const int runs_per_row, const int run_groups, const FastDiv div_tile,
                       const FastDiv div_tx) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int V = tile_v<scalar_t, 0, S>();
  constexpr int VA = vec16<acc_t>();
  constexpr int NV = kChunk + 1;
  acc_t* tile = smem_as<acc_t>();
  acc_t* gt = tile + a.planes * a.rows * a.pitch;

  const int run = threadIdx.x % run_block;
  const int pg = threadIdx.x / run_block;
  const int groups = blockDim.x / run_block;
  const int co = blockIdx.x / run_groups;
  const int run_g = (blockIdx.x - co * run_groups) * run_block + run;
  const int kh = run_g / runs_per_row;
  const int kw0 = (run_g - kh * runs_per_row) * kChunk;
  const bool run_ok = pg < groups && kh < a.kh;
  const int split = blockIdx.y;
  const int ci = co / a.mult;
  const int taps = a.kh * a.kw;
  const int64_t in_plane = static_cast<int64_t>(a.src_h) * a.src_w;
  const int64_t g_plane = static_cast<int64_t>(a.dst_h) * a.dst_w;
  const int64_t begin = steps * split / splits, end = steps * (split + 1) / splits;
  const int units = a.planes * a.ty * a.tx;

  acc_t acc[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) acc[i] = 0;

  for (int64_t t = begin; t < end; ++t) {
    const int64_t ng = t / a.tiles;
    const int tile_id = static_cast<int>(t - ng * a.tiles);
    const int th = tile_id / a.tiles_w;
    const int tw = tile_id - th * a.tiles_w;
    const int d_r0 = th * a.ty, d_c0 = tw * a.tx * V;
    const int64_t n0 = ng * a.planes;
    int s_r0, s_c0;
    if constexpr (S == 1) {
      s_r0 = d_r0 - a.pad_h;
      s_c0 = d_c0 - a.pad_w;
    } else {
      s_r0 = d_r0 * a.stride_h - a.pad_h;
      s_c0 = d_c0 * a.stride_w - a.pad_w;
    }
    __syncthreads();
    load_tile<scalar_t>(tile, a.planes, a.rows, a.pitch, s_r0, s_c0, a.src_h, a.src_w,
                        [&](int pp) -> const scalar_t* {
                          const int64_t n = n0 + pp;
                          return n < a.batch ? input + (n * a.src_c + ci) * in_plane : nullptr;
                        });
    load_tile<scalar_t>(gt, a.planes, a.ty, a.gpitch, d_r0, d_c0, a.dst_h, a.dst_w,
                        [&](int pp) -> const scalar_t* {
                          const int64_t n = n0 + pp;
                          return n < a.batch ? grad + (n * a.dst_c + co) * g_plane : nullptr;
                        });
    __syncthreads();
    if (!run_ok) continue;
    for (int u = pg; u < units; u += groups) {
      int pz, rr, row, chunk;
      div_tile.divmod(u, pz, rr);
      div_tx.divmod(rr, row, chunk);
      acc_t g[V];
      load_smem<V, VA>(gt + (pz * a.ty + row) * a.gpitch + chunk * V, g);
      // Outputs outside the plane do not exist: their zero grad_output must not multiply the
      // input (0 * Inf would be NaN where F.conv2d has a value).
      const int outputs = d_r0 + row < a.dst_h ? a.dst_w - (d_c0 + chunk * V) : 0;
      if (run_g == 0) {
#pragma unroll
        for (int v = 0; v < V; ++v) acc[kChunk] += g[v];
      }
      if constexpr (S == 1) {
        constexpr int WINP = round_up(V - 1 + kChunk, VA);
        acc_t win[WINP];
        load_smem<WINP, VA>(tile + (pz * a.rows + row + kh) * a.pitch + chunk * V + kw0, win);
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
#pragma unroll
          for (int v = 0; v < V; ++v) {
            if (v < outputs) acc[j] += g[v] * win[v + j];
          }
        }
      } else {
        const acc_t* base = tile + (pz * a.rows + row * a.stride_h + kh * a.dil_h) * a.pitch +
                            chunk * V * a.stride_w + kw0 * a.dil_w;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (kw0 + j >= a.kw) break;
          const acc_t* q = base + j * a.dil_w;
#pragma unroll
          for (int v = 0; v < V; ++v) {
            if (v < outputs) acc[j] += g[v] * q[v * a.stride_w];
          }
        }
      }
    }
  }

  // Sum over position groups in order: scratch[pg][run][NV].
  __syncthreads();
  if (pg < groups) {
#pragma unroll
    for (int i = 0; i < NV; ++i) tile[(pg * run_block + run) * NV + i] = acc[i];
  }
  __syncthreads();
  acc_t* out = partial + (static_cast<int64_t>(split) * a.dst_c + co) * (taps + 1);
  for (int idx = threadIdx.x; idx < run_block * NV; idx += blockDim.x) {
    const int r = idx / NV;
    const int i = idx - r * NV;
    const int rg = (blockIdx.x - co * run_groups) * run_block + r;
    const int rkh = rg / runs_per_row;
    const int rkw = (rg - rkh * runs_per_row) * kChunk + i;
    const bool write = i < kChunk ? (rkh < a.kh && rkw < a.kw) : rg == 0;
    if (!write) continue;
    acc_t s = 0;
    for (int q = 0; q < groups; ++q) s += tile[(q * run_block + r) * NV + i];
    out[i < kChunk ? rkh * a.kw + rkw : taps] = s;
  }
}

// Splits of the per-channel reduction: enough blocks to fill the GPU, at least `min_steps`
// tiles per block, and a count that depends on the shape only.
int splits_for(int64_t blocks_per_split, int64_t steps, int64_t min_steps) {
  const int64_t want = cdiv(kTargetBlocks, std::max<int64_t>(blocks_per_split, 1));
  const int64_t most = std::max<int64_t>(1, steps / min_steps);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, most, 65535})));
}

template <typename scalar_t, int K, int S>
bool launch_variant(const scalar_t* grad, const scalar_t* input, const DepthwiseParams& p,
                    at::Tensor& partial, int64_t& splits_out, const at::TensorOptions& acc_opts) {
  using acc_t = at::opmath_type<scalar_t>;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t taps = p.kernel_h * p.kernel_w;
  if (!fits_int32(p.out_channels) || p.out_channels > std::numeric_limits<int32_t>::max() / 2) {
    return false;
  }
  if constexpr (K > 0) {
    TilePlan plan;
    if (!plan_tiles<scalar_t, K, S, false>(p, TileUse::kWeightRegisters, plan)) return false;
    // grad_output rows are read as Pack<scalar_t, V>, aligned to its whole size (32 bytes for
    // double), not just 16.
    plan.a.vec_store = plan.a.vec_store &&
                       is_aligned(grad, tile_v<scalar_t, K, S>() * sizeof(scalar_t));
    const int64_t steps = plan.blocks;  // tiles per channel
    const int splits = splits_for(p.out_channels, steps, 4);
    partial = at::empty({splits * p.out_channels * (taps + 1)}, acc_opts);
    const int threads = round_up(plan.threads, 32);
    launch_kernel<wgrad_nchw_reg_kernel<scalar_t, K, S>>(
        dim3(static_cast<unsigned>(p.out_channels), splits), threads, plan.smem, stream, grad,
        input, partial.mutable_data_ptr<acc_t>(), plan.a, steps, splits);
    splits_out = splits;
  } else {
    TilePlan plan;
    if (!plan_tiles<scalar_t, 0, S, false>(p, TileUse::kWeightTaps, plan)) return false;
    const int runs_per_row = static_cast<int>(cdiv(p.kernel_w, kChunk));
    const int64_t runs = p.kernel_h * runs_per_row;
    const int run_block = static_cast<int>(std::min<int64_t>(runs, kMaxThreads));
    const int run_groups = static_cast<int>(cdiv(runs, run_block));
    const int groups = std::max(1, kMaxThreads / run_block);
    const int64_t grid_x = p.out_channels * run_groups;
    if (grid_x > std::numeric_limits<int32_t>::max()) return false;
    const int64_t steps = plan.blocks;
    const int splits = splits_for(grid_x, steps, 2);
    partial = at::empty({splits * p.out_channels * (taps + 1)}, acc_opts);
    launch_kernel<wgrad_nchw_taps_kernel<scalar_t, S>>(
        dim3(static_cast<unsigned>(grid_x), splits), run_block * groups, plan.smem, stream, grad,
        input, partial.mutable_data_ptr<acc_t>(), plan.a, steps, splits, run_block,
        runs_per_row, run_groups, FastDiv(plan.a.ty * plan.a.tx), FastDiv(plan.a.tx));
    splits_out = splits;
  }
  return true;
}

}  // namespace

bool backward_weight_partials_nchw(const at::Tensor& g, const at::Tensor& x,
                                   const DepthwiseParams& p, at::Tensor& partial,
                                   int64_t& splits) {
  bool launched = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "fastdw_depthwise_backward_weight_nchw_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    FASTDW_KERNEL_SWITCH(choose_kernel(p), K, S, [&] {
      launched = launch_variant<scalar_t, K, S>(g.const_data_ptr<scalar_t>(),
                                                x.const_data_ptr<scalar_t>(), p, partial,
                                                splits, acc_opts);
    });
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
