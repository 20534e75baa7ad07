// The multiply-add rate of calibrate.h: calibrate.inc for every ISA copy, run on ATen's pool.
#include "cpu/calibrate.h"
#define FASTDW_KERNEL_FILE "cpu/calibrate.inc"
#include "cpu/per_isa.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>

namespace fastdw {
namespace cpu {

double fma_rate(Isa isa, double seconds) {
  using Fn = float (*)(int64_t, int64_t*);
  static const Fn copies[kIsaCount] = {
#define FASTDW_FMA_CHAINS_ADDRESS(ISA, NEEDS) &ISA::fma_chains,
      FASTDW_CPU_ISAS(FASTDW_FMA_CHAINS_ADDRESS)
#undef FASTDW_FMA_CHAINS_ADDRESS
  };
  const Fn fn = copies[int(isa)];
  const int threads = at::get_num_threads();
  constexpr int kRuns = 5;
  std::atomic<float> sink{0};
  // Size the runs from a short single-thread one: each parallel run lasts about seconds / kRuns.
  int64_t fmas = 0;
  auto t0 = std::chrono::steady_clock::now();
  sink.store(fn(1 << 14, &fmas));
  const double per_iteration =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / (1 << 14);
  const int64_t iterations =
      std::max<int64_t>(1 << 10, int64_t(seconds / kRuns / std::max(per_iteration, 1e-12)));
  double best = 0;
  for (int run = 0; run < kRuns; ++run) {
    std::atomic<int64_t> total{0};
    t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int64_t done = 0;
        sink.store(fn(iterations, &done), std::memory_order_relaxed);
        total += done;
      }
    });
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(total.load()) / t);
  }
  return best;
}

}  // namespace cpu
}  // namespace fastdw
