#pragma once
// Run-time choice of the CPU instruction set for the kernels.
//
// The kernel families are compiled several times from the same source (*.inc): for baseline
// x86-64, with __attribute__((target("avx2,fma,f16c"))) on every function, and (the channel-blocked
// family, blocked.cpp) with an AVX-512 target as well. Only those functions carry the wider
// instructions, so the module never executes one on a CPU that lacks it (unlike a global
// -mavx2/-march=native, which also leaks into inline library code); the choice is made once, at
// run time, from what the CPU reports. On an AVX-512 CPU the families without an AVX-512 build
// run their AVX2 build. Override with FASTDW_CPU_ISA=generic|avx2|avx512 (read once, at first
// use; a request above what the CPU supports is lowered to what it supports).
#include <cstdlib>
#include <cstring>

namespace fastdw {
namespace cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

inline bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

inline bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

inline Isa select_isa() {
  const Isa best = cpu_has_avx512() ? Isa::kAvx512 : cpu_has_avx2() ? Isa::kAvx2 : Isa::kGeneric;
  const char* env = std::getenv("FASTDW_CPU_ISA");
  if (env && std::strcmp(env, "generic") == 0) return Isa::kGeneric;
  if (env && std::strcmp(env, "avx2") == 0 && best == Isa::kAvx512) return Isa::kAvx2;
  return best;
}

inline Isa active_isa() {
  static const Isa isa = select_isa();
  return isa;
}

inline const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "generic";
}

}  // namespace cpu
}  // namespace fastdw

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTDW_HAVE_AVX2_BUILD 1
#define FASTDW_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FASTDW_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#else
#define FASTDW_HAVE_AVX2_BUILD 0
#define FASTDW_TARGET_AVX2
#define FASTDW_TARGET_AVX512
#endif
