#pragma once
// Calibration for the benchmark's roofline: the machine's float32 multiply-add rate, measured
// with the same ISA copy and thread pool the kernels use (module.cpp exposes it to Python).
#include <cstdint>

#include "cpu/isa.h"

namespace fastdw {
namespace cpu {

// float32 multiply-adds per second on every thread of ATen's pool: the best of a few runs of
// independent vector multiply-add chains, about `seconds` in all.
double fma_rate(Isa isa, double seconds);

// Per ISA copy: `iterations` rounds of independent multiply-add chains; returns their result (so
// the work is not optimised away) and the multiply-adds done in *fmas.
#define FASTDW_DECLARE_FMA_CHAINS(ISA, NEEDS) \
  namespace ISA {                             \
  FASTDW_TARGET_##ISA float fma_chains(int64_t iterations, int64_t* fmas); \
  }
FASTDW_CPU_ISAS(FASTDW_DECLARE_FMA_CHAINS)
#undef FASTDW_DECLARE_FMA_CHAINS

}  // namespace cpu
}  // namespace fastdw
