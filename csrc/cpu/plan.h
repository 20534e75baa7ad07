#pragma once
// The CPU planner: which kernel, and which ISA copy of it, runs one pass of one depthwise
// convolution, and why. One enum of kernels, one rule table (plan.cpp), one place that says so;
// queried by the host code on every call and by Python (fastdw.explain) through module.cpp, the
// way torch._C._select_conv_backend exposes PyTorch's choice.
//
// Three ways to decide, in this order:
//   forced      FASTDW_CPU_KERNEL=<name> (or fastdw.planner.force): that kernel wherever it
//               applies; FASTDW_CPU_KERNEL=fastdw keeps the choice but never picks aten;
//               FASTDW_CPU_ISA=<isa> picks the ISA copy (lowered to what the CPU runs)
//   measured    with benchmark mode on (fastdw.backends.cpu.benchmark, FASTDW_CPU_BENCHMARK=1),
//               the first call of each new problem times every applicable kernel and keeps the
//               fastest for the process; plans loaded from a plan file (python -m fastdw tune)
//               apply whether benchmark mode is on or not
//   rules       otherwise: the first rule of the table that matches and applies
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/kernels.h"
#include "depthwise.h"

namespace fastdw {
namespace cpu {

// X(name, what it is). The names are what FASTDW_CPU_KERNEL, fastdw.explain and the benchmark
// rows use.
#define FASTDW_CPU_KERNELS(X)                                                                   \
  X(aten, "PyTorch's own convolution (at::convolution: oneDNN, or ATen's native kernels)")     \
  X(nchw_planes,                                                                                \
    "NCHW, any geometry: each plane copied once into a zero-padded, stride-phase-split "       \
    "buffer; blocks of rows x 16 or 32 columns in registers over all taps")                    \
  X(nhwc_pixels,                                                                                \
    "channels_last, any geometry: a pixel (or a tile of 4 pixels) at a time over its "         \
    "in-bounds taps, channels as vector lanes")                                                 \
  X(nhwc_tiles,                                                                                 \
    "channels_last forward, multiplier 1, square 3x3/5x5/7x7, stride 1 or 2, dilation 1: "     \
    "register tiles of 4 pixels x 4 16-channel blocks reading the input in place, multiply-adds " \
    "with memory operands")                                                                     \
  X(nhwc_windows,                                                                               \
    "the shapes of nhwc_tiles: sliding windows of 8 pixels x one 16-channel block, each input " \
    "vector loaded (and converted) once per kernel row")                                       \
  X(channel_blocks,                                                                             \
    "multiplier 1, float/bfloat16/float16, either layout: 16-channel blocks of input rows "    \
    "converted once to float into a ring with the padding materialised")

enum class Kernel : int {
#define FASTDW_KERNEL_ENUM(NAME, WHAT) NAME,
  FASTDW_CPU_KERNELS(FASTDW_KERNEL_ENUM)
#undef FASTDW_KERNEL_ENUM
};
constexpr int kKernelCount = 0
#define FASTDW_KERNEL_COUNT(NAME, WHAT) +1
    FASTDW_CPU_KERNELS(FASTDW_KERNEL_COUNT)
#undef FASTDW_KERNEL_COUNT
    ;

const char* kernel_name(Kernel k);
const char* kernel_description(Kernel k);
bool kernel_from_name(const std::string& name, Kernel* k);
bool isa_from_name(const std::string& name, Isa* isa);

enum class Pass : int { fwd, bwd_input, bwd_weight };
const char* pass_name(Pass pass);
bool pass_from_name(const std::string& name, Pass* pass);

// Everything a plan depends on. p.channels_last is the layout of the tensors the op was given.
struct Problem {
  DepthwiseParams p;
  Dtype dtype;
  Pass pass;
  bool weights_finite;  // forward and backward-input: no weight is Inf or NaN
  int threads;          // at::get_num_threads()
};

struct Plan {
  Kernel kernel;
  Isa isa;
  const char* source;  // "rules", "forced", "tuned", "plan file"
  const char* reason;  // the rule, or what was measured / forced
  const char* note;    // why a forced kernel or a cached plan did not apply, else ""
};

// Whether a kernel can run a problem: nullptr if it can, else why not.
const char* unsupported(Kernel k, const Problem& q);

// Whether kernel k multiplies by materialised zero padding on this problem: then a non-finite
// weight (forward, backward-input: a plan input, weights_finite) or grad_output (backward-weight:
// seen only in the result, which the host recomputes on nhwc_pixels when it is not finite) would
// give NaN where PyTorch leaves padded taps out.
bool materialises_padding(Kernel k, const Problem& q);

// The layout a kernel runs the problem in (a different one means copies in and out), and
// whether backward-input runs as the forward conv of grad_output with the flipped kernel.
bool runs_channels_last(Kernel k, const Problem& q);
bool runs_as_flipped_forward(Kernel k, const Problem& q);

// The forward conv that backward-input equals (stride 1, multiplier 1, padding <= dilation *
// (k - 1)): grad_output convolved with the flipped kernel, padded by dilation * (k - 1) - pad.
bool flipped_forward(const DepthwiseParams& p, DepthwiseParams* q);

// The plan for a problem. `run` executes the problem with a given kernel and ISA copy: benchmark
// mode times it on the first call of a new problem; pass an empty function to only ask.
using RunFn = std::function<void(Kernel, Isa)>;
Plan plan(const Problem& q, const RunFn& run);

// Overrides, benchmark mode and the plan cache (module.cpp exposes them to Python). Unknown
// names throw std::invalid_argument.
void set_forced_kernel(const std::string& name);  // "" clears; "fastdw": never aten
void set_forced_isa(const std::string& name);     // "" clears
std::string forced_kernel();
std::string forced_isa();
void set_benchmark(bool on);
bool benchmark();
Isa planned_isa();  // the forced ISA lowered to this CPU's, else the best it runs

struct CacheEntry {
  Problem problem;
  Isa isa;
  bool allow_aten;
  Kernel kernel;
  bool from_file;  // loaded from a plan file (applies with benchmark mode off too)
  double best_us;  // measured time of the kernel (0 if unknown)
};
std::vector<CacheEntry> cache_entries();
void cache_insert(const CacheEntry& e);
void cache_clear();

}  // namespace cpu
}  // namespace fastdw
