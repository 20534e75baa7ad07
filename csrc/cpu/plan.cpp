// The CPU planner (plan.h): the rule table, what each kernel can run, the overrides, benchmark
// mode and its cache.
#include "cpu/plan.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace fastdw {
namespace cpu {
namespace {

bool has_padding(const DepthwiseParams& p) { return p.pad_h > 0 || p.pad_w > 0; }
int64_t out_plane(const DepthwiseParams& p) { return p.out_h * p.out_w; }
bool half_type(Dtype d) { return d == Dtype::kBFloat16 || d == Dtype::kHalf; }

// The NCHW kernels copy each plane into a padded, stride-phase-split buffer. For ordinary
// convolutions that buffer is about the size of the plane; for pathological geometry (padding
// far beyond the input, a stride far beyond the width) it would be enormous.
bool planes_fit(const DepthwiseParams& p) {
  const double rows = double(p.in_h) + 2.0 * double(p.pad_h);
  const double phases = double(p.stride_w);
  const double segment = std::ceil((double(p.in_w) + 2.0 * double(p.pad_w)) / phases) + 32.0;
  const double buffer = rows * phases * segment;
  const double planes = double(p.in_h) * double(p.in_w) + double(p.out_h) * double(p.out_w);
  return buffer <= 4.0 * planes + 65536.0;
}

// Whether an item's ring of converted rows is of reasonable size (pathological padding or
// dilation makes it huge).
bool blocks_fit(const DepthwiseParams& p) {
  const double ring_rows = double(p.kernel_h - 1) * double(p.dilation_h) + 1.0;
  const double padded_w = double(p.out_w - 1) * double(p.stride_w) +
                          double(p.kernel_w - 1) * double(p.dilation_w) + 1.0;
  const double floats = ring_rows * padded_w * kLanes;
  const double plane = double(p.in_h) * double(p.in_w) + double(p.out_h) * double(p.out_w);
  return floats <= std::max(4.0 * plane * kLanes, double(1 << 20));
}

// The shapes the in-place channels_last tiles are compiled for (FASTDW_SQUARE_SIZES x
// FASTDW_STRIDES, dilation 1, multiplier 1).
bool tiles_fit(const DepthwiseParams& p) {
  bool size = false, stride = false;
#define FASTDW_IS_SIZE(K) size = size || p.kernel_h == K;
#define FASTDW_IS_STRIDE(S) stride = stride || p.stride_h == S;
  FASTDW_SQUARE_SIZES(FASTDW_IS_SIZE)
  FASTDW_STRIDES(FASTDW_IS_STRIDE)
#undef FASTDW_IS_SIZE
#undef FASTDW_IS_STRIDE
  return p.multiplier == 1 && p.kernel_h == p.kernel_w && p.stride_h == p.stride_w &&
         p.dilation_h == 1 && p.dilation_w == 1 && size && stride;
}

constexpr const char* kMaterialisesPadding =
    "multiplies the weights by materialised zero padding: with an Inf or NaN weight that would "
    "give NaN where PyTorch has no contribution";

// ---- the rule table --------------------------------------------------------------------------
// Rules are tried in order; the first whose condition holds and whose kernel applies
// (unsupported() == nullptr) decides. The last rule of each pass always applies. Ratios are
// in-process A/B medians (bench/cpu_routes_ab.py) on the MobileNetV2, EfficientNet-B0 and
// ConvNeXt-T depthwise layers at N = 1 and 8 on 2-vCPU machines: an Intel Xeon (Emerald Rapids,
// bench/results/cpu-intel-xeon-emerald-rapids-2core_2026-1*_routes_*), an AMD EPYC Zen 5
// (bench/results/cpu-amd-epyc-zen5-2core_2026-12-01_routes_*) and an AMD EPYC Zen 4
// (bench/results/cpu-amd-epyc-zen4-2core_2026-12-02_routes_*; the rules were first derived on
// that CPU from runs whose output was not kept, with older kernels). Where the Zen 4 disagrees
// with the Intel (the float32 channels_last forward with 5x5 and 7x7 kernels, the NCHW weight
// gradient; the float16 channels_last forward, measured in bfloat16 with older kernels) the rule
// keys on zen4(); where the Zen 4 and the Zen 5 agree against the Intel (the NCHW forward) on
// zen4() || zen5(); every other CPU takes the Intel choice. The CPU is read at run time (CPUID)
// where the compiler offers it, GCC or clang on x86-64; built elsewhere, no rule is CPU-keyed.
// On a CPU that is none of them, tune (benchmark mode, python -m fastdw tune) rather than trust
// them.
struct Rule {
  Pass pass;
  Kernel kernel;
  bool (*when)(const Problem&);
  const char* why;
};

bool cl(const Problem& q) { return q.p.channels_last; }
bool always(const Problem&) { return true; }
// An AMD CPU's family (CPUID leaf 1: base plus extended family; 0x19 = Zen 3 and Zen 4,
// 0x1a = Zen 5) and whether it runs AVX-512; family 0 on any other vendor.
struct AmdCpu {
  unsigned family = 0;
  bool avx512 = false;
};

const AmdCpu& amd_cpu() {
  static const AmdCpu cpu = [] {
    AmdCpu found;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__builtin_cpu_is("amd") && __get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
      const unsigned base = (eax >> 8) & 0xf, extended = (eax >> 20) & 0xff;
      found.family = base + (base == 0xf ? extended : 0);
      found.avx512 = __builtin_cpu_supports("avx512f") != 0;
    }
#endif
    return found;
  }();
  return cpu;
}

// The CPUs whose measurements disagreed with the others', so rules key on them: the Zen 4
// (family 19h with AVX-512; the Zen 3 shares the family without it) and the Zen 5 (family 1Ah;
// a later core of that family would take its rule unmeasured). They key on the CPU, not on the
// ISA copy a forced FASTDW_CPU_ISA picks.
bool zen4(const Problem&) { return amd_cpu().family == 0x19 && amd_cpu().avx512; }
bool zen5(const Problem&) { return amd_cpu().family == 0x1a; }

// Where one block in sliding windows (nhwc_windows) goes before the 4 x 4 tiles (nhwc_tiles) of
// the in-place forward: float16 (each input vector converted once per kernel row; never
// measured: the bfloat16 figures it was chosen on predate the channel-pair tiles), and on the
// Zen 4 float32 5x5 and 7x7 kernels at stride 1 with >= 64 channels on rows of >= 14 outputs
// (2026-12-02: the windows ahead of the tiles on 8 of those 12 layers; on the 10 such 3x3 ones
// the tiles ahead of them on 9).
bool windows_first(const Problem& q) {
  return q.dtype == Dtype::kHalf ||
         (zen4(q) && q.dtype == Dtype::kFloat && q.p.stride_w == 1 && q.p.taps() >= 25 &&
          q.p.in_channels >= 64 && q.p.out_w >= 14);
}

const Rule kRules[] = {
    // ---- forward
    {Pass::fwd, Kernel::nhwc_windows,
     [](const Problem& q) { return cl(q) && q.dtype == Dtype::kFloat && windows_first(q); },
     "Zen 4, channels_last float32, 5x5 and 7x7 kernels at stride 1, >= 64 channels, rows of "
     ">= 14: the in-place sliding windows (Zen 4: 1.05-1.5x over nhwc_tiles on 8 of these 12 "
     "layers, the fastest kernel on 7; on 3x3 kernels the tiles ahead of them on 9 of 10; Emerald "
     "Rapids: 0.7-0.95x; Zen 5: the tiles fastest on 32 of 44 layers, windows on 10 by "
     "1.01-1.17x, hence Zen 4 only)"},
    {Pass::fwd, Kernel::nhwc_tiles,
     [](const Problem& q) { return cl(q) && q.dtype == Dtype::kFloat; },
     "channels_last float32: the in-place tiles (Zen 4: the fastest kernel on 26 of 44 layers, "
     "windows on 10, nhwc_pixels on 7; Emerald Rapids: the fastest kernel on 40 of 44 "
     "layers, 1.05-1.6x over nhwc_windows; Zen 5: on 32 of 44)"},
    {Pass::fwd, Kernel::nhwc_tiles,
     [](const Problem& q) { return cl(q) && q.dtype == Dtype::kBFloat16; },
     "channels_last bfloat16: the in-place tiles, reading channel pairs (Emerald Rapids: "
     "1.26-2.5x of PyTorch, 1.03-1.9x over the next of fastdw's kernels on 42 of 44 layers, "
     "0.8x and 0.99x of channel_blocks on 96@56 7x7 N=8 and 240@28 5x5 N=1; Zen 5: the "
     "fastest on 36 of 44; Zen 4: on 29 of 44, channel_blocks on 9 (one by 0.2%), nhwc_windows "
     "on 6)"},
    {Pass::fwd, Kernel::nhwc_windows,
     [](const Problem& q) {
       return cl(q) && half_type(q.dtype) &&
              (zen4(q) ? q.p.batch * out_plane(q.p) < 8 * 14 * 14 : q.p.stride_w >= 2);
     },
     "channels_last float16 (bfloat16 takes the tiles above): on the Zen 4 small layers (N * "
     "output plane < 8 * 14 * 14), elsewhere stride >= 2: the in-place sliding windows (measured "
     "in bfloat16 before the channel-pair tiles, Zen 4 and Emerald Rapids: 1.0-1.3x over "
     "channel_blocks; float16 never measured)"},
    {Pass::fwd, Kernel::channel_blocks,
     [](const Problem& q) {
       return cl(q) && (q.p.taps() >= 25 || (half_type(q.dtype) && q.p.stride_w == 1));
     },
     "channels_last, 5x5 taps and more, or float16 with stride 1: rows converted once (Zen 4: "
     "1.0-1.4x over nhwc_pixels; Emerald Rapids bfloat16 stride 1, before the channel-pair "
     "tiles: the fastest of fastdw's kernels on 25 of 30 layers, up to 1.4x over nhwc_windows; "
     "float16 never measured)"},
    {Pass::fwd, Kernel::channel_blocks,
     [](const Problem& q) { return !cl(q) && q.p.stride_w >= 2; },
     "NCHW, stride >= 2: channel blocks (Emerald Rapids: 1.3-6x over nchw_planes, 56x56 output "
     "planes included; Zen 5: 1.7-5x; Zen 4: 1.2-3.4x)"},
    {Pass::fwd, Kernel::channel_blocks,
     [](const Problem& q) { return !cl(q) && q.p.taps() >= 25; },
     "NCHW 5x5 and 7x7 kernels (Emerald Rapids 5x5 on 14x14 and 28x28 planes: 1.1-1.4x over "
     "nchw_planes)"},
    {Pass::fwd, Kernel::channel_blocks,
     [](const Problem& q) {
       return !cl(q) && out_plane(q.p) <= 7 * 7 && q.p.batch * q.p.in_channels >= 4096;
     },
     "NCHW 7x7 planes and smaller with N * C >= 4096 (Zen 4, older kernels: 1.1-1.7x over "
     "nchw_planes)"},
    {Pass::fwd, Kernel::channel_blocks,
     [](const Problem& q) { return (zen4(q) || zen5(q)) && !cl(q); },
     "Zen 4 and Zen 5, NCHW: channel blocks (Zen 5: the fastest of the two on 40 of 44 layers, "
     "3x3 stride 1 included: 1.1-1.8x over nchw_planes; 0.8-0.9x on 192@28 3x3 at N = 1 and 8 "
     "and on 32@112 3x3 at N = 1, 0.98x on 480@14 5x5 at N = 8; Zen 4: on 39 of 44 in float32, "
     "nchw_planes 1.01-1.22x ahead on the other 5; 42 of 44 in bfloat16)"},
    {Pass::fwd, Kernel::nchw_planes, [](const Problem& q) { return !cl(q); },
     "NCHW: padded, stride-phase-split planes"},
    {Pass::fwd, Kernel::nhwc_windows, windows_first,
     "the in-place windows visit in-bounds taps only (the NCHW kernels do not apply: non-finite "
     "weights over padding, or padding far beyond the plane)"},
    {Pass::fwd, Kernel::nhwc_tiles, always,
     "the in-place tiles visit in-bounds taps only (the NCHW kernels do not apply: non-finite "
     "weights over padding, or padding far beyond the plane)"},
    {Pass::fwd, Kernel::nhwc_pixels, always, "any geometry: per-pixel channels_last kernel"},

    // ---- backward-input (stride 1, multiplier 1: see flipped_forward in plan())
    {Pass::bwd_input, Kernel::nhwc_pixels,
     [](const Problem& q) {
       return !cl(q) && q.p.stride_h * q.p.stride_w > 1 &&
              out_plane(q.p) <= (stride2_undilated(q.p) ? 7 * 7 : 28 * 28);
     },
     "NCHW strided: output planes up to 7x7 at stride 2 (dilation 1), up to 28x28 otherwise: "
     "the channels_last gather between two layout copies (Emerald Rapids, stride 2 on 7x7 "
     "planes: 1.1-1.5x over nchw_planes' interleaved phases on 3 of 4 layers, 0.89x on the "
     "fourth; on larger planes 0.3-0.7x; Zen 4, before those: 2-4x over the phase gather that "
     "other strides still take; Zen 4, 2026-12-02, on its two 7x7-plane layers: nchw_planes "
     "1.3-1.9x ahead at N = 1, nhwc_pixels 1.0-1.4x at N = 8)"},
    {Pass::bwd_input, Kernel::nchw_planes, [](const Problem& q) { return !cl(q); },
     "NCHW: phase-split planes (a plain conv with the flipped kernel when the stride is 1)"},
    {Pass::bwd_input, Kernel::nhwc_pixels, always,
     "channels_last gather over in-bounds taps (any geometry, any weights)"},

    // ---- backward-weight
    {Pass::bwd_weight, Kernel::nhwc_pixels, cl,
     "channels_last: per-row-chunk partial sums (Emerald Rapids: 1.1-1.9x over channel_blocks "
     "on 40 of 44 float32 layers, 1.1-1.5x in bfloat16; Zen 5: 1.05-2.2x on 40 of 44; Zen 4: "
     "the fastest on 39 of 44)"},
    {Pass::bwd_weight, Kernel::channel_blocks,
     [](const Problem& q) {
       return q.p.stride_h * q.p.stride_w > 1 || q.p.taps() >= 25 ||
              (out_plane(q.p) <= 7 * 7 && q.p.batch * q.p.in_channels >= 4096);
     },
     "NCHW with stride >= 2, 5x5 taps and more, or 7x7 planes with N * C >= 4096 (Zen 4, "
     "2026-12-02: 1.05-3.6x over nchw_planes on 25 of these 30 layers, nchw_planes 1.02-1.16x "
     "ahead on the other 5: 96@112 3x3 stride 2 and 240@28 5x5 at N = 1 and 8, 192@28 7x7 at "
     "N = 1)"},
    {Pass::bwd_weight, Kernel::channel_blocks,
     [](const Problem& q) {
       return !zen4(q) && !cl(q) && out_plane(q.p) <= 14 * 14 &&
              (out_plane(q.p) <= 7 * 7 || q.p.batch * q.p.in_channels >= 2048);
     },
     "NCHW, not the Zen 4: 7x7 planes, and 14x14 planes with N * C >= 2048 (Emerald Rapids: "
     "1.2-1.4x over nchw_planes; on 14x14 planes at N = 1 and on 28x28 planes 0.7-0.9x; Zen 5: "
     "the same split, 1.1-1.35x, 0.92x on 1152@7 at N = 1; Zen 4: nchw_planes 1.2-1.3x ahead "
     "on those 14x14 planes at N = 8 and 7x7 planes at N = 1)"},
    {Pass::bwd_weight, Kernel::nchw_planes, [](const Problem& q) { return !cl(q); },
     "NCHW: register tap groups over padded planes (Zen 4, 2026-12-02: channel_blocks runs at "
     "0.58-0.86x of nchw_planes' speed on 14 of the 16 3x3 stride-1 layers; it is ahead on "
     "960@7 and 1152@7 at N = 8, which the rules above route)"},
    {Pass::bwd_weight, Kernel::nhwc_pixels, always,
     "channels_last per-row-chunk partial sums (any geometry)"},
};

// ---- overrides and benchmark mode ---------------------------------------------------------

constexpr int kNoKernel = -1, kOwnKernels = -2, kNoIsa = -1;

int env_kernel() {
  const char* env = std::getenv("FASTDW_CPU_KERNEL");
  if (!env || !*env) return kNoKernel;
  if (std::strcmp(env, "fastdw") == 0) return kOwnKernels;
  Kernel k;
  if (!kernel_from_name(env, &k))
    throw std::invalid_argument(std::string("fastdw: FASTDW_CPU_KERNEL=") + env +
                                " names no CPU kernel");
  return int(k);
}
// "generic, avx2, ...": the ISA copies, for messages.
std::string isa_names() {
  std::string names;
  for (int i = 0; i < kIsaCount; ++i) names += (i ? ", " : "") + std::string(isa_name(Isa(i)));
  return names;
}

int env_isa() {
  const char* env = std::getenv("FASTDW_CPU_ISA");
  Isa isa;
  if (!env || !*env) return kNoIsa;
  if (!isa_from_name(env, &isa))
    throw std::invalid_argument(std::string("fastdw: FASTDW_CPU_ISA=") + env +
                                " names no ISA copy (" + isa_names() + ")");
  return int(isa);
}

// Read once, at first use: never a getenv per call.
std::atomic<int>& forced_kernel_state() {
  static std::atomic<int> state{env_kernel()};
  return state;
}
std::atomic<int>& forced_isa_state() {
  static std::atomic<int> state{env_isa()};
  return state;
}
std::atomic<bool>& benchmark_state() {
  static std::atomic<bool> state{[] {
    const char* env = std::getenv("FASTDW_CPU_BENCHMARK");
    return env && std::strcmp(env, "1") == 0;
  }()};
  return state;
}

// ---- the cache -------------------------------------------------------------------------------

struct Key {
  int64_t v[20];
  bool operator==(const Key& o) const { return std::memcmp(v, o.v, sizeof(v)) == 0; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ uint64_t(x)) * 1099511628211ull;
    return size_t(h);
  }
};
Key key_of(const Problem& q, Isa isa, bool allow_aten) {
  const DepthwiseParams& p = q.p;
  return Key{{p.batch, p.in_channels, p.multiplier, p.in_h, p.in_w, p.kernel_h, p.kernel_w,
              p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w,
              p.channels_last, int64_t(q.dtype), int64_t(q.pass), q.weights_finite, q.threads,
              int64_t(isa), allow_aten}};
}

struct Cache {
  std::mutex mutex;
  std::unordered_map<Key, CacheEntry, KeyHash> entries;
};
Cache& cache() {
  static Cache c;
  return c;
}

// Noise-resistant timing on a shared machine: the minimum over rounds of the mean
// of a block of runs (load from elsewhere only ever adds time), candidates interleaved in rounds.
std::vector<double> time_candidates(const std::vector<Kernel>& kernels, Isa isa,
                                    const RunFn& run) {
  using clock = std::chrono::steady_clock;
  constexpr int kRounds = 3;
  constexpr double kBlockSeconds = 2e-3;
  std::vector<double> best(kernels.size(), 1e30);
  std::vector<int> reps(kernels.size(), 1);
  for (size_t i = 0; i < kernels.size(); ++i) {  // warm-up, and the size of a block
    const auto t0 = clock::now();
    run(kernels[i], isa);
    const double once = std::chrono::duration<double>(clock::now() - t0).count();
    reps[i] = std::clamp(int(kBlockSeconds / std::max(once, 1e-7)), 1, 100);
  }
  for (int r = 0; r < kRounds; ++r)
    for (size_t i = 0; i < kernels.size(); ++i) {
      const auto t0 = clock::now();
      for (int k = 0; k < reps[i]; ++k) run(kernels[i], isa);
      const double t = std::chrono::duration<double>(clock::now() - t0).count() / reps[i];
      best[i] = std::min(best[i], t);
    }
  return best;
}

Plan by_rules(const Problem& q, Isa isa, bool allow_aten, int forced) {
  if (forced >= 0) {
    const Kernel k = Kernel(forced);
    const char* why_not = unsupported(k, q);
    if (!why_not) return {k, isa, "forced", "FASTDW_CPU_KERNEL / fastdw.planner.force", ""};
    Plan plan = by_rules(q, isa, allow_aten, kNoKernel);
    plan.note = why_not;
    return plan;
  }
  if (q.pass == Pass::bwd_input) {
    DepthwiseParams fp;
    if (flipped_forward(q.p, &fp)) {
      Problem f = q;
      f.p = fp;
      f.pass = Pass::fwd;
      Plan plan = by_rules(f, isa, allow_aten, kNoKernel);
      if (plan.kernel != Kernel::aten && !unsupported(plan.kernel, q)) return plan;
    }
  }
  for (const Rule& rule : kRules) {
    if (rule.pass != q.pass || (rule.kernel == Kernel::aten && !allow_aten)) continue;
    if (rule.when(q) && !unsupported(rule.kernel, q)) return {rule.kernel, isa, "rules", rule.why, ""};
  }
  throw std::logic_error("fastdw: no CPU planner rule applies");  // the last rules always do
}

}  // namespace

// ---- names ---------------------------------------------------------------------------------

const char* kernel_name(Kernel k) {
  switch (k) {
#define FASTDW_KERNEL_NAME(NAME, WHAT) \
  case Kernel::NAME:                   \
    return #NAME;
    FASTDW_CPU_KERNELS(FASTDW_KERNEL_NAME)
#undef FASTDW_KERNEL_NAME
  }
  return "?";
}

const char* kernel_description(Kernel k) {
  switch (k) {
#define FASTDW_KERNEL_WHAT(NAME, WHAT) \
  case Kernel::NAME:                   \
    return WHAT;
    FASTDW_CPU_KERNELS(FASTDW_KERNEL_WHAT)
#undef FASTDW_KERNEL_WHAT
  }
  return "?";
}

bool kernel_from_name(const std::string& name, Kernel* k) {
  for (int i = 0; i < kKernelCount; ++i)
    if (name == kernel_name(Kernel(i))) return *k = Kernel(i), true;
  return false;
}

bool isa_from_name(const std::string& name, Isa* isa) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == isa_name(Isa(i))) return *isa = Isa(i), true;
  return false;
}

const char* pass_name(Pass pass) {
  return pass == Pass::fwd ? "fwd" : pass == Pass::bwd_input ? "bwd_input" : "bwd_weight";
}

bool pass_from_name(const std::string& name, Pass* pass) {
  for (Pass p : {Pass::fwd, Pass::bwd_input, Pass::bwd_weight})
    if (name == pass_name(p)) return *pass = p, true;
  return false;
}

// ---- what each kernel runs ---------------------------------------------------------------

bool flipped_forward(const DepthwiseParams& p, DepthwiseParams* q) {
  if (p.stride_h != 1 || p.stride_w != 1 || p.multiplier != 1) return false;
  const int64_t pad_h = p.dilation_h * (p.kernel_h - 1) - p.pad_h;
  const int64_t pad_w = p.dilation_w * (p.kernel_w - 1) - p.pad_w;
  if (pad_h < 0 || pad_w < 0) return false;
  *q = p;
  std::swap(q->in_h, q->out_h);
  std::swap(q->in_w, q->out_w);
  q->pad_h = pad_h;
  q->pad_w = pad_w;
  return true;
}

bool runs_channels_last(Kernel k, const Problem& q) {
  switch (k) {
    case Kernel::nchw_planes: return false;
    case Kernel::nhwc_pixels:
    case Kernel::nhwc_tiles:
    case Kernel::nhwc_windows: return true;
    case Kernel::aten:
    case Kernel::channel_blocks: return q.p.channels_last;
  }
  return q.p.channels_last;
}

bool forward_only(Kernel k) {
  return k == Kernel::nhwc_tiles || k == Kernel::nhwc_windows || k == Kernel::channel_blocks;
}

bool runs_as_flipped_forward(Kernel k, const Problem& q) {
  return q.pass == Pass::bwd_input && forward_only(k);
}

bool materialises_padding(Kernel k, const Problem& q) {
  DepthwiseParams f = q.p;
  if (runs_as_flipped_forward(k, q) && !flipped_forward(q.p, &f)) return false;
  const bool padded = has_padding(f);
  switch (k) {
    case Kernel::aten:
      // PyTorch's oneDNN path leaves padded taps out, its other paths (float64, some small
      // shapes) multiply them: counted as materialising, so non-finite weights never take it.
      return q.pass == Pass::bwd_input || padded;
    case Kernel::nchw_planes:
      // Backward-input pads grad_output (by dilation * (k - 1) - padding, or the phase gather's
      // margins) whatever the padding of the conv.
      return q.pass == Pass::bwd_input || padded;
    case Kernel::channel_blocks: return padded;
    default: return false;
  }
}

namespace {
// Whether PyTorch runs bfloat16/float16 convolutions on this CPU through oneDNN, asked from its
// own capability checks (torch.ops.mkldnn._is_mkldnn_bf16_supported / _fp16_supported). Where
// it does not (CPUs without AVX-512, e.g. Zen 3), its backward-input in those dtypes
// accumulates in them: 10-80 times fastdw's error bound (tests/test_planner_routes.py).
bool aten_half_via_onednn(Dtype dtype) {
  const auto ask = [](const char* op) {
    try {
      return c10::Dispatcher::singleton().findSchemaOrThrow(op, "").typed<bool()>().call();
    } catch (const c10::Error&) {
      return false;  // no such op in this build of PyTorch: assume the accurate path is absent
    }
  };
  static const bool bf16 = ask("mkldnn::_is_mkldnn_bf16_supported");
  static const bool fp16 = ask("mkldnn::_is_mkldnn_fp16_supported");
  return dtype == Dtype::kBFloat16 ? bf16 : dtype == Dtype::kHalf ? fp16 : true;
}
}  // namespace

const char* unsupported(Kernel k, const Problem& q) {
  const DepthwiseParams& p = q.p;
  const bool bwd_input = q.pass == Pass::bwd_input;
  // Backward-input on the kernels that only have a forward: the flipped forward conv.
  DepthwiseParams f = p;
  if (bwd_input && forward_only(k) && !flipped_forward(p, &f))
    return "has no backward-input of its own, and this one is no plain conv (stride 1, "
           "multiplier 1, padding <= dilation * (k - 1))";
  switch (k) {
    case Kernel::aten:
      if (q.pass == Pass::bwd_weight)
        return "not a candidate for backward-weight: its sums need not be the same bits for "
               "every thread count, and it is 1.5-25x slower there";
      if (!q.weights_finite && materialises_padding(k, q))
        return "PyTorch's non-oneDNN paths multiply non-finite weights by the zero padding";
      if (q.pass == Pass::bwd_input && !aten_half_via_onednn(q.dtype))
        return "PyTorch's bfloat16/float16 backward-input on this CPU (no oneDNN path for the "
               "dtype) accumulates in the dtype: beyond fastdw's error bound";
      return nullptr;
    case Kernel::nchw_planes:
      if (!planes_fit(p)) return "its padded plane buffer would be far larger than the planes";
      if (q.pass != Pass::bwd_weight && !q.weights_finite && materialises_padding(k, q))
        return kMaterialisesPadding;
      return nullptr;
    case Kernel::nhwc_pixels: return nullptr;
    case Kernel::nhwc_tiles:
    case Kernel::nhwc_windows:
      if (q.dtype == Dtype::kDouble) return "float32, bfloat16 and float16 only";
      if (q.pass == Pass::bwd_weight) return "forward (and flipped-forward backward-input) only";
      if (!tiles_fit(f)) return "multiplier 1, square 3x3/5x5/7x7, stride 1 or 2, dilation 1 only";
      return nullptr;
    case Kernel::channel_blocks:
      if (q.dtype == Dtype::kDouble) return "float32, bfloat16 and float16 only";
      if (p.multiplier != 1) return "multiplier 1 only";
      if (!blocks_fit(f)) return "its ring of padded rows would be far larger than the planes";
      if (q.pass != Pass::bwd_weight && !q.weights_finite && materialises_padding(k, q))
        return kMaterialisesPadding;
      return nullptr;
  }
  return "unknown kernel";
}

// ---- planning --------------------------------------------------------------------------------

Isa planned_isa() {
  const int forced = forced_isa_state().load();
  const Isa best = best_isa();
  return forced == kNoIsa ? best : Isa(std::min(forced, int(best)));
}

Plan plan(const Problem& q, const RunFn& run) {
  const Isa isa = planned_isa();
  const int forced = forced_kernel_state().load();
  if (forced >= 0) return by_rules(q, isa, true, forced);
  const bool allow_aten = forced != kOwnKernels;
  const bool measuring = benchmark_state().load();
  const Key key = key_of(q, isa, allow_aten);
  {
    std::lock_guard<std::mutex> lock(cache().mutex);
    const auto it = cache().entries.find(key);
    if (it != cache().entries.end() && (measuring || it->second.from_file)) {
      const CacheEntry& e = it->second;
      if (!unsupported(e.kernel, q))
        return {e.kernel, isa, e.from_file ? "plan file" : "tuned",
                e.from_file ? "measured fastest by python -m fastdw tune on this machine"
                            : "measured fastest at the first call (benchmark mode)",
                ""};
    }
  }
  if (!measuring || !run) return by_rules(q, isa, allow_aten, kNoKernel);
  // Candidates in a fixed order, the rules' choice first: a tie keeps it.
  const Plan ruled = by_rules(q, isa, allow_aten, kNoKernel);
  std::vector<Kernel> candidates{ruled.kernel};
  for (int i = 0; i < kKernelCount; ++i) {
    const Kernel k = Kernel(i);
    if (k != ruled.kernel && (allow_aten || k != Kernel::aten) && !unsupported(k, q))
      candidates.push_back(k);
  }
  const std::vector<double> times = time_candidates(candidates, isa, run);
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i)
    if (times[i] < times[best]) best = i;
  CacheEntry e{q, isa, allow_aten, candidates[best], false, times[best] * 1e6};
  cache_insert(e);
  return {e.kernel, isa, "tuned", "measured fastest at the first call (benchmark mode)", ""};
}

// ---- overrides, benchmark mode, cache: the Python-facing state ------------------------------

void set_forced_kernel(const std::string& name) {
  int v = kNoKernel;
  Kernel k;
  if (name == "fastdw") v = kOwnKernels;
  else if (kernel_from_name(name, &k)) v = int(k);
  else if (!name.empty()) throw std::invalid_argument("fastdw: no CPU kernel named '" + name + "'");
  forced_kernel_state().store(v);
}

void set_forced_isa(const std::string& name) {
  Isa isa;
  if (name.empty()) return forced_isa_state().store(kNoIsa);
  if (!isa_from_name(name, &isa))
    throw std::invalid_argument("fastdw: no ISA copy named '" + name +
                                "' (" + isa_names() + ")");
  forced_isa_state().store(int(isa));
}

std::string forced_kernel() {
  const int v = forced_kernel_state().load();
  return v == kNoKernel ? "" : v == kOwnKernels ? "fastdw" : kernel_name(Kernel(v));
}

std::string forced_isa() {
  const int v = forced_isa_state().load();
  return v == kNoIsa ? "" : isa_name(Isa(v));
}

void set_benchmark(bool on) { benchmark_state().store(on); }
bool benchmark() { return benchmark_state().load(); }

std::vector<CacheEntry> cache_entries() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  std::vector<CacheEntry> out;
  for (const auto& kv : cache().entries) out.push_back(kv.second);
  return out;
}

void cache_insert(const CacheEntry& e) {
  std::lock_guard<std::mutex> lock(cache().mutex);
  cache().entries[key_of(e.problem, e.isa, e.allow_aten)] = e;
}

void cache_clear() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  cache().entries.clear();
}

}  // namespace cpu
}  // namespace fastdw
