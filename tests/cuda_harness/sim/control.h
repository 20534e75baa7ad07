#pragma once
// Settings and counters of the CUDA simulator, for the harness's bindings (the kernels never
// see this header).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cuda_sim {

// The order in which the simulator runs the threads of a block between barriers and warp
// collectives, and the blocks of a grid.
enum class Order { kForward, kReverse };

struct Settings {
  Order order = Order::kForward;
  // Every byte of a block's dynamic shared memory before it starts (0xff: NaN in every
  // floating type; 0x41: finite in every floating type).
  uint8_t shared_poison = 0xff;
};

void configure(const Settings& s);
Settings settings();

// (kernel name, launches since the last reset) for every kernel the host code can launch.
std::vector<std::pair<std::string, int64_t>> kernel_launches();
void reset_launch_counts();

}  // namespace cuda_sim
