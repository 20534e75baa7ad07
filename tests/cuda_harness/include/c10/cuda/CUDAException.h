#pragma once
// Stand-in for c10's CUDAException.h in the CPU harness build. C10_CUDA_KERNEL_LAUNCH_CHECK is
// left undefined on purpose: a launch outside launch_kernel (csrc/cuda/common.cuh) would not run
// in the simulator, so it must not compile here.
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#define C10_CUDA_CHECK(EXPR)                                                        \
  do {                                                                              \
    const cudaError_t fastdw_sim_err_ = (EXPR);                                     \
    TORCH_CHECK(fastdw_sim_err_ == cudaSuccess, "CUDA error: ",                     \
                cudaGetErrorString(fastdw_sim_err_), " (", #EXPR, ")");             \
  } while (0)
