#pragma once
// Stand-in for c10's CUDAGuard.h in the CPU harness build: one simulated device, nothing to
// switch.
#include <c10/core/Device.h>

namespace c10 {
namespace cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

}  // namespace cuda
}  // namespace c10
