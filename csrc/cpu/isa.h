#pragma once
// Run-time choice of the CPU instruction set for the kernels.
//
// The kernel families are compiled twice from the same source (*.inc): once for baseline x86-64
// and once with __attribute__((target("avx2,fma,f16c"))) on every function. Only those functions carry
// AVX2 code, so the module never executes an AVX2 instruction on a CPU that lacks it (unlike a
// global -mavx2/-march=native, which also leaks into inline library code). Override with
// FASTDW_CPU_ISA=generic|avx2 (read once, at first use).
#include <cstdlib>
#include <cstring>

namespace fastdw {
namespace cpu {

enum class Isa { kGeneric, kAvx2 };

inline bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

inline Isa select_isa() {
  const char* env = std::getenv("FASTDW_CPU_ISA");
  if (env && std::strcmp(env, "generic") == 0) return Isa::kGeneric;
  return cpu_has_avx2() ? Isa::kAvx2 : Isa::kGeneric;
}

inline Isa active_isa() {
  static const Isa isa = select_isa();
  return isa;
}

inline const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "generic"; }

}  // namespace cpu
}  // namespace fastdw

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTDW_HAVE_AVX2_BUILD 1
#define FASTDW_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define FASTDW_HAVE_AVX2_BUILD 0
#define FASTDW_TARGET_AVX2
#endif
