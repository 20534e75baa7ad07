#pragma once
// Shared pieces of the CUDA depthwise kernels: vector packs, shared-memory window loads, the
// compile-time specialisation switch, the tile loader, and host launch helpers.
//
// Index convention: every kernel forms a 64-bit offset once per image or plane (n * C * H * W
// can exceed 2^31) and indexes inside an image with 32-bit ints. The host checks that one
// image fits 32-bit offsets (fits_int32) and otherwise takes the 64-bit fallback kernels
// (direct.cuh and the int64 instantiation of the tap-owner weight-gradient kernel).
//
// FASTDW_CUDA_SIM: defined by the CPU harness (tests/cuda_harness), which compiles these same
// sources with g++ and runs every launch in a CUDA simulator. It changes only how a kernel is
// launched (launch_kernel) and where dynamic shared memory comes from (smem_as).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "depthwise.h"

namespace fastdw {
namespace cuda {

constexpr int kMaxThreads = 256;
// Taps per register window in the runtime-kernel-size paths (weights zero-padded to a multiple).
constexpr int kChunk = 8;
// Dynamic shared memory a block may use without opting in.
constexpr int64_t kDefaultSmem = 48 * 1024;

// ---- compile-time specialisation -----------------------------------------------------------
// The (square kernel size, stride) pairs compiled with both fixed at compile time (dilation 1).
// Everything else takes one of two runtime-size variants:
//   K = 0, S = 1: any kernel size, unit stride and dilation (register windows over
//                 kChunk-tap chunks; the large-kernel path: 9x9 .. 31x31, 51x5, 5x51, ...);
//   K = 0, S = 0: fully generic stride and dilation.
#define FASTDW_SPECIALIZATIONS(X) X(3, 1) X(3, 2) X(5, 1) X(5, 2) X(7, 1) X(7, 2)

struct KernelChoice {
  int k;  // > 0: square k x k with stride s and dilation 1; 0: runtime size
  int s;  // compile-time stride; 0 = runtime stride and dilation
};

inline KernelChoice choose_kernel(const DepthwiseParams& p) {
  const bool unit_dilation = p.dilation_h == 1 && p.dilation_w == 1;
  if (unit_dilation && p.kernel_h == p.kernel_w && p.stride_h == p.stride_w) {
#define FASTDW_MATCH_(K_, S_) \
  if (p.kernel_h == K_ && p.stride_h == S_) return {K_, S_};
    FASTDW_SPECIALIZATIONS(FASTDW_MATCH_)
#undef FASTDW_MATCH_
  }
  if (unit_dilation && p.stride_h == 1 && p.stride_w == 1) return {0, 1};
  return {0, 0};
}

template <int V>
using IntC = std::integral_constant<int, V>;

// Calls f(IntC<K>, IntC<S>) for the variant `c` names; instantiates f for every variant.
template <typename F>
inline void kernel_switch(KernelChoice c, F&& f) {
#define FASTDW_CASE_(K_, S_)            \
  if (c.k == K_ && c.s == S_) {         \
    f(IntC<K_>{}, IntC<S_>{});          \
    return;                             \
  }
  FASTDW_SPECIALIZATIONS(FASTDW_CASE_)
#undef FASTDW_CASE_
  if (c.s == 1) {
    f(IntC<0>{}, IntC<1>{});
  } else {
    f(IntC<0>{}, IntC<0>{});
  }
}

// FASTDW_KERNEL_SWITCH(choice, K, S, [&] { launch<scalar_t, K, S>(...); });
// Like AT_DISPATCH: the lambda is expanded where K and S are constexpr ints.
#define FASTDW_KERNEL_SWITCH(CHOICE, K, S, ...)                                       \
  ::fastdw::cuda::kernel_switch((CHOICE), [&](auto k_tag_, auto s_tag_) {             \
    constexpr int K = decltype(k_tag_)::value;                                        \
    constexpr int S = decltype(s_tag_)::value;                                        \
    (__VA_ARGS__)();                                                                  \
  })

// ---- small helpers --------------------------------------------------------------------------
__host__ __device__ constexpr int round_up(int a, int b) { return (a + b - 1) / b * b; }
__host__ __device__ constexpr int cmin(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int cmax(int a, int b) { return a > b ? a : b; }

template <typename T>
__device__ __forceinline__ bool is_finite(T v) {
#ifdef __CUDA_ARCH__
  return isfinite(v);
#else
  return std::isfinite(v);
#endif
}

__device__ __forceinline__ int floor_div_dev(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
__device__ __forceinline__ int ceil_div_dev(int a, int b) { return -floor_div_dev(-a, b); }

// Division of a non-negative int below 2^31 by a divisor fixed at launch, as a multiply-high
// and a shift (the magic-number scheme of ATen's IntDivider): index decoding in hot loops.
struct FastDiv {
  uint32_t d = 1, m = 1, s = 0;
  FastDiv() = default;
  explicit FastDiv(int64_t divisor) : d(static_cast<uint32_t>(divisor)) {
    for (s = 0; s < 32; ++s) {
      if ((uint64_t{1} << s) >= d) break;
    }
    m = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << s) - d)) / d + 1);
  }
  __device__ __forceinline__ int div(int n) const {
    const uint32_t un = static_cast<uint32_t>(n);
    return static_cast<int>((__umulhi(un, m) + un) >> s);
  }
  // q = n / d, r = n % d.
  __device__ __forceinline__ void divmod(int n, int& q, int& r) const {
    q = div(n);
    r = n - q * static_cast<int>(d);
  }
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements of T per 16-byte access.
template <typename T>
constexpr int vec16() {
  return static_cast<int>(16 / sizeof(T));
}

// N consecutive elements at p (whose offset is a multiple of A elements) into registers, in
// 16-byte pieces where the alignment allows.
template <int N, int A, typename T>
__device__ __forceinline__ void load_smem(const T* p, T (&out)[N]) {
  constexpr int G = cmin(A, vec16<T>()) > 0 ? cmin(A, vec16<T>()) : 1;
  if constexpr (G > 1 && N % G == 0) {
#pragma unroll
    for (int i = 0; i < N; i += G) {
      const Pack<T, G> pk = *reinterpret_cast<const Pack<T, G>*>(p + i);
#pragma unroll
      for (int j = 0; j < G; ++j) out[i + j] = pk.v[j];
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = p[i];
  }
}

// N consecutive global elements, widened to acc_t; VEC: p is aligned to N * sizeof(scalar_t).
template <int N, bool VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_global(const scalar_t* __restrict__ p, acc_t (&out)[N]) {
  if constexpr (VEC && N > 1) {
    const Pack<scalar_t, N> pk = *reinterpret_cast<const Pack<scalar_t, N>*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = static_cast<acc_t>(pk.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = static_cast<acc_t>(p[i]);
  }
}

template <int N, bool VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_global(scalar_t* __restrict__ p, const acc_t (&in)[N]) {
  if constexpr (VEC && N > 1) {
    Pack<scalar_t, N> pk;
#pragma unroll
    for (int i = 0; i < N; ++i) pk.v[i] = static_cast<scalar_t>(in[i]);
    *reinterpret_cast<Pack<scalar_t, N>*>(p) = pk;
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = static_cast<scalar_t>(in[i]);
  }
}

template <typename T>
__device__ __forceinline__ T* smem_as() {
#ifdef FASTDW_CUDA_SIM
  return reinterpret_cast<T*>(cuda_sim::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char fastdw_smem[];
  return reinterpret_cast<T*>(fastdw_smem);
#endif
}

// Copies `planes` source planes, rows [r0, r0 + rows) x cols [c0, c0 + pitch) of each, into
// shared memory (row pitch `pitch`), widened to acc_t; zero outside the h x w plane or when
// plane_ptr(pp) is null. All threads of the (1-D) block take part.
template <typename scalar_t, typename acc_t, typename PlanePtr>
__device__ __forceinline__ void load_tile(acc_t* __restrict__ tile, int planes, int rows,
                                          int pitch, int r0, int c0, int h, int w,
                                          PlanePtr plane_ptr) {
  const int nthreads = blockDim.x;
  const int lanes = pitch < nthreads ? pitch : nthreads;
  const int rstep = nthreads / lanes;
  const int lr = threadIdx.x / lanes;
  const int lc = threadIdx.x - lr * lanes;
  if (lr >= rstep) return;
  const int total = planes * rows;
  int pp = lr / rows;
  int r = lr - pp * rows;
  const int dpp = rstep / rows, dr = rstep - dpp * rows;
  // plane_ptr may divide: call it only when the plane changes.
  int src_pp = pp;
  const scalar_t* src = plane_ptr(pp);
  if (lanes == pitch) {  // one column per thread: the common case
    const int gc = c0 + lc;
    const bool col_ok = gc >= 0 && gc < w;
#pragma unroll 4
    for (int rr = lr; rr < total; rr += rstep) {
      if (pp != src_pp) {
        src = plane_ptr(pp);
        src_pp = pp;
      }
      const int gr = r0 + r;
      const bool ok = col_ok && src != nullptr && gr >= 0 && gr < h;
      tile[rr * pitch + lc] = ok ? static_cast<acc_t>(src[gr * w + gc]) : acc_t(0);
      pp += dpp;
      r += dr;
      if (r >= rows) {
        r -= rows;
        ++pp;
      }
    }
    return;
  }
  for (int rr = lr; rr < total; rr += rstep) {
    if (pp != src_pp) {
      src = plane_ptr(pp);
      src_pp = pp;
    }
    const int gr = r0 + r;
    const bool row_ok = src != nullptr && gr >= 0 && gr < h;
    acc_t* dst = tile + rr * pitch;
    for (int c = lc; c < pitch; c += lanes) {
      const int gc = c0 + c;
      dst[c] = (row_ok && gc >= 0 && gc < w) ? static_cast<acc_t>(src[gr * w + gc]) : acc_t(0);
    }
    pp += dpp;
    r += dr;
    if (r >= rows) {
      r -= rows;
      ++pp;
    }
  }
}

// Sums NV per-thread values over the (1-D) block in a fixed order (shuffle tree, then warps in
// order) and writes them to out[0, NV). `scratch` needs NV * warps elements; blockDim.x must be a
// multiple of 32. Ends with the block synchronised.
template <int NV, typename acc_t>
__device__ __forceinline__ void block_reduce_store(acc_t (&vals)[NV], acc_t* scratch,
                                                   acc_t* __restrict__ out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    acc_t v = vals[i];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) scratch[warp * NV + i] = v;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < NV; i += blockDim.x) {
    acc_t s = 0;
    for (int w = 0; w < warps; ++w) s += scratch[w * NV + i];
    out[i] = s;
  }
  __syncthreads();
}

// ---- host helpers ---------------------------------------------------------------------------
inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The bound below which the 32-bit-index kernels are used. The CPU harness lowers it so that
// small tensors take the 64-bit fallback kernels too; the kernels themselves do not change.
#ifndef FASTDW_INDEX32_LIMIT
#define FASTDW_INDEX32_LIMIT INT32_MAX
#endif
constexpr int64_t kIndex32Limit = FASTDW_INDEX32_LIMIT;

inline bool fits_int32(int64_t v) { return v < kIndex32Limit; }

inline int64_t smem_optin_limit() {
  return static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
}

// Every kernel of csrc/cuda is launched here: Kernel<<<grid, block, smem, stream>>>(args...),
// after raising the kernel's dynamic shared-memory limit when it needs more than the default,
// then the launch check. The CPU harness runs the same launch in its simulator instead.
template <auto Kernel, typename... Args>
inline void launch_kernel(dim3 grid, dim3 block, int64_t smem, cudaStream_t stream,
                          Args... args) {
  if (smem > kDefaultSmem) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
#ifdef FASTDW_CUDA_SIM
  // Every kernel here is declared __launch_bounds__(kMaxThreads).
  cuda_sim::launch<Kernel>(kMaxThreads, grid, block, static_cast<size_t>(smem), args...);
#else
  Kernel<<<grid, block, static_cast<size_t>(smem), stream>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

inline bool is_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// Channel lanes per block for `cvecs` channel vectors: all of them when <= 32, else the count
// in [16, 32] that wastes the fewest lanes in the last block.
inline int channel_lanes(int64_t cvecs) {
  if (cvecs <= 32) return static_cast<int>(std::max<int64_t>(cvecs, 1));
  int best = 32;
  int64_t best_waste = cdiv(cvecs, 32) * 32 - cvecs;
  for (int cl = 31; cl >= 16; --cl) {
    const int64_t waste = cdiv(cvecs, cl) * cl - cvecs;
    if (waste < best_waste) {
      best = cl;
      best_waste = waste;
    }
  }
  return best;
}

// Number of blocks the weight-gradient kernels aim for when splitting the reduction. A fixed
// number (not the SM count) so the summation order, and the result bits, depend on the shape
// only.
constexpr int64_t kTargetBlocks = 1024;

}  // namespace cuda
}  // namespace fastdw
