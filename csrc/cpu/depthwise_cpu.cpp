// Host code for the CPU kernels: checks, layout, dtype dispatch, threading, registration.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <optional>
#include <utility>

#include "cpu/blocked.h"
#include "cpu/kernels.h"
#include "depthwise_args.h"

namespace fastdw {
namespace cpu {
namespace {

using at::Tensor;
using c10::IntArrayRef;

c10::MemoryFormat layout_of(const DepthwiseParams& p) {
  return p.channels_last ? c10::MemoryFormat::ChannelsLast : c10::MemoryFormat::Contiguous;
}

// Weights converted to the accumulation type once, laid out as the kernel reads them:
// [Cout][taps] for NCHW kernels, [taps][Cout] for NHWC kernels (a contiguous channel run).
Tensor packed_weight(const Tensor& weight, const DepthwiseParams& p, at::ScalarType acc_type) {
  Tensor w = weight.to(acc_type).reshape({p.out_channels, p.taps()});
  return (p.channels_last ? w.t() : w).contiguous();
}

// Parallel grain: aim for ~32k multiply-adds per task so small shapes are not over-split.
int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

void check_grad_output(const Tensor& grad_output, const DepthwiseParams& p) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.batch &&
                  grad_output.size(1) == p.out_channels && grad_output.size(2) == p.out_h &&
                  grad_output.size(3) == p.out_w,
              "fastdw: grad_output must have shape (", p.batch, ", ", p.out_channels, ", ",
              p.out_h, ", ", p.out_w, "), got ", grad_output.sizes());
}

// The NCHW kernels copy each plane into a padded, stride-phase-split buffer. For ordinary
// convolutions that buffer is about the size of the plane; for pathological geometry (padding
// far beyond the input, a stride far beyond the width) it would be enormous, so those shapes
// run on the channels_last kernels, which visit only in-bounds taps and need no such buffer.
bool planes_fit(const DepthwiseParams& p) {
  const double rows = double(p.in_h) + 2.0 * double(p.pad_h);
  const double phases = double(p.stride_w);
  const double segment = std::ceil((double(p.in_w) + 2.0 * double(p.pad_w)) / phases) + 16.0;
  const double buffer = rows * phases * segment;
  const double planes = double(p.in_h) * double(p.in_w) + double(p.out_h) * double(p.out_w);
  return buffer <= 4.0 * planes + 65536.0;
}

// The same convolution, run by the channels_last kernels (on channels_last copies of the data).
DepthwiseParams as_channels_last(DepthwiseParams p) {
  p.channels_last = true;
  return p;
}

// With stride 1, multiplier 1 and padding <= dilation*(k-1), grad_input is the forward conv of
// grad_output with the flipped kernel and padding dilation*(k-1) - padding. Returns its Params.
std::optional<DepthwiseParams> backward_input_as_forward(const DepthwiseParams& p) {
  if (p.stride_h != 1 || p.stride_w != 1 || p.multiplier != 1) return std::nullopt;
  const int64_t pad_h = p.dilation_h * (p.kernel_h - 1) - p.pad_h;
  const int64_t pad_w = p.dilation_w * (p.kernel_w - 1) - p.pad_w;
  if (pad_h < 0 || pad_w < 0) return std::nullopt;
  DepthwiseParams q = p;
  std::swap(q.in_h, q.out_h);
  std::swap(q.in_w, q.out_w);
  q.pad_h = pad_h;
  q.pad_w = pad_w;
  if (!q.channels_last && !planes_fit(q)) return std::nullopt;  // e.g. huge dilation
  return q;
}

// Where the channel-blocked forward (blocked.inc) beats the per-layout kernels, measured
// in-process A/B (bench/cpu_routes_ab.py) on a 2-core Zen 4 EPYC (fp32 unless said, the
// MobileNetV2 / EfficientNet-B0 / ConvNeXt-T depthwise layers, N = 1 and 8):
// - channels_last, kernels of 5x5 taps and more: 1.0-1.3x over the per-pixel NHWC kernel (its
//   scratch copy of the input is amortised over more taps), and bfloat16/float16 stride-1 layers
//   (it converts each input once; 1.1-1.4x on the larger 3x3 layers); where the in-place kernel
//   applies, direct_forward_wins is asked first;
// - NCHW with stride >= 2 and output planes up to 28x28: 1.3-2.7x over the phase-split planes;
// - NCHW 7x7 planes and smaller with many planes (N*C >= 4096): 1.1-1.7x;
// - NCHW 7x7 kernels, and 5x5 on 7x7 planes: 1.0-1.2x (after its NCHW rows narrower than a
//   block went through the transpose as well).
// It multiplies the weights by materialised zero padding, so a caller that needs padded taps
// skipped when a weight is NaN or Inf (forward, backward-input) passes weights_finite=false.
bool blocked_forward_wins(const DepthwiseParams& p, at::ScalarType dtype) {
  const int64_t plane = p.out_h * p.out_w;
  const bool half = dtype == at::kBFloat16 || dtype == at::kHalf;
  if (p.channels_last) return p.taps() >= 25 || (half && p.stride_w == 1);
  if (p.stride_w >= 2) return plane <= 28 * 28;
  if (p.taps() >= 49 || (plane <= 7 * 7 && p.taps() >= 25)) return true;
  return plane <= 7 * 7 && p.batch * p.in_channels >= 4096;
}

// FASTDW_CPU_BLOCKED=0 turns the channel-blocked kernels off, =1 forces the ring kernels
// wherever they apply, =direct forces the in-place channels_last forward wherever it applies (A/B
// benchmarking and tests); unset leaves the choice to the measured rules. Read per call, which
// costs nothing measurable.
enum class BlockedMode { kOff, kAuto, kForce, kDirect };
BlockedMode blocked_mode() {
  const char* env = std::getenv("FASTDW_CPU_BLOCKED");
  const std::string mode = env ? env : "";
  return mode == "0"        ? BlockedMode::kOff
         : mode == "1"      ? BlockedMode::kForce
         : mode == "direct" ? BlockedMode::kDirect
                            : BlockedMode::kAuto;
}

std::optional<BlockedGeometry> blocked_forward_geometry(const DepthwiseParams& p,
                                                        at::ScalarType dtype, bool weights_finite) {
  const BlockedMode mode = blocked_mode();
  if (mode == BlockedMode::kOff || p.multiplier != 1 || dtype == at::kDouble || !weights_finite)
    return std::nullopt;
  if (mode != BlockedMode::kForce && !blocked_forward_wins(p, dtype)) return std::nullopt;
  const BlockedGeometry g = blocked_geometry(p, at::get_num_threads());
  if (!blocked_fits(p, g)) return std::nullopt;
  return g;
}

// Backward-weight: where the blocked kernel wins (measured as for blocked_forward_wins):
// channels_last everywhere (mostly 1.1-4.9x; its partial sums per work item replace the
// per-row-chunk partials of the direct kernel), NCHW with stride >= 2 or 5x5 taps and more
// (1.1-3.7x) and on 7x7 planes with N*C >= 4096; NCHW 3x3 stride 1 on larger planes stays on
// the plane kernels (the blocked one is 0.45-0.9x there).
bool blocked_weight_wins(const DepthwiseParams& p) {
  if (p.channels_last || p.stride_h * p.stride_w > 1 || p.taps() >= 25) return true;
  return p.out_h * p.out_w <= 7 * 7 && p.batch * p.in_channels >= 4096;
}

// The weight-gradient work split must not follow the thread count: its partial sums are added
// in item order, and the bits must not change with torch.set_num_threads.
constexpr int64_t kWeightSplitThreads = 8;

std::optional<BlockedGeometry> blocked_weight_geometry(const DepthwiseParams& p,
                                                       at::ScalarType dtype) {
  const BlockedMode mode = blocked_mode();
  if (mode == BlockedMode::kOff || p.multiplier != 1 || dtype == at::kDouble) return std::nullopt;
  if (mode != BlockedMode::kForce && !blocked_weight_wins(p)) return std::nullopt;
  const BlockedGeometry g = blocked_geometry(p, kWeightSplitThreads);
  if (!blocked_fits(p, g)) return std::nullopt;
  return g;
}

// The copy of channel-blocked kernel NAME<T> (blocked.h) built for this CPU's instruction set.
#define FASTDW_BLOCKED_KERNEL(NAME, T)                  \
  (active_isa() == Isa::kAvx512 ? avx512::NAME<T>       \
   : active_isa() == Isa::kAvx2 ? avx2::NAME<T>         \
                                : generic::NAME<T>)

// The per-layout kernel families have no AVX-512 copy: AVX-512 CPUs run their AVX2 build.
bool use_avx2_build() { return active_isa() != Isa::kGeneric; }

// Runs the blocked weight-gradient partials, then adds them per channel in item order.
template <typename scalar_t>
void backward_weight_blocked_run(const DepthwiseParams& p, const BlockedGeometry& g,
                                 const Tensor& grad_output, const Tensor& input, double* gw,
                                 double* gb) {
  const int64_t taps = p.taps(), item_floats = g.group_blocks * (taps + 1) * kLanes;
  Tensor partial = at::empty({g.items(), item_floats}, input.options().dtype(at::kFloat));
  float* part = partial.mutable_data_ptr<float>();
  const scalar_t* g_ptr = grad_output.const_data_ptr<scalar_t>();
  const scalar_t* x_ptr = input.const_data_ptr<scalar_t>();
  const auto kernel = FASTDW_BLOCKED_KERNEL(backward_weight_blocked, scalar_t);
  at::parallel_for(0, g.items(), 1, [&](int64_t begin, int64_t end) {
    kernel(p, g, g_ptr, x_ptr, part, begin, end);
  });
  // Per block of kLanes channels, a contiguous vector of each item's partials at a time (the
  // per-channel order of the sum, items in order, does not depend on this loop structure).
  const int64_t blocks = (p.out_channels + kLanes - 1) / kLanes;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t group = block / g.group_blocks, b = block % g.group_blocks;
      const int64_t lanes = std::min<int64_t>(kLanes, p.out_channels - block * kLanes);
      for (int64_t t = 0; t <= taps; ++t) {
        double sum[kLanes] = {};
        for (int64_t n = 0; n < g.batch; ++n)
          for (int64_t s = 0; s < g.strips; ++s) {
            const int64_t item = (n * g.groups + group) * g.strips + s;
            const float* src = part + item * item_floats + (b * (taps + 1) + t) * kLanes;
            for (int64_t l = 0; l < kLanes; ++l) sum[l] += src[l];
          }
        for (int64_t l = 0; l < lanes; ++l) {
          const int64_t c = block * kLanes + l;
          if (t < taps) gw[c * taps + t] = sum[l];
          else gb[c] = sum[l];
        }
      }
    }
  });
}

// Weights (and bias) as the channel-blocked kernels read them: [block][taps + 1][kLanes] floats,
// the taps then the bias, zero past the last channel. A plain loop: a chain of tensor ops to do
// the same costs more than the kernel on small layers.
Tensor blocked_packed_weight(const Tensor& weight, const std::optional<Tensor>& bias,
                             const DepthwiseParams& p) {
  const int64_t taps = p.taps(), C = p.out_channels, blocks = (C + kLanes - 1) / kLanes;
  const Tensor w = weight.to(at::kFloat).contiguous();
  const Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : Tensor();
  Tensor packed = at::zeros({blocks, taps + 1, kLanes}, weight.options().dtype(at::kFloat));
  const float* w_ptr = w.const_data_ptr<float>();
  float* out = packed.mutable_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    float* dst = out + (c / kLanes) * (taps + 1) * kLanes + c % kLanes;
    for (int64_t t = 0; t < taps; ++t) dst[t * kLanes] = w_ptr[c * taps + t];
    if (b.defined()) dst[taps * kLanes] = b.const_data_ptr<float>()[c];
  }
  return packed;
}

// The in-place channels_last forward (direct_nhwc.inc), measured in-process A/B against the ring
// kernel and the per-pixel NHWC kernel (2-core Zen 4, fp32, the three suites' layers at N = 1
// and 8): fastest on every fp32 layer, 1.1-1.9x over the better of the two (1.0x on a few).
// In bfloat16/float16 (one conversion per input vector and kernel row, where the ring kernel
// converts each input once) it wins only on small layers, batch * output plane below 8 * 14 * 14
// (1.0-1.3x); larger ones go to the ring kernel (stride 1, 1.1-1.4x) or the per-pixel kernel
// (stride 2).
bool direct_forward_wins(const DepthwiseParams& p, at::ScalarType dtype) {
  const BlockedMode mode = blocked_mode();
  if (mode == BlockedMode::kOff || mode == BlockedMode::kForce || dtype == at::kDouble ||
      !direct_nhwc_fits(p))
    return false;
  if (mode == BlockedMode::kDirect) return true;
  return dtype == at::kFloat || p.batch * p.out_h * p.out_w < 8 * 14 * 14;
}

// Runs a channel-blocked forward on weights packed once: the ring kernels when `ring` holds
// their geometry, else the in-place channels_last kernel.
template <typename scalar_t>
void forward_blocked_run(const DepthwiseParams& p, const std::optional<BlockedGeometry>& ring,
                         const Tensor& x, const Tensor& weight,
                         const std::optional<Tensor>& bias, Tensor& out) {
  const Tensor packed = blocked_packed_weight(weight, bias, p);
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const float* w_ptr = packed.const_data_ptr<float>();
  scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
  if (ring) {
    const auto kernel = FASTDW_BLOCKED_KERNEL(forward_blocked, scalar_t);
    at::parallel_for(0, ring->items(), 1, [&](int64_t begin, int64_t end) {
      kernel(p, *ring, x_ptr, w_ptr, out_ptr, begin, end);
    });
    return;
  }
  const auto kernel = FASTDW_BLOCKED_KERNEL(forward_direct_nhwc, scalar_t);
  const int64_t items = p.batch * p.out_h * direct_group_count(p.in_channels);
  at::parallel_for(0, items, grain_for(p.out_w * 4 * kLanes * p.taps()),
                   [&](int64_t begin, int64_t end) {
                     kernel(p, x_ptr, w_ptr, out_ptr, begin, end);
                   });
}

// Runs the forward kernels for Params p on dense tensors x (input) and out (output).
Tensor forward_into(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                    const DepthwiseParams& p, Tensor& out, bool weights_finite = true) {
  const bool direct = direct_forward_wins(p, x.scalar_type());
  const auto ring = direct ? std::nullopt
                           : blocked_forward_geometry(p, x.scalar_type(), weights_finite);
  if (direct || ring) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "fastdw_depthwise_forward_blocked_cpu", [&] {
      if constexpr (!std::is_same_v<scalar_t, double>)
        forward_blocked_run<scalar_t>(p, ring, x, weight, bias, out);
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "fastdw_depthwise_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const Tensor w = packed_weight(weight, p, acc_type);
    const Tensor b = bias.has_value() ? bias->to(acc_type).contiguous() : Tensor();
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const acc_t* w_ptr = w.const_data_ptr<acc_t>();
    const acc_t* b_ptr = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    const bool avx2 = use_avx2_build();
    if (p.channels_last) {
      const auto kernel = avx2 ? avx2::forward_nhwc<scalar_t, acc_t>
                               : generic::forward_nhwc<scalar_t, acc_t>;
      at::parallel_for(0, p.batch * p.out_h, grain_for(p.out_w * p.out_channels * p.taps()),
                       [&](int64_t begin, int64_t end) {
                         kernel(p, x_ptr, w_ptr, b_ptr, out_ptr, begin, end);
                       });
    } else {
      const auto kernel = avx2 ? avx2::forward_nchw<scalar_t, acc_t>
                               : generic::forward_nchw<scalar_t, acc_t>;
      at::parallel_for(0, p.batch * p.in_channels,
                       grain_for(p.out_h * p.out_w * p.multiplier * p.taps()),
                       [&](int64_t begin, int64_t end) {
                         kernel(p, x_ptr, w_ptr, b_ptr, out_ptr, begin, end);
                       });
    }
  });
  return out;
}

// Whether every element is finite: a plain loop, since isfinite().all().item() is three tensor ops
// and a sync point that cost more than the whole backward-input of a small layer.
bool all_finite(const Tensor& t) {
  const Tensor c = t.contiguous();
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, c.scalar_type(), "fastdw_all_finite",
                                  [&] {
    const scalar_t* data = c.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < c.numel() && finite; ++i)
      finite = std::isfinite(static_cast<at::opmath_type<scalar_t>>(data[i]));
  });
  return finite;
}

Tensor forward(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias,
               IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation) {
  const DepthwiseParams p = check_forward(input, weight, bias, stride, padding, dilation);
  Tensor out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w},
                         input.options().memory_format(layout_of(p)));
  if (out.numel() == 0) return out;
  // A NaN or Inf weight must not meet the zero padding: PyTorch leaves padded taps out, while the
  // NCHW plane kernels and the ring kernels multiply the weights by materialised zeros
  // (0 * Inf = NaN). Such weights take the channels_last kernels, which visit in-bounds taps only.
  const bool weights_finite = (p.pad_h == 0 && p.pad_w == 0) || all_finite(weight);
  if (!p.channels_last && (!planes_fit(p) || !weights_finite)) {
    const DepthwiseParams q = as_channels_last(p);
    Tensor out_cl = at::empty(out.sizes(), out.options().memory_format(layout_of(q)));
    forward_into(input.contiguous(layout_of(q)), weight, bias, q, out_cl, weights_finite);
    return out.copy_(out_cl);
  }
  return forward_into(input.contiguous(layout_of(p)), weight, bias, p, out, weights_finite);
}

// Runs the backward-input kernels for Params p on dense tensors g (grad_output) and grad_input.
Tensor backward_input_into(const Tensor& g, const Tensor& weight, const DepthwiseParams& p,
                           Tensor& grad_input, bool weights_finite) {
  if (const auto as_conv = backward_input_as_forward(p)) {
    // A plain conv of grad_output with the flipped kernel: reuse the forward kernels.
    return forward_into(g, weight.flip({2, 3}), std::nullopt, *as_conv, grad_input,
                        weights_finite);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(),
                                  "fastdw_depthwise_backward_input_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Tensor w = packed_weight(weight, p, c10::CppTypeToScalarType<acc_t>::value);
    const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
    const acc_t* w_ptr = w.const_data_ptr<acc_t>();
    scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
    const int64_t row_work = p.out_w * p.taps() * p.multiplier / p.stride_h;
    const bool avx2 = use_avx2_build();
    if (p.channels_last) {
      const auto kernel = avx2 ? avx2::backward_input_nhwc<scalar_t, acc_t>
                               : generic::backward_input_nhwc<scalar_t, acc_t>;
      at::parallel_for(0, p.batch * p.in_h, grain_for(row_work * p.in_channels),
                       [&](int64_t begin, int64_t end) {
                         kernel(p, g_ptr, w_ptr, gi_ptr, begin, end);
                       });
    } else {
      const auto kernel = avx2 ? avx2::backward_input_nchw<scalar_t, acc_t>
                               : generic::backward_input_nchw<scalar_t, acc_t>;
      at::parallel_for(0, p.batch * p.in_channels, grain_for(row_work * p.in_h),
                       [&](int64_t begin, int64_t end) {
                         kernel(p, g_ptr, w_ptr, gi_ptr, begin, end);
                       });
    }
  });
  return grad_input;
}

Tensor backward_input(const Tensor& grad_output, const Tensor& weight, IntArrayRef input_size,
                      IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation) {
  check_floating(grad_output, "grad_output");
  check_same_device_dtype(grad_output, "grad_output", weight, "weight");
  const c10::MemoryFormat fmt = kernel_memory_format(grad_output);
  const DepthwiseParams p = make_params(input_size, weight.sizes(), stride, padding, dilation,
                                        fmt == c10::MemoryFormat::ChannelsLast);
  check_grad_output(grad_output, p);
  Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  if (grad_output.numel() == 0) return grad_input.zero_();
  // The NCHW paths multiply every weight by the zero padding of a plane buffer; a NaN or Inf
  // weight would turn that into NaN where PyTorch has no contribution at all.
  const bool weights_finite = all_finite(weight);
  // Strided NCHW backward-input on small planes: the per-phase gather over planes of at most
  // 28x28 outputs is 0.15-0.25x of oneDNN, while the channels_last gather plus two layout copies
  // is about 2-4x faster than it (in-process A/B, 2-core Zen 4, MobileNetV2/EfficientNet shapes).
  const bool small_strided = p.stride_h * p.stride_w > 1 && p.out_h * p.out_w <= 28 * 28;
  if (!p.channels_last && (!planes_fit(p) || !weights_finite || small_strided)) {
    const DepthwiseParams q = as_channels_last(p);
    Tensor gi_cl = at::empty(input_size, grad_output.options().memory_format(layout_of(q)));
    backward_input_into(grad_output.contiguous(layout_of(q)), weight, q, gi_cl, weights_finite);
    return grad_input.copy_(gi_cl);
  }
  return backward_input_into(grad_output.contiguous(fmt), weight, p, grad_input, weights_finite);
}

// Runs the backward-weight kernels for Params p, accumulating into the float64 gw (Cout, taps)
// and gb (Cout); allow_blocked=false keeps to the per-layout kernels.
void backward_weight_into(const Tensor& grad_output, const Tensor& input, const DepthwiseParams& p,
                          bool allow_blocked, Tensor& gw, Tensor& gb) {
  const Tensor x = input.contiguous(layout_of(p));
  const Tensor g = grad_output.contiguous(layout_of(p));
  const auto blocked = allow_blocked && grad_output.numel() > 0
                           ? blocked_weight_geometry(p, input.scalar_type())
                           : std::nullopt;
  if (blocked) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                    "fastdw_depthwise_backward_weight_blocked_cpu", [&] {
      if constexpr (!std::is_same_v<scalar_t, double>)
        backward_weight_blocked_run<scalar_t>(p, *blocked, g, x, gw.mutable_data_ptr<double>(),
                                              gb.mutable_data_ptr<double>());
    });
  } else if (grad_output.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                    "fastdw_depthwise_backward_weight_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
      const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
      double* gw_ptr = gw.mutable_data_ptr<double>();
      double* gb_ptr = gb.mutable_data_ptr<double>();
      const int64_t per_channel = p.batch * p.out_h * p.out_w * (p.taps() + 1) * p.multiplier;
      const bool avx2 = use_avx2_build();
      if (p.channels_last) {
        const int64_t rows_per_chunk = backward_weight_nhwc_rows_per_chunk(p);
        const int64_t chunks = (p.batch * p.out_h + rows_per_chunk - 1) / rows_per_chunk;
        Tensor partial = at::empty({chunks, p.taps() + 1, p.out_channels},
                                   input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
        acc_t* part_ptr = partial.mutable_data_ptr<acc_t>();
        const auto partials = avx2 ? avx2::backward_weight_nhwc_partials<scalar_t, acc_t>
                                   : generic::backward_weight_nhwc_partials<scalar_t, acc_t>;
        const auto reduce = avx2 ? avx2::backward_weight_nhwc_reduce<acc_t>
                                 : generic::backward_weight_nhwc_reduce<acc_t>;
        at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
          partials(p, g_ptr, x_ptr, rows_per_chunk, part_ptr, begin, end);
        });
        at::parallel_for(0, p.out_channels, grain_for(chunks * (p.taps() + 1)),
                         [&](int64_t begin, int64_t end) {
                           reduce(p, part_ptr, chunks, gw_ptr, gb_ptr, begin, end);
                         });
      } else {
        const auto kernel = avx2 ? avx2::backward_weight_nchw<scalar_t, acc_t>
                                 : generic::backward_weight_nchw<scalar_t, acc_t>;
        at::parallel_for(0, p.in_channels, grain_for(per_channel), [&](int64_t begin, int64_t end) {
          kernel(p, g_ptr, x_ptr, gw_ptr, gb_ptr, begin, end);
        });
      }
    });
  }
}

std::tuple<Tensor, Tensor> backward_weight(const Tensor& grad_output, const Tensor& input,
                                           IntArrayRef weight_size, IntArrayRef stride,
                                           IntArrayRef padding, IntArrayRef dilation) {
  check_floating(input, "input");
  check_same_device_dtype(input, "input", grad_output, "grad_output");
  TORCH_CHECK(input.dim() == 4, "fastdw: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  DepthwiseParams p = make_params(input.sizes(), weight_size, stride, padding, dilation,
                                  kernel_memory_format(input) == c10::MemoryFormat::ChannelsLast);
  check_grad_output(grad_output, p);
  if (!p.channels_last && !planes_fit(p)) p = as_channels_last(p);
  const auto f64 = input.options().dtype(at::kDouble);
  Tensor gw = at::zeros({p.out_channels, p.taps()}, f64);
  Tensor gb = at::zeros({p.out_channels}, f64);
  backward_weight_into(grad_output, input, p, /*allow_blocked=*/true, gw, gb);
  // The NCHW plane kernels and the blocked kernel multiply grad_output by materialised zero
  // padding: a NaN or Inf in grad_output then gives 0 * Inf = NaN where PyTorch (oneDNN) leaves
  // the padded taps out. A finite result had no such product; a non-finite one is recomputed by
  // the channels_last per-pixel kernels, which visit in-bounds taps only.
  if ((p.pad_h > 0 || p.pad_w > 0) && !all_finite(gw)) {
    gw.zero_();
    gb.zero_();
    backward_weight_into(grad_output, input, as_channels_last(p), /*allow_blocked=*/false, gw, gb);
  }
  return {gw.to(input.scalar_type()).reshape(weight_size), gb.to(input.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdw, CPU, m) {
  m.impl("depthwise_conv2d", &forward);
  m.impl("depthwise_conv2d_backward_input", &backward_input);
  m.impl("depthwise_conv2d_backward_weight", &backward_weight);
}

}  // namespace cpu
}  // namespace fastdw
