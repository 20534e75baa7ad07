#pragma once
// The instruction-set copies of the CPU kernels. Every kernel file is compiled once per entry of
// FASTDW_CPU_ISAS from the same source (per_isa.h), each copy's functions carrying only their own
// target attribute: the module never executes an instruction the CPU lacks (unlike a global
// -mavx2 or -march=native, which also leaks into inline library code), and the planner picks a
// copy at run time (plan.h).
//
// X(name, what the CPU must report); narrowest first. The target attribute of copy NAME is
// FASTDW_TARGET_NAME (below), the test for it isa_supported().
#define FASTDW_CPU_ISAS(X)                  \
  X(generic, "baseline x86-64 (SSE2)")      \
  X(avx2, "AVX2, FMA, F16C")                \
  X(avx512, "AVX-512 F/BW/VL/DQ, AVX2, FMA, F16C")     \
  X(avx512_bf16, "AVX-512 F/BW/VL/DQ and AVX512_BF16, AVX2, FMA, F16C")

namespace fastdw {
namespace cpu {

enum class Isa : int {
#define FASTDW_ISA_ENUM(NAME, NEEDS) NAME,
  FASTDW_CPU_ISAS(FASTDW_ISA_ENUM)
#undef FASTDW_ISA_ENUM
};

constexpr int kIsaCount = 0
#define FASTDW_ISA_COUNT(NAME, NEEDS) +1
    FASTDW_CPU_ISAS(FASTDW_ISA_COUNT)
#undef FASTDW_ISA_COUNT
    ;

inline const char* isa_name(Isa isa) {
  switch (isa) {
#define FASTDW_ISA_NAME(NAME, NEEDS) \
  case Isa::NAME:                            \
    return #NAME;
    FASTDW_CPU_ISAS(FASTDW_ISA_NAME)
#undef FASTDW_ISA_NAME
  }
  return "?";
}

// Whether this CPU can run the copy (what CPUID reports, asked through the compiler's builtin).
inline bool isa_supported(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  switch (isa) {
    case Isa::generic: return true;
    case Isa::avx2: return avx2;
    case Isa::avx512:
    case Isa::avx512_bf16:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             (isa == Isa::avx512 || __builtin_cpu_supports("avx512bf16"));
  }
  return false;
#else
  return isa == Isa::generic;
#endif
}

// The widest copy this CPU runs (the copies are listed narrowest first).
inline Isa best_isa() {
  Isa best = Isa::generic;
  for (int i = 0; i < kIsaCount; ++i)
    if (isa_supported(Isa(i))) best = Isa(i);
  return best;
}

}  // namespace cpu
}  // namespace fastdw

// The target attribute of each copy (FASTDW_TARGET_<name>); empty where the compiler cannot
// target x86 extensions, so that only the generic copy is meaningful there.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTDW_TARGET_generic
#define FASTDW_TARGET_avx2 __attribute__((target("avx2,fma,f16c")))
#define FASTDW_TARGET_avx512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define FASTDW_TARGET_avx512_bf16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
#define FASTDW_X86 1
#else
#define FASTDW_TARGET_generic
#define FASTDW_TARGET_avx2
#define FASTDW_TARGET_avx512
#define FASTDW_TARGET_avx512_bf16
#define FASTDW_X86 0
#endif
