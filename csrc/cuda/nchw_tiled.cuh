#pragma once
// NCHW kernels built on a shared-memory input tile with halo: forward and backward-input (one
// template, BWD selects), plus the tile geometry the NCHW weight-gradient kernels reuse.
//
// A block owns a TH x TW tile of `planes` destination planes (several planes per block when a
// whole plane fits in one tile, so 7x7 planes still fill a block). Each thread computes V
// consecutive outputs along W of one row; the source region the tile needs (with halo) is
// copied once into shared memory, widened to the accumulation type, zero outside the plane.
//
// Modes (chosen at compile time from the kernel variant, see tile_mode):
//   kFwdSpecial  K x K, stride S fixed: weights in registers; per kernel row a register window
//                of (V-1)*S+K inputs read with 16-byte shared loads. Backward-input with S = 1
//                is this mode too: a correlation of grad_output with the flipped kernel.
//   kFwdChunk    runtime size, unit stride/dilation: weights zero-padded to kChunk taps per
//                chunk in shared memory; per chunk a (V-1+kChunk) window. The large-kernel path.
//   kFwdGeneric  runtime stride and dilation: one shared load per tap and output.
//   kBwdParity   backward-input, K x K with stride S > 1: tiles start where (i + pad) % S == 0
//                so which taps reach each output along W is known at compile time.
//   kBwdGeneric  backward-input with runtime stride/dilation (divisibility tested per tap).
//
// Padding is absent, not zero (F.conv2d): the tile's zero halo times a finite weight adds
// nothing, but times a non-finite one gives NaN. A thread whose tile reaches into the halo and
// whose weights are not all finite computes its outputs from global memory instead
// (direct_value, which skips the taps outside the source); a rare, slow, exact path.
#include "common.cuh"
#include "direct.cuh"

namespace fastdw {
namespace cuda {

enum TileMode : int {
  kFwdSpecial = 0,
  kFwdChunk = 1,
  kFwdGeneric = 2,
  kBwdParity = 3,
  kBwdGeneric = 4,
};

template <int K, int S, bool BWD>
constexpr int tile_mode() {
  if (K > 0) return (BWD && S > 1) ? kBwdParity : kFwdSpecial;
  if (S == 1) return kFwdChunk;
  return BWD ? kBwdGeneric : kFwdGeneric;
}

// Outputs per thread along W.
template <typename scalar_t, int K, int S>
constexpr int tile_v() {
  return (K == 0 && S == 1) ? 8 : (K > 0 && sizeof(scalar_t) == 2 ? 8 : 4);
}

struct NchwArgs {
  int64_t dst_planes;   // N * destination channels
  int64_t batch;
  int dst_c, src_c;     // channels of the destination / source tensors
  int mult;             // depth multiplier
  int src_h, src_w, dst_h, dst_w;
  int kh, kw, stride_h, stride_w, dil_h, dil_w;
  int pad_h, pad_w;     // kFwd* modes: the effective padding of the correlation
  int shift_h, shift_w; // destination tile origin = tile index * tile size - shift
  int tx, ty, planes;   // threads per row, rows per tile, planes per block
  int tiles_w, tiles;   // tiles per plane along W; in all
  int rows, pitch;      // source tile per plane in shared memory
  int kwp;              // weight row pitch in shared memory (runtime-size modes)
  int gpitch;           // weight-gradient tap-owner kernels: grad_output tile pitch
  bool vec_store;       // destination rows allow V-wide vector stores
  DirectArgs exact;     // the same convolution for direct_value (non-finite weights)
};

// ---- geometry of the source tile ------------------------------------------------------------
// Source tile origin for destination tile origin (d_r0, d_c0).
template <int MODE, int K, int S>
__device__ __forceinline__ void tile_source_origin(const NchwArgs& a, int d_r0, int d_c0,
                                                   int& s_r0, int& s_c0) {
  if constexpr (MODE == kFwdSpecial || MODE == kFwdChunk) {
    constexpr int SS = MODE == kFwdChunk ? 1 : S;
    s_r0 = d_r0 * SS - a.pad_h;
    s_c0 = d_c0 * SS - a.pad_w;
  } else if constexpr (MODE == kFwdGeneric) {
    s_r0 = d_r0 * a.stride_h - a.pad_h;
    s_c0 = d_c0 * a.stride_w - a.pad_w;
  } else if constexpr (MODE == kBwdParity) {
    constexpr int A = (K - 1 + S - 1) / S;
    s_r0 = (d_r0 + a.pad_h) / S - A;  // exact: (d_r0 + pad_h) % S == 0
    s_c0 = (d_c0 + a.pad_w) / S - A;
  } else {
    s_r0 = ceil_div_dev(d_r0 + a.pad_h - (a.kh - 1) * a.dil_h, a.stride_h);
    s_c0 = ceil_div_dev(d_c0 + a.pad_w - (a.kw - 1) * a.dil_w, a.stride_w);
  }
}

// Rows and row pitch (elements, a multiple of 16 bytes) of the source tile for tx x ty threads.
template <typename acc_t, int MODE, int K, int S, int V>
inline void tile_extent(const NchwArgs& a, int tx, int ty, int& rows, int& pitch) {
  constexpr int VA = vec16<acc_t>();
  const int tw = tx * V;
  if constexpr (MODE == kFwdSpecial) {
    constexpr int WINP = round_up((V - 1) * S + K, VA);
    rows = (ty - 1) * S + K;
    pitch = (tx - 1) * V * S + WINP;
  } else if constexpr (MODE == kFwdChunk) {
    constexpr int WINP = round_up(V - 1 + kChunk, VA);
    rows = ty - 1 + a.kh;
    pitch = (tx - 1) * V + a.kwp - kChunk + WINP;
  } else if constexpr (MODE == kFwdGeneric) {
    rows = (ty - 1) * a.stride_h + (a.kh - 1) * a.dil_h + 1;
    pitch = (tw - 1) * a.stride_w + (a.kw - 1) * a.dil_w + 1;
  } else if constexpr (MODE == kBwdParity) {
    constexpr int A = (K - 1 + S - 1) / S;
    constexpr int VS = V / S;
    constexpr int WINP = (VS % VA == 0) ? round_up(A + VS, VA) : A + VS;
    rows = (ty - 1) / S + A + 1;
    pitch = (tx - 1) * VS + WINP;
  } else {
    rows = (ty - 1 + (a.kh - 1) * a.dil_h) / a.stride_h + 2;
    pitch = (tw - 1 + (a.kw - 1) * a.dil_w) / a.stride_w + 2;
  }
  pitch = round_up(pitch, VA);
}

// What a tile-based kernel needs besides the source tile, per plane (in acc_t elements).
enum class TileUse { kForward, kBackwardInput, kWeightRegisters, kWeightTaps };

struct TilePlan {
  NchwArgs a;
  int threads;
  int64_t blocks;
  int64_t smem;
};

// Chooses the tile for problem p. Returns false when no tile fits in shared memory or the
// 32-bit in-plane indexing does not hold (the caller then takes a fallback path).
template <typename scalar_t, int K, int S, bool BWD>
inline bool plan_tiles(const DepthwiseParams& p, TileUse use, TilePlan& plan) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int MODE = tile_mode<K, S, BWD>();
  constexpr int V = tile_v<scalar_t, K, S>();
  NchwArgs& a = plan.a;
  a = NchwArgs{};
  const int64_t src_h = BWD ? p.out_h : p.in_h, src_w = BWD ? p.out_w : p.in_w;
  const int64_t dst_h = BWD ? p.in_h : p.out_h, dst_w = BWD ? p.in_w : p.out_w;
  const int64_t src_c = BWD ? p.out_channels : p.in_channels;
  const int64_t dst_c = BWD ? p.in_channels : p.out_channels;
  // In-plane offsets and tile coordinates are 32-bit.
  if (!fits_int32(src_h * src_w + src_w) || !fits_int32(dst_h * dst_w + dst_w) ||
      !fits_int32(p.out_channels) ||
      !fits_int32((dst_w + 256) * p.stride_w + p.kernel_w * p.dilation_w + p.pad_w) ||
      !fits_int32((dst_h + 256) * p.stride_h + p.kernel_h * p.dilation_h + p.pad_h)) {
    return false;
  }
  a.batch = p.batch;
  a.dst_planes = p.batch * dst_c;
  a.dst_c = static_cast<int>(dst_c);
  a.src_c = static_cast<int>(src_c);
  a.mult = static_cast<int>(p.multiplier);
  a.src_h = static_cast<int>(src_h);
  a.src_w = static_cast<int>(src_w);
  a.dst_h = static_cast<int>(dst_h);
  a.dst_w = static_cast<int>(dst_w);
  a.kh = static_cast<int>(p.kernel_h);
  a.kw = static_cast<int>(p.kernel_w);
  a.stride_h = static_cast<int>(p.stride_h);
  a.stride_w = static_cast<int>(p.stride_w);
  a.dil_h = static_cast<int>(p.dilation_h);
  a.dil_w = static_cast<int>(p.dilation_w);
  a.pad_h = static_cast<int>(p.pad_h);
  a.pad_w = static_cast<int>(p.pad_w);
  if constexpr (BWD && (MODE == kFwdSpecial || MODE == kFwdChunk)) {
    // Unit stride and dilation: grad_input = grad_output correlated with the flipped kernel.
    a.pad_h = a.kh - 1 - a.pad_h;
    a.pad_w = a.kw - 1 - a.pad_w;
  }
  if constexpr (MODE == kBwdParity) {
    a.shift_h = a.pad_h % S;
    a.shift_w = a.pad_w % S;
  }
  a.kwp = MODE == kFwdChunk ? round_up(a.kw, kChunk) : a.kw;
  a.vec_store = a.shift_w == 0 && a.dst_w % V == 0;
  a.exact = direct_args(p, BWD);

  const int64_t span_w = dst_w + a.shift_w, span_h = dst_h + a.shift_h;
  // Up to 16 threads (16 * V outputs) per tile row, balanced so the last tile is not a sliver.
  const int64_t cols = std::max<int64_t>(cdiv(span_w, V), 1);
  const int tx = static_cast<int>(cdiv(cols, cdiv(cols, 16)));
  const int step = MODE == kBwdParity ? S : 1;
  int ty0 = static_cast<int>(std::min<int64_t>(kMaxThreads / tx, span_h + step - 1));
  ty0 = std::max(step, ty0 / step * step);
  // Planes that may share a block: weight-gradient tiles stack images of one channel.
  const bool stack_images = use == TileUse::kWeightRegisters || use == TileUse::kWeightTaps;
  const int64_t max_planes = stack_images ? p.batch : a.dst_planes;

  for (const int64_t limit : {kDefaultSmem, smem_optin_limit()}) {
    for (int ty_max = ty0; ty_max >= step; ty_max = (ty_max / 2) / step * step) {
      // Balanced: the same number of tiles, each as short as possible.
      const int ty = round_up(static_cast<int>(cdiv(span_h, cdiv(span_h, ty_max))), step);
      int rows = 0, pitch = 0;
      tile_extent<acc_t, MODE, K, S, V>(a, tx, ty, rows, pitch);
      const int64_t tiles_w = cdiv(span_w, tx * V), tiles_h = cdiv(span_h, ty);
      int planes = 1;
      if (tiles_w * tiles_h == 1) {
        planes = static_cast<int>(std::min<int64_t>(kMaxThreads / (tx * ty), max_planes));
        planes = std::max(planes, 1);
      }
      const int gpitch = round_up(tx * V, vec16<acc_t>());
      for (;; planes = planes / 2) {
        int64_t per_plane = static_cast<int64_t>(rows) * pitch;
        if (use == TileUse::kForward || use == TileUse::kBackwardInput) {
          if (MODE != kFwdSpecial && MODE != kBwdParity) per_plane += a.kh * a.kwp;
        } else if (use == TileUse::kWeightTaps) {
          per_plane += static_cast<int64_t>(ty) * gpitch;
        }
        int64_t smem = planes * per_plane * static_cast<int64_t>(sizeof(acc_t));
        if (use == TileUse::kWeightTaps) {
          // The closing reduction reuses the tile: (threads) x (kChunk + 1) values.
          smem = std::max<int64_t>(smem, kMaxThreads * (kChunk + 1) * sizeof(acc_t));
        } else if (use == TileUse::kWeightRegisters) {
          const int64_t nv = K > 0 ? K * K + 1 : 1;
          smem = std::max<int64_t>(smem, (kMaxThreads / 32) * nv * sizeof(acc_t));
        }
        if (smem <= limit) {
          if (!fits_int32(tiles_w * tiles_h)) return false;
          a.tx = tx;
          a.ty = ty;
          a.planes = planes;
          a.rows = rows;
          a.pitch = pitch;
          a.gpitch = gpitch;
          a.tiles_w = static_cast<int>(tiles_w);
          a.tiles = static_cast<int>(tiles_w * tiles_h);
          plan.threads = planes * tx * ty;
          plan.blocks = cdiv(max_planes, planes) * a.tiles;
          plan.smem = smem;
          return true;
        }
        if (planes == 1) break;
      }
      if (ty_max == step) break;
    }
  }
  return false;
}

// ---- forward / backward-input kernel -------------------------------------------------------
template <typename scalar_t, int K, int S, bool BWD>
__global__ void __launch_bounds__(kMaxThreads)
nchw_tiled_kernel(const scalar_t* __restrict__ src, const scalar_t* __restrict__ weight,
                  const scalar_t* __restrict__ bias, scalar_t* __restrict__ dst,
                  const NchwArgs a) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int MODE = tile_mode<K, S, BWD>();
  constexpr int V = tile_v<scalar_t, K, S>();
  constexpr int VA = vec16<acc_t>();
  constexpr bool kFlip = BWD && (MODE == kFwdSpecial || MODE == kFwdChunk);
  constexpr bool kWeightsInSmem = MODE == kFwdChunk || MODE == kFwdGeneric || MODE == kBwdGeneric;

  acc_t* tile = smem_as<acc_t>();
  acc_t* wsm = tile + a.planes * a.rows * a.pitch;

  const int per_plane = a.tx * a.ty;
  const int pz = threadIdx.x / per_plane;
  const int rem = threadIdx.x - pz * per_plane;
  const int tyi = rem / a.tx;
  const int txi = rem - tyi * a.tx;
  const int64_t group = blockIdx.x / a.tiles;
  const int tile_id = static_cast<int>(blockIdx.x - group * a.tiles);
  const int th = tile_id / a.tiles_w;
  const int tw = tile_id - th * a.tiles_w;
  const int64_t plane0 = group * a.planes;
  const int64_t plane = plane0 + pz;
  const bool plane_ok = plane < a.dst_planes;
  const int64_t n = plane / a.dst_c;
  const int c = static_cast<int>(plane - n * a.dst_c);

  const int d_r0 = th * a.ty - a.shift_h;
  const int d_c0 = tw * a.tx * V - a.shift_w;
  int s_r0, s_c0;
  tile_source_origin<MODE, K, S>(a, d_r0, d_c0, s_r0, s_c0);
  const int64_t src_plane_size = static_cast<int64_t>(a.src_h) * a.src_w;
  const bool halo = s_r0 < 0 || s_c0 < 0 || s_r0 + a.rows > a.src_h || s_c0 + a.pitch > a.src_w;
  bool exact = false;  // this thread's outputs come from direct_value

  acc_t acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = 0;
  if (!BWD && bias != nullptr && plane_ok) {
    const acc_t b = static_cast<acc_t>(bias[c]);
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = b;
  }

  const int J = BWD ? a.mult : 1;
  for (int j = 0; j < J; ++j) {
    if (j > 0) __syncthreads();
    load_tile<scalar_t>(tile, a.planes, a.rows, a.pitch, s_r0, s_c0, a.src_h, a.src_w,
                        [&](int pp) -> const scalar_t* {
                          const int64_t dp = plane0 + pp;
                          if (dp >= a.dst_planes) return nullptr;
                          const int64_t nn = dp / a.dst_c;
                          const int64_t cc = dp - nn * a.dst_c;
                          const int64_t sp = BWD ? nn * a.src_c + cc * a.mult + j
                                                 : nn * a.src_c + cc / a.mult;
                          return src + sp * src_plane_size;
                        });
    const int taps = a.kh * a.kw;
    bool nonfinite = false;  // among the weights this thread stages
    if constexpr (kWeightsInSmem) {
      const int wrow = MODE == kFwdChunk ? a.kwp : a.kw;
      const int per = a.kh * wrow;
      for (int idx = threadIdx.x; idx < a.planes * per; idx += blockDim.x) {
        const int pp = idx / per;
        const int t = idx - pp * per;
        const int r = t / wrow;
        const int kw = t - r * wrow;
        const int64_t dp = plane0 + pp;
        acc_t val = 0;
        if (dp < a.dst_planes && kw < a.kw) {
          const int cc = static_cast<int>(dp % a.dst_c);
          const int64_t wc = BWD ? static_cast<int64_t>(cc) * a.mult + j : cc;
          const int tap = kFlip ? (a.kh - 1 - r) * a.kw + (a.kw - 1 - kw) : r * a.kw + kw;
          val = static_cast<acc_t>(weight[wc * taps + tap]);
        }
        nonfinite |= !is_finite(val);
        wsm[idx] = val;
      }
    }
    if (__syncthreads_or(nonfinite) && halo) exact = true;
    if (!plane_ok || pz >= a.planes) continue;

    if constexpr (MODE == kFwdSpecial || MODE == kBwdParity) {
      acc_t wreg[K * K];
      const int64_t wc = BWD ? static_cast<int64_t>(c) * a.mult + j : c;
      const scalar_t* wp = weight + wc * (K * K);
#pragma unroll
      for (int i = 0; i < K * K; ++i) wreg[i] = static_cast<acc_t>(wp[kFlip ? K * K - 1 - i : i]);
      if (halo) {
#pragma unroll
        for (int i = 0; i < K * K; ++i) exact |= !is_finite(wreg[i]);
      }

      if constexpr (MODE == kFwdSpecial) {
        constexpr int WIN = (V - 1) * S + K;
        constexpr int WINP = round_up(WIN, VA);
        constexpr int AL = (V * S) % VA == 0 ? VA : 1;
        const acc_t* base = tile + (pz * a.rows + tyi * S) * a.pitch + txi * V * S;
#pragma unroll
        for (int r = 0; r < K; ++r) {
          acc_t win[WINP];
          load_smem<WINP, AL>(base + r * a.pitch, win);
#pragma unroll
          for (int kw = 0; kw < K; ++kw) {
#pragma unroll
            for (int v = 0; v < V; ++v) acc[v] += wreg[r * K + kw] * win[v * S + kw];
          }
        }
      } else {
        constexpr int A = (K - 1 + S - 1) / S;
        constexpr int VS = V / S;
        constexpr int AL = VS % VA == 0 ? VA : 1;
        constexpr int WINP = AL > 1 ? round_up(A + VS, VA) : A + VS;
        const acc_t* base = tile + pz * a.rows * a.pitch + txi * VS;
#pragma unroll
        for (int kh = 0; kh < K; ++kh) {
          const int dd = tyi - kh + A * S;  // >= 0
          if (dd % S != 0) continue;
          acc_t win[WINP];
          load_smem<WINP, AL>(base + (dd / S) * a.pitch, win);
#pragma unroll
          for (int kw = 0; kw < K; ++kw) {
#pragma unroll
            for (int v = 0; v < V; ++v) {
              if ((v - kw + A * S) % S == 0) {
                acc[v] += wreg[kh * K + kw] * win[(v - kw + A * S) / S];
              }
            }
          }
        }
      }
    } else if constexpr (MODE == kFwdChunk) {
      constexpr int WINP = round_up(V - 1 + kChunk, VA);
      const acc_t* base = tile + (pz * a.rows + tyi) * a.pitch + txi * V;
      const acc_t* wbase = wsm + pz * a.kh * a.kwp;
      for (int r = 0; r < a.kh; ++r) {
        const acc_t* row = base + r * a.pitch;
        const acc_t* wr = wbase + r * a.kwp;
        for (int k0 = 0; k0 < a.kwp; k0 += kChunk) {
          acc_t win[WINP];
          load_smem<WINP, VA>(row + k0, win);
          acc_t wv[kChunk];
          load_smem<kChunk, VA>(wr + k0, wv);
          // The zero weights past the kernel's width must not multiply the input: 0 * Inf
          // would be NaN where F.conv2d has a value.
          const int in_kernel = a.kw - k0;
#pragma unroll
          for (int jj = 0; jj < kChunk; ++jj) {
            if (jj >= in_kernel) break;
#pragma unroll
            for (int v = 0; v < V; ++v) acc[v] += wv[jj] * win[v + jj];
          }
        }
      }
    } else if constexpr (MODE == kFwdGeneric) {
      const int sw = a.stride_w;
      const acc_t* base = tile + (pz * a.rows + tyi * a.stride_h) * a.pitch + txi * V * sw;
      const acc_t* wbase = wsm + pz * a.kh * a.kw;
      for (int r = 0; r < a.kh; ++r) {
        const acc_t* row = base + r * a.dil_h * a.pitch;
        for (int kw = 0; kw < a.kw; ++kw) {
          const acc_t wv = wbase[r * a.kw + kw];
          const acc_t* q = row + kw * a.dil_w;
#pragma unroll
          for (int v = 0; v < V; ++v) acc[v] += wv * q[v * sw];
        }
      }
    } else {  // kBwdGeneric
      const acc_t* pbase = tile + pz * a.rows * a.pitch;
      const acc_t* wbase = wsm + pz * a.kh * a.kw;
      const int di = d_r0 + tyi;
      const int dc = d_c0 + txi * V;
      for (int kh = 0; kh < a.kh; ++kh) {
        const int t = di + a.pad_h - kh * a.dil_h;
        if (t % a.stride_h != 0) continue;
        const int rr = t / a.stride_h - s_r0;
        const acc_t* row = pbase + rr * a.pitch;
        for (int kw = 0; kw < a.kw; ++kw) {
          const acc_t wv = wbase[kh * a.kw + kw];
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const int tc = dc + v + a.pad_w - kw * a.dil_w;
            if (tc % a.stride_w == 0) acc[v] += wv * row[tc / a.stride_w - s_c0];
          }
        }
      }
    }
  }

  const int dr = d_r0 + tyi;
  const int dc = d_c0 + txi * V;
  if (!plane_ok || pz >= a.planes || dr < 0 || dr >= a.dst_h) return;
  scalar_t* out = dst + plane * (static_cast<int64_t>(a.dst_h) * a.dst_w) + dr * a.dst_w;
  if (exact) {
    // One copy of the loop, not V: this rare path must not cost the fast one registers.
#pragma unroll 1
    for (int v = 0; v < V; ++v) {
      if (dc + v >= 0 && dc + v < a.dst_w) {
        out[dc + v] = static_cast<scalar_t>(
            direct_value<scalar_t, BWD>(src, weight, bias, a.exact, n, c, dr, dc + v));
      }
    }
    return;
  }
  if (a.vec_store && dc + V <= a.dst_w) {
    store_global<V, true>(out + dc, acc);
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      if (dc + v >= 0 && dc + v < a.dst_w) out[dc + v] = static_cast<scalar_t>(acc[v]);
    }
  }
}

// Launches the forward (BWD = false: src = input, dst = output, bias optional) or the
// backward-input (BWD = true: src = grad_output, dst = grad_input) tiled kernel. Returns false
// without launching when the problem does not fit the tiled path.
template <typename scalar_t, bool BWD>
bool launch_nchw_tiled(const scalar_t* src, const scalar_t* weight, const scalar_t* bias,
                       scalar_t* dst, const DepthwiseParams& p, cudaStream_t stream) {
  bool launched = false;
  FASTDW_KERNEL_SWITCH(choose_kernel(p), K, S, [&] {
    TilePlan plan;
    if (!plan_tiles<scalar_t, K, S, BWD>(
            p, BWD ? TileUse::kBackwardInput : TileUse::kForward, plan)) {
      return;
    }
    if (plan.blocks > std::numeric_limits<int32_t>::max()) return;
    launch_kernel<nchw_tiled_kernel<scalar_t, K, S, BWD>>(static_cast<unsigned>(plan.blocks),
                                                          plan.threads, plan.smem, stream, src,
                                                          weight, bias, dst, plan.a);
    launched = true;
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
