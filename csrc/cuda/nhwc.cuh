#pragma once
// Channels-last (NHWC) forward and backward-input kernels (one template, BWD selects).
//
// The channel axis is contiguous, so a thread owns VC consecutive channels (one 16-byte vector
// when the channel count and pointers allow, else 1 channel) and a strip of TWo consecutive
// outputs along W of one row. Threads of a block: blockDim.x channel lanes x blockDim.y strips;
// consecutive lanes read consecutive 16-byte vectors, so every load is coalesced along C. Input
// windows come straight from global memory through L1 (each input vector is reused across the
// strip in registers; neighbouring strips, ordered row-fastest, hit L1 for the other rows).
// The block's weights are staged once in shared memory, transposed to [tap][channel] so a
// thread reads its VC weights of a tap with one vector load.
//
// Modes match nchw_tiled.cuh (tile_mode): kFwdSpecial (also backward-input with S = 1, as the
// correlation with the flipped kernel), kFwdChunk (runtime size, unit stride/dilation),
// kFwdGeneric, kBwdParity (strips start where (i + pad) % S == 0), kBwdGeneric.
//
// Padding is absent, not zero (F.conv2d): a source column outside the image is skipped, never
// loaded as zero and multiplied (a non-finite weight times zero is NaN).
#include "nchw_tiled.cuh"

namespace fastdw {
namespace cuda {

struct NhwcArgs {
  int64_t strips;        // N * dst_h * strips_w
  int src_h, src_w, dst_h, dst_w;
  int src_c, dst_c, mult;
  int kh, kw, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
  int shift_w;           // strip origin = strip index * TWo - shift_w
  int strips_w;          // strips per row
  int cvecs;             // channel vectors in the destination
  int kwp;               // weight row pitch (taps) in shared memory
  int jcount;            // source channels summed per destination channel (backward: mult)
  int spt;               // strips per thread (amortises the weight staging)
  FastDiv div_h, div_sw; // by dst_h, by strips_w
};

// Outputs per thread along W: longer strips for the runtime-size window (more reuse per load),
// unless 8-wide channel vectors already make the accumulators large.
template <int K, int S, int VC>
constexpr int nhwc_strip() {
  return (K == 0 && S == 1 && VC < 8) ? 8 : 4;
}

// Channels per thread when vectorised: 16 bytes, except 8 bytes for 2-byte types outside 3x3
// stride 1, where a 16-byte vector would put the register window past ~100 registers.
template <typename scalar_t, int K, int S>
constexpr int nhwc_vc() {
  return (sizeof(scalar_t) == 2 && !(K == 3 && S == 1)) ? 4 : vec16<scalar_t>();
}

template <typename scalar_t, int K, int S, int VC, bool BWD>
__global__ void __launch_bounds__(kMaxThreads)
nhwc_kernel(const scalar_t* __restrict__ src, const scalar_t* __restrict__ weight,
            const scalar_t* __restrict__ bias, scalar_t* __restrict__ dst, const NhwcArgs a) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int MODE = tile_mode<K, S, BWD>();
  constexpr int TWo = nhwc_strip<K, S, VC>();
  constexpr bool kFlip = BWD && (MODE == kFwdSpecial || MODE == kFwdChunk);
  constexpr bool kVec = VC > 1;

  const int CL = blockDim.x, SY = blockDim.y;
  const int cl = threadIdx.x, sy = threadIdx.y;
  const int tid = sy * CL + cl, nthreads = CL * SY;
  const int CB = CL * VC;
  const int cbase = blockIdx.y * CB;

  // Weights of the block's channels: wsm[(j * kh + r) * kwp + kw][CB], zero-padded taps. Thread
  // = one channel column (CB <= threads always: VC <= 8 <= blockDim.y), walking the taps with
  // incremental counters rather than divisions.
  acc_t* wsm = smem_as<acc_t>();
  const int taps = a.kh * a.kw;
  const int taps_p = a.kh * a.kwp;
  {
    const int cc = tid % CB;
    const int tstep = nthreads / CB;
    const int ch = cbase + cc;
    int t = tid / CB;
    int kw = t % a.kwp;
    int r = (t / a.kwp) % a.kh;
    int j = t / (a.kwp * a.kh);
    for (; t < a.jcount * a.kh * a.kwp && tid < tstep * CB; t += tstep) {
      acc_t val = 0;
      if (ch < a.dst_c && kw < a.kw) {
        const int64_t wc = BWD ? static_cast<int64_t>(ch) * a.mult + j : ch;
        const int tap = kFlip ? (a.kh - 1 - r) * a.kw + (a.kw - 1 - kw) : r * a.kw + kw;
        val = static_cast<acc_t>(weight[wc * taps + tap]);
      }
      wsm[t * CB + cc] = val;
      kw += tstep;
      while (kw >= a.kwp) {
        kw -= a.kwp;
        if (++r == a.kh) {
          r = 0;
          ++j;
        }
      }
    }
  }
  __syncthreads();

  const int cv = blockIdx.y * CL + cl;
  if (cv >= a.cvecs) return;
  const int c0 = cv * VC;
  acc_t bias_v[VC];
#pragma unroll
  for (int q = 0; q < VC; ++q) bias_v[q] = 0;
  if (!BWD && bias != nullptr) load_global<VC, false>(bias + c0, bias_v);

  for (int k = 0; k < a.spt; ++k) {
    const int strip = (blockIdx.x * a.spt + k) * SY + sy;  // < 2^31 (host check)
    if (strip >= a.strips) return;
    int t1, oh, n, ob;
    a.div_h.divmod(strip, t1, oh);
    a.div_sw.divmod(t1, n, ob);
    const int ow0 = ob * TWo - a.shift_w;

    acc_t acc[TWo][VC];
#pragma unroll
    for (int jo = 0; jo < TWo; ++jo) {
#pragma unroll
      for (int q = 0; q < VC; ++q) acc[jo][q] = bias_v[q];
    }

    const int64_t src_img = n * (static_cast<int64_t>(a.src_h) * a.src_w * a.src_c);
    const int row_stride = a.src_w * a.src_c;
    for (int j = 0; j < a.jcount; ++j) {
      const int sc = BWD ? c0 * a.mult + j : c0 / a.mult;
      const scalar_t* sp = src + src_img + sc;
      const acc_t* wj = wsm + j * taps_p * CB + cl * VC;

      if constexpr (MODE == kFwdSpecial) {
        const int ih0 = oh * S - a.pad_h;
        const int iw0 = ow0 * S - a.pad_w;
        // Rows one at a time: unrolling them would hoist every row's window into registers.
#pragma unroll 1
        for (int r = 0; r < K; ++r) {
          const int ih = ih0 + r;
          if (ih < 0 || ih >= a.src_h) continue;
          const scalar_t* rowp = sp + ih * row_stride;
          acc_t wv[K][VC];
#pragma unroll
          for (int kw = 0; kw < K; ++kw) load_smem<VC, VC>(wj + (r * K + kw) * CB, wv[kw]);
#pragma unroll
          for (int i = 0; i < (TWo - 1) * S + K; ++i) {
            const int iw = iw0 + i;
            if (iw < 0 || iw >= a.src_w) continue;
            acc_t x[VC];
            load_global<VC, kVec>(rowp + iw * a.src_c, x);
#pragma unroll
            for (int jo = 0; jo < TWo; ++jo) {
              const int kw = i - jo * S;
              if (kw >= 0 && kw < K) {
#pragma unroll
                for (int q = 0; q < VC; ++q) acc[jo][q] += wv[kw][q] * x[q];
              }
            }
          }
        }
      } else if constexpr (MODE == kFwdChunk) {
        const int ih0 = oh - a.pad_h;
        const int iw0 = ow0 - a.pad_w;
        for (int r = 0; r < a.kh; ++r) {
          const int ih = ih0 + r;
          if (ih < 0 || ih >= a.src_h) continue;
          const scalar_t* rowp = sp + ih * row_stride;
          for (int k0 = 0; k0 < a.kwp; k0 += kChunk) {
            acc_t wv[kChunk][VC];
#pragma unroll
            for (int kk = 0; kk < kChunk; ++kk) {
              load_smem<VC, VC>(wj + (r * a.kwp + k0 + kk) * CB, wv[kk]);
            }
#pragma unroll
            for (int i = 0; i < TWo - 1 + kChunk; ++i) {
              const int iw = iw0 + k0 + i;
              if (iw < 0 || iw >= a.src_w) continue;
              acc_t x[VC];
              load_global<VC, kVec>(rowp + iw * a.src_c, x);
#pragma unroll
              for (int jo = 0; jo < TWo; ++jo) {
                // Taps past the kernel's width are zero weights: 0 * Inf would be NaN.
                const int kk = i - jo;
                if (kk >= 0 && kk < kChunk && k0 + kk < a.kw) {
#pragma unroll
                  for (int q = 0; q < VC; ++q) acc[jo][q] += wv[kk][q] * x[q];
                }
              }
            }
          }
        }
      } else if constexpr (MODE == kFwdGeneric) {
        for (int r = 0; r < a.kh; ++r) {
          const int ih = oh * a.stride_h - a.pad_h + r * a.dil_h;
          if (ih < 0 || ih >= a.src_h) continue;
          const scalar_t* rowp = sp + ih * row_stride;
          for (int kw = 0; kw < a.kw; ++kw) {
            acc_t wv[VC];
            load_smem<VC, VC>(wj + (r * a.kwp + kw) * CB, wv);
#pragma unroll
            for (int jo = 0; jo < TWo; ++jo) {
              const int iw = (ow0 + jo) * a.stride_w - a.pad_w + kw * a.dil_w;
              if (iw < 0 || iw >= a.src_w) continue;
              acc_t x[VC];
              load_global<VC, kVec>(rowp + iw * a.src_c, x);
#pragma unroll
              for (int q = 0; q < VC; ++q) acc[jo][q] += wv[q] * x[q];
            }
          }
        }
      } else if constexpr (MODE == kBwdParity) {
        constexpr int A = (K - 1 + S - 1) / S;
        const int q0 = (ow0 + a.pad_w) / S - A;  // exact
#pragma unroll 1
        for (int kh = 0; kh < K; ++kh) {
          const int t = oh + a.pad_h - kh;
          if (t < 0 || t % S != 0) continue;
          const int o = t / S;
          if (o >= a.src_h) continue;
          const scalar_t* rowp = sp + o * row_stride;
          acc_t wv[K][VC];
#pragma unroll
          for (int kw = 0; kw < K; ++kw) load_smem<VC, VC>(wj + (kh * K + kw) * CB, wv[kw]);
#pragma unroll
          for (int i = 0; i < A + TWo / S; ++i) {
            const int oc = q0 + i;
            if (oc < 0 || oc >= a.src_w) continue;
            acc_t x[VC];
            load_global<VC, kVec>(rowp + oc * a.src_c, x);
#pragma unroll
            for (int jo = 0; jo < TWo; ++jo) {
              const int kw = jo + (A - i) * S;
              if (kw >= 0 && kw < K) {
#pragma unroll
                for (int q = 0; q < VC; ++q) acc[jo][q] += wv[kw][q] * x[q];
              }
            }
          }
        }
      } else {  // kBwdGeneric
        for (int kh = 0; kh < a.kh; ++kh) {
          const int t = oh + a.pad_h - kh * a.dil_h;
          if (t < 0 || t % a.stride_h != 0) continue;
          const int o = t / a.stride_h;
          if (o >= a.src_h) continue;
          const scalar_t* rowp = sp + o * row_stride;
          for (int kw = 0; kw < a.kw; ++kw) {
            acc_t wv[VC];
            load_smem<VC, VC>(wj + (kh * a.kwp + kw) * CB, wv);
#pragma unroll
            for (int jo = 0; jo < TWo; ++jo) {
              const int tc = ow0 + jo + a.pad_w - kw * a.dil_w;
              if (tc < 0 || tc % a.stride_w != 0) continue;
              const int oc = tc / a.stride_w;
              if (oc >= a.src_w) continue;
              acc_t x[VC];
              load_global<VC, kVec>(rowp + oc * a.src_c, x);
#pragma unroll
              for (int q = 0; q < VC; ++q) acc[jo][q] += wv[q] * x[q];
            }
          }
        }
      }
    }

    scalar_t* out = dst + n * (static_cast<int64_t>(a.dst_h) * a.dst_w * a.dst_c) +
                    (oh * a.dst_w) * a.dst_c + c0;
#pragma unroll
    for (int jo = 0; jo < TWo; ++jo) {
      const int ow = ow0 + jo;
      if (ow >= 0 && ow < a.dst_w) store_global<VC, kVec>(out + ow * a.dst_c, acc[jo]);
    }
  }  // strips
}

template <typename scalar_t, int K, int S, bool BWD>
bool launch_nhwc_variant(const scalar_t* src, const scalar_t* weight, const scalar_t* bias,
                         scalar_t* dst, const DepthwiseParams& p, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int MODE = tile_mode<K, S, BWD>();
  constexpr int VEC = nhwc_vc<scalar_t, K, S>();
  NhwcArgs a{};
  const int64_t src_h = BWD ? p.out_h : p.in_h, src_w = BWD ? p.out_w : p.in_w;
  const int64_t dst_h = BWD ? p.in_h : p.out_h, dst_w = BWD ? p.in_w : p.out_w;
  const int64_t src_c = BWD ? p.out_channels : p.in_channels;
  const int64_t dst_c = BWD ? p.in_channels : p.out_channels;
  if (!fits_int32(src_h * src_w * src_c + src_w * src_c) ||
      !fits_int32(dst_h * dst_w * dst_c + dst_w * dst_c) ||
      !fits_int32((dst_w + 8) * p.stride_w + p.kernel_w * p.dilation_w + p.pad_w) ||
      !fits_int32((dst_h + 1) * p.stride_h + p.kernel_h * p.dilation_h + p.pad_h)) {
    return false;
  }
  a.src_h = static_cast<int>(src_h);
  a.src_w = static_cast<int>(src_w);
  a.dst_h = static_cast<int>(dst_h);
  a.dst_w = static_cast<int>(dst_w);
  a.src_c = static_cast<int>(src_c);
  a.dst_c = static_cast<int>(dst_c);
  a.mult = static_cast<int>(p.multiplier);
  a.kh = static_cast<int>(p.kernel_h);
  a.kw = static_cast<int>(p.kernel_w);
  a.stride_h = static_cast<int>(p.stride_h);
  a.stride_w = static_cast<int>(p.stride_w);
  a.dil_h = static_cast<int>(p.dilation_h);
  a.dil_w = static_cast<int>(p.dilation_w);
  a.pad_h = static_cast<int>(p.pad_h);
  a.pad_w = static_cast<int>(p.pad_w);
  if constexpr (BWD && (MODE == kFwdSpecial || MODE == kFwdChunk)) {
    a.pad_h = a.kh - 1 - a.pad_h;
    a.pad_w = a.kw - 1 - a.pad_w;
  }
  // Channel vectors when every source/destination channel run is aligned and a destination
  // vector maps onto one source vector (multiplier 1).
  const bool vec = p.multiplier == 1 && dst_c % VEC == 0 && src_c % VEC == 0 &&
                   is_aligned(src, 16) && is_aligned(dst, 16);
  const int vc = vec ? VEC : 1;
  const int two = vec ? nhwc_strip<K, S, VEC>() : nhwc_strip<K, S, 1>();
  if constexpr (MODE == kBwdParity) a.shift_w = a.pad_w % S;
  a.strips_w = static_cast<int>(cdiv(dst_w + a.shift_w, two));
  a.strips = p.batch * dst_h * a.strips_w;
  if (!fits_int32(a.strips + kMaxThreads * 8)) return false;
  a.div_h = FastDiv(dst_h);
  a.div_sw = FastDiv(a.strips_w);
  a.kwp = MODE == kFwdChunk ? round_up(a.kw, kChunk) : a.kw;
  a.jcount = BWD ? a.mult : 1;

  a.cvecs = static_cast<int>(cdiv(dst_c, vc));
  int cl = channel_lanes(a.cvecs);
  const int64_t per_lane = static_cast<int64_t>(a.jcount) * a.kh * a.kwp * vc * sizeof(acc_t);
  // Keep the staged weights small enough for several blocks per SM; opt in beyond 48 KB only
  // when even 4 lanes need it (very large kernels).
  while (cl > 4 && per_lane * cl > 32 * 1024) cl = (cl + 1) / 2;
  const int64_t smem = per_lane * cl;
  if (smem > smem_optin_limit()) return false;
  const int sy = std::max(1, kMaxThreads / cl);
  TORCH_INTERNAL_ASSERT(vc <= sy, "fastdw: weight staging needs a thread per channel");
  const int64_t grid_y = cdiv(a.cvecs, cl);
  // A few strips per thread once the grid has plenty of blocks (about 8 per SM on an H100).
  const int64_t strip_blocks = cdiv(a.strips, sy);
  a.spt = static_cast<int>(
      std::min<int64_t>(8, std::max<int64_t>(1, strip_blocks * grid_y / kTargetBlocks)));
  const int64_t grid_x = cdiv(strip_blocks, a.spt);
  if (grid_x > std::numeric_limits<int32_t>::max() || grid_y > 65535) return false;
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  const dim3 block(cl, sy);
  if (vec) {
    launch_kernel<nhwc_kernel<scalar_t, K, S, VEC, BWD>>(grid, block, smem, stream, src, weight,
                                                         bias, dst, a);
  } else {
    launch_kernel<nhwc_kernel<scalar_t, K, S, 1, BWD>>(grid, block, smem, stream, src, weight,
                                                       bias, dst, a);
  }
  return true;
}

template <typename scalar_t, bool BWD>
bool launch_nhwc(const scalar_t* src, const scalar_t* weight, const scalar_t* bias,
                 scalar_t* dst, const DepthwiseParams& p, cudaStream_t stream) {
  bool launched = false;
  FASTDW_KERNEL_SWITCH(choose_kernel(p), K, S, [&] {
    launched = launch_nhwc_variant<scalar_t, K, S, BWD>(src, weight, bias, dst, p, stream);
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
