#pragma once
// Stand-in for the CUDA toolkit's cuda_runtime.h in the CPU harness build: the types and calls
// csrc/cuda's host code uses, answered by the simulator (../sim/cuda_sim.h).
#include <cstddef>

#include "../sim/cuda_sim.h"

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct CUstream_st;
using cudaStream_t = CUstream_st*;

// The fields the host code reads (an H200's values).
struct cudaDeviceProp {
  size_t sharedMemPerBlock = cuda_sim::kSharedMemPerBlock;
  size_t sharedMemPerBlockOptin = cuda_sim::kSharedMemPerBlockOptin;
  int multiProcessorCount = 132;
  int maxThreadsPerBlock = 1024;
  int warpSize = 32;
};

template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return cuda_sim::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value) == 0
             ? cudaSuccess
             : cudaErrorInvalidValue;
}

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "invalid argument";
}
