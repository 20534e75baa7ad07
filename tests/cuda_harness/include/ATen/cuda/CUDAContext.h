#pragma once
// Stand-in for ATen's CUDAContext.h in the CPU harness build: the current stream (a null handle:
// the simulator runs each launch to completion) and the device properties.
#include <cuda_runtime.h>

namespace at {
namespace cuda {

struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(int = -1) { return {}; }

inline cudaDeviceProp* getCurrentDeviceProperties() {
  static cudaDeviceProp props;
  return &props;
}

}  // namespace cuda
}  // namespace at
