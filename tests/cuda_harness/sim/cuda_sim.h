#pragma once
// CUDA's execution model on the host CPU, for running csrc/cuda's kernels unchanged (see
// ../README.md). The stub cuda_runtime.h includes this header in place of the toolkit's when the
// kernel sources are compiled with g++ -DFASTDW_CUDA_SIM.
//
// A launch runs the grid's blocks one after another; the threads of a block are user-space
// fibers. A fiber runs until it reaches a barrier or a warp collective, then the scheduler runs
// the next one, so every thread reaches each barrier before any passes it, and the lanes of a
// warp exchange values at a shuffle in lockstep. The order in which threads (and blocks) run
// between barriers is a setting: a race through shared memory changes the result between orders.
#include <cstddef>
#include <cstdint>
#include <source_location>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

// ---- qualifiers: plain host C++ -------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// Only dynamic shared memory is modelled (the kernels take theirs through smem_as): a static
// __shared__ declaration fails to compile, with this name in the message.
#define __shared__ fastdw_cuda_sim_models_dynamic_shared_memory_only

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables of the thread the scheduler is running (set at every switch).
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

namespace cuda_sim {

using Where = std::source_location;

// Dynamic shared memory per block: without and with the kernel's opt-in (cudaFuncSetAttribute);
// the values of the GPU the project is measured on (H200, sm_90).
constexpr size_t kSharedMemPerBlock = 48 * 1024;
constexpr size_t kSharedMemPerBlockOptin = 227 * 1024;

// __syncthreads and its predicate forms: waits until every thread of the block is at the same
// barrier, then returns the reduction of `pred` over the block (kPlain returns 0).
enum class BarrierKind { kPlain, kAnd, kOr, kCount };
int block_barrier(BarrierKind kind, int pred, Where where);

// A warp collective: the lanes named in `mask` deposit `bytes` bytes of their value and wait
// until every one of them is at the same call; then each gets its result.
enum class WarpOp { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSync };
void warp_collective(WarpOp op, unsigned mask, const void* value, size_t bytes, int arg,
                     int width, void* result, Where where);

// The running block's dynamic shared memory: its own heap allocation of exactly the launch's
// size, filled with the poison byte before the block starts.
void* dynamic_shared_memory();

}  // namespace cuda_sim

// ---- device built-ins -----------------------------------------------------------------------
inline void __syncthreads(cuda_sim::Where w = cuda_sim::Where::current()) {
  cuda_sim::block_barrier(cuda_sim::BarrierKind::kPlain, 0, w);
}
inline int __syncthreads_and(int pred, cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::block_barrier(cuda_sim::BarrierKind::kAnd, pred, w);
}
inline int __syncthreads_or(int pred, cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::block_barrier(cuda_sim::BarrierKind::kOr, pred, w);
}
inline int __syncthreads_count(int pred, cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::block_barrier(cuda_sim::BarrierKind::kCount, pred, w);
}

namespace cuda_sim {
template <typename T>
inline T shuffle(WarpOp op, unsigned mask, T var, int arg, int width, Where w) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "shuffles move values of up to 8 bytes");
  T out;
  warp_collective(op, mask, &var, sizeof(T), arg, width, &out, w);
  return out;
}
inline unsigned vote(WarpOp op, unsigned mask, int pred, Where w) {
  unsigned out;
  warp_collective(op, mask, &pred, sizeof(pred), 0, warpSize, &out, w);
  return out;
}
}  // namespace cuda_sim

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::shuffle(cuda_sim::WarpOp::kShflIdx, mask, var, src_lane, width, w);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::shuffle(cuda_sim::WarpOp::kShflUp, mask, var, static_cast<int>(delta), width,
                           w);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::shuffle(cuda_sim::WarpOp::kShflDown, mask, var, static_cast<int>(delta),
                           width, w);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::shuffle(cuda_sim::WarpOp::kShflXor, mask, var, lane_mask, width, w);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              cuda_sim::Where w = cuda_sim::Where::current()) {
  return cuda_sim::vote(cuda_sim::WarpOp::kBallot, mask, pred, w);
}
inline int __any_sync(unsigned mask, int pred, cuda_sim::Where w = cuda_sim::Where::current()) {
  return static_cast<int>(cuda_sim::vote(cuda_sim::WarpOp::kAny, mask, pred, w));
}
inline int __all_sync(unsigned mask, int pred, cuda_sim::Where w = cuda_sim::Where::current()) {
  return static_cast<int>(cuda_sim::vote(cuda_sim::WarpOp::kAll, mask, pred, w));
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       cuda_sim::Where w = cuda_sim::Where::current()) {
  cuda_sim::vote(cuda_sim::WarpOp::kSync, mask, 0, w);
}

inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// ---- launches ---------------------------------------------------------------------------------
namespace cuda_sim {

// One kernel instantiation the host code can launch, and how often it ran.
struct KernelRecord {
  std::string name;
  int64_t launches = 0;
};

// Adds a kernel to the registry (once per name); the pointer stays valid.
KernelRecord* register_kernel(std::string name);

// "fastdw::cuda::nchw_tiled_kernel<float, 3, 1, false>" for Kernel = that instantiation.
template <auto Kernel>
std::string kernel_name() {
  const std::string_view f = __PRETTY_FUNCTION__;  // "... [with auto Kernel = NAME; ...]"
  const std::string_view key = "Kernel = ";
  const size_t begin = f.find(key) + key.size();
  size_t end = f.find_first_of(";]", begin);
  return std::string(f.substr(begin, end - begin));
}

// Every instantiation of launch<Kernel> registers Kernel before main: the registry lists what
// the host code can launch, whether or not a test launches it.
template <auto Kernel>
struct Registered {
  static inline KernelRecord* const record = register_kernel(kernel_name<Kernel>());
};

// Runs `body(ctx)` as every thread of every block of the grid (checks the launch configuration
// as the CUDA runtime would first, with `max_threads` the kernel's __launch_bounds__, and raises
// on any error the simulator detects).
void run_grid(KernelRecord& kernel, const void* kernel_id, unsigned max_threads, dim3 grid,
              dim3 block, size_t smem, void (*body)(void*), void* ctx);

// The largest dynamic shared memory a launch of this kernel may use (cudaFuncSetAttribute).
int set_max_dynamic_smem(const void* kernel_id, int bytes);

template <typename F>
struct KernelParams;
template <typename... P>
struct KernelParams<void (*)(P...)> {
  using type = std::tuple<std::decay_t<P>...>;
};

// Kernel<<<grid, block, smem>>>(args...) for a kernel declared __launch_bounds__(max_threads).
template <auto Kernel, typename... Args>
void launch(unsigned max_threads, dim3 grid, dim3 block, size_t smem, Args... args) {
  // The arguments converted to the kernel's parameter types once, like CUDA's parameter
  // buffer; each thread then receives its own copy.
  using Params = typename KernelParams<decltype(Kernel)>::type;
  Params params(args...);
  auto body = [](void* p) { std::apply(Kernel, *static_cast<Params*>(p)); };
  run_grid(*Registered<Kernel>::record, reinterpret_cast<const void*>(Kernel), max_threads, grid,
           block, smem, body, &params);
}

}  // namespace cuda_sim
