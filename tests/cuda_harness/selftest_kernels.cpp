// Small kernels that exercise the simulator itself (test_simulator.py): warp shuffles and votes,
// barrier reductions, and kernels with the bugs it must catch (divergent barriers, races,
// unwritten or out-of-bounds shared memory). Launched through csrc/cuda's launch_kernel, the
// path every fastdw kernel takes.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <functional>
#include <map>

#include "cuda/common.cuh"

namespace cuda_sim_selftest {

using fastdw::cuda::launch_kernel;
using fastdw::cuda::smem_as;

// out[t][0..9]: lane l's results of each warp intrinsic, with v = 100 + t.
__global__ void warp_intrinsics(float* out) {
  const int t = threadIdx.x, lane = t & 31;
  const float v = 100.0f + t;
  float* o = out + t * 10;
  o[0] = __shfl_down_sync(0xffffffffu, v, 3);
  o[1] = __shfl_up_sync(0xffffffffu, v, 5);
  o[2] = __shfl_xor_sync(0xffffffffu, v, 6);
  o[3] = __shfl_sync(0xffffffffu, v, 7);
  o[4] = __shfl_down_sync(0xffffffffu, v, 2, 8);
  o[5] = static_cast<float>(__ballot_sync(0xffffffffu, lane % 3 == 0) & 0xffffu);
  o[6] = static_cast<float>(__any_sync(0xffffffffu, lane == 31 && t >= 32));
  o[7] = static_cast<float>(__all_sync(0xffffffffu, lane < 31));
  // Only the low half of each warp: the lanes outside the mask do not take part.
  o[8] = lane < 16 ? __shfl_down_sync(0x0000ffffu, v, 1, 16) : -1.0f;
  __syncwarp();
  o[9] = static_cast<float>(__syncthreads_count(t % 4 == 0) + 1000 * __syncthreads_or(t == 5) +
                            10000 * __syncthreads_and(t < 1000));
}

// Each thread writes its slot, then reads its neighbour's: a barrier between the two is what
// makes the read see the write.
template <bool kBarrier>
__global__ void neighbour_exchange(float* out) {
  float* s = smem_as<float>();
  const int t = threadIdx.x;
  s[t] = static_cast<float>(t);
  if (kBarrier) __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

// Reads a shared slot no thread writes: slot blockDim.x of blockDim.x + 1.
__global__ void unwritten_shared_read(float* out) {
  float* s = smem_as<float>();
  const int t = threadIdx.x;
  s[t] = 1.0f;
  __syncthreads();
  out[t] = s[t] + s[blockDim.x];
}

// Reads one element past the launch's shared memory (blockDim.x floats).
__global__ void shared_out_of_bounds(float* out) {
  float* s = smem_as<float>();
  const int t = threadIdx.x;
  s[t] = 1.0f;
  __syncthreads();
  out[t] = s[t + 1];
}

// Reads one element past the end of the output tensor's storage (a global overflow).
__global__ void global_out_of_bounds(float* out) {
  out[threadIdx.x] = out[threadIdx.x + blockDim.x];
}

// Threads of the first half exit before the barrier the others wait at.
__global__ void early_exit_before_barrier(float* out) {
  if (threadIdx.x < blockDim.x / 2) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Two halves of the block wait at two different barriers.
__global__ void divergent_barriers(float* out) {
  if (threadIdx.x < blockDim.x / 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// A full-mask shuffle in a block whose last warp is partial (or whose lanes exited).
__global__ void shuffle_partial_warp(float* out) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

__global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x % 32 == 7) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

__global__ void noop(float*) {}

using Launch = std::function<void(float* out, int threads, int smem)>;

template <auto Kernel>
Launch one_block() {
  return [](float* out, int threads, int smem) {
    launch_kernel<Kernel>(1, threads, smem, nullptr, out);
  };
}

const std::map<std::string, Launch>& kernels() {
  static const std::map<std::string, Launch> k = {
      {"warp_intrinsics", one_block<warp_intrinsics>()},
      {"neighbour_exchange", one_block<neighbour_exchange<true>>()},
      {"neighbour_exchange_no_barrier", one_block<neighbour_exchange<false>>()},
      {"unwritten_shared_read", one_block<unwritten_shared_read>()},
      {"shared_out_of_bounds", one_block<shared_out_of_bounds>()},
      {"global_out_of_bounds", one_block<global_out_of_bounds>()},
      {"early_exit_before_barrier", one_block<early_exit_before_barrier>()},
      {"divergent_barriers", one_block<divergent_barriers>()},
      {"shuffle_partial_warp", one_block<shuffle_partial_warp>()},
      {"shuffle_after_exit", one_block<shuffle_after_exit>()},
      {"noop", one_block<noop>()},
      {"noop_empty_grid",
       [](float* out, int threads, int smem) {
         launch_kernel<noop>(0, threads, smem, nullptr, out);
       }},
  };
  return k;
}

}  // namespace cuda_sim_selftest

namespace {

void selftest(c10::string_view name, const at::Tensor& out, int64_t threads, int64_t smem) {
  const auto& k = cuda_sim_selftest::kernels();
  auto it = k.find(std::string(name));
  TORCH_CHECK(it != k.end(), "cuda_sim: no self-test kernel ", name);
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(),
              "cuda_sim: out must be a contiguous float32 tensor");
  it->second(out.data_ptr<float>(), static_cast<int>(threads), static_cast<int>(smem));
}

}  // namespace

// torch.ops.fastdw_cudasim.selftest(name, out, threads, smem=0): launches self-test kernel
// `name` as one block of `threads` threads with `smem` bytes of dynamic shared memory. An op,
// not a pybind function: this file then needs torch/library.h only, not torch/extension.h
// (which alone took most of this file's compile time under the sanitizers).
TORCH_LIBRARY_FRAGMENT(fastdw_cudasim, m) {
  m.def("selftest(str name, Tensor(a!) out, int threads, int smem=0) -> ()", &selftest);
}
