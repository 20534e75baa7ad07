// Host code of the CPU ops: argument checks, the plan (plan.h), then the plan carried out:
// weights packed as the kernel reads them, tensors in the layout it runs in, its work items on
// ATen's thread pool (torch.set_num_threads governs them). Registers the CPU kernels of the ops.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <utility>

#include "cpu/kernels.h"
#include "cpu/plan.h"
#include "depthwise_args.h"

namespace fastdw {
namespace cpu {
namespace {

using at::Tensor;
using c10::IntArrayRef;

c10::MemoryFormat layout_of(bool channels_last) {
  return channels_last ? c10::MemoryFormat::ChannelsLast : c10::MemoryFormat::Contiguous;
}

Dtype dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return Dtype::kDouble;
    case at::kFloat: return Dtype::kFloat;
    case at::kBFloat16: return Dtype::kBFloat16;
    case at::kHalf: return Dtype::kHalf;
    default: TORCH_CHECK(false, "fastdw: unsupported dtype ", t);
  }
}

// Whether every element is finite, from the exponent bits: a branch-free loop the compiler
// vectorises (isfinite().all().item() is three tensor ops and a sync point that cost more than a
// small layer's whole pass).
template <typename bits_t>
bool all_finite_bits(const void* data, int64_t n, bits_t exponent) {
  const bits_t* b = static_cast<const bits_t*>(data);
  bits_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= ((b[i] & exponent) == exponent);
  return !any;
}
bool all_finite(const Tensor& t) {
  const Tensor c = t.contiguous();
  const void* d = c.const_data_ptr();
  switch (c.scalar_type()) {
    case at::kDouble: return all_finite_bits<uint64_t>(d, c.numel(), 0x7ff0000000000000ull);
    case at::kFloat: return all_finite_bits<uint32_t>(d, c.numel(), 0x7f800000u);
    case at::kBFloat16: return all_finite_bits<uint16_t>(d, c.numel(), 0x7f80u);
    default: return all_finite_bits<uint16_t>(d, c.numel(), 0x7c00u);
  }
}

void check_grad_output(const Tensor& grad_output, const DepthwiseParams& p) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.batch &&
                  grad_output.size(1) == p.out_channels && grad_output.size(2) == p.out_h &&
                  grad_output.size(3) == p.out_w,
              "fastdw: grad_output must have shape (", p.batch, ", ", p.out_channels, ", ",
              p.out_h, ", ", p.out_w, "), got ", grad_output.sizes());
}

// Parallel grain: aim for ~32k multiply-adds per task so small shapes are not over-split.
int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

// Runs entry point `e` of ISA copy `isa` over work items [0, items).
void launch(Entry e, Isa isa, const DepthwiseParams& p, const KernelArgs& a, int64_t items,
            int64_t grain) {
  const EntryFn fn = entry_point(isa, e);
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) { fn(p, a, begin, end); });
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Weights (and bias) as the kernel reads them (KernelArgs in kernels.h).
struct Packed {
  Tensor weight, bias;
};
Packed pack_per_channel(const Tensor& weight, const std::optional<Tensor>& bias,
                        const DepthwiseParams& p, bool taps_major) {
  const at::ScalarType acc = acc_type(weight.scalar_type());
  Tensor w = weight.to(acc).reshape({p.out_channels, p.taps()});
  Packed out{(taps_major ? w.t() : w).contiguous(), Tensor()};
  if (bias.has_value()) out.bias = bias->to(acc).contiguous();
  return out;
}
// [block][taps + 1][kLanes] floats, the taps (in reverse order when `flipped`: the kernel
// rotated by 180 degrees) then the bias, zero past the last channel. The first `paired_blocks`
// blocks hold channel pairs (tile_paired_blocks in kernels.h): lane l of block 2k is channel
// 32k + 2l, of block 2k + 1 channel 32k + 2l + 1. Plain loops, 16 channels at a time: a chain
// of tensor ops to do the same costs more than the kernel on small layers.
Tensor pack_blocks(const Tensor& weight, const std::optional<Tensor>& bias,
                   const DepthwiseParams& p, bool flipped = false, int64_t paired_blocks = 0) {
  const int64_t taps = p.taps(), C = p.out_channels, blocks = (C + kLanes - 1) / kLanes;
  const Tensor w = weight.to(at::kFloat).contiguous();
  const Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : Tensor();
  Tensor packed = at::empty({blocks, taps + 1, kLanes}, weight.options().dtype(at::kFloat));
  const float* w_ptr = w.const_data_ptr<float>();
  const float* b_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* out = packed.mutable_data_ptr<float>();
  for (int64_t blk = 0; blk < blocks; ++blk) {
    // Lane l is channel c0 + l * step.
    const bool paired = blk < paired_blocks;
    const int64_t c0 = paired ? (blk & ~int64_t(1)) * kLanes + (blk & 1) : blk * kLanes;
    const int64_t step = paired ? 2 : 1, lanes = paired ? kLanes : std::min(kLanes, C - c0);
    float* dst = out + blk * (taps + 1) * kLanes;
    for (int64_t t = 0; t < taps; ++t) {
      const float* src = w_ptr + c0 * taps + (flipped ? taps - 1 - t : t);
      for (int64_t l = 0; l < lanes; ++l) dst[t * kLanes + l] = src[l * step * taps];
      for (int64_t l = lanes; l < kLanes; ++l) dst[t * kLanes + l] = 0.f;
    }
    for (int64_t l = 0; l < kLanes; ++l)
      dst[taps * kLanes + l] = b_ptr && l < lanes ? b_ptr[c0 + l * step] : 0.f;
  }
  return packed;
}

// The same convolution in the layout kernel k runs in.
DepthwiseParams in_layout_of(Kernel k, const Problem& q) {
  DepthwiseParams p = q.p;
  p.channels_last = runs_channels_last(k, q);
  return p;
}

// `result` with exactly the strides of a dense 4-D tensor in layout `fmt` (what F.conv2d
// returns): a copy only when the kernel ran in the other layout (or, with size-1 dimensions,
// returned other strides that are also dense).
Tensor in_format(const Tensor& result, c10::MemoryFormat fmt) {
  const auto s = result.sizes();
  const bool cl = fmt == c10::MemoryFormat::ChannelsLast;
  const std::array<int64_t, 4> strides =
      cl ? std::array<int64_t, 4>{s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]}
         : std::array<int64_t, 4>{s[1] * s[2] * s[3], s[2] * s[3], s[3], 1};
  if (result.strides() == c10::IntArrayRef(strides)) return result;
  return at::empty(s, result.options().memory_format(fmt)).copy_(result);
}

// The plan for q, whose weights_finite is an input: planned as finite, the weights are checked
// only when the chosen kernel would multiply them by materialised padding (a pass over the
// weights costs more than a small layer's kernel otherwise), and q replanned if one is not.
Plan plan_for_weights(Problem& q, const Tensor& weight, const RunFn& run) {
  q.weights_finite = true;
  const Plan first = plan(q, run);
  if (!materialises_padding(first.kernel, q) || all_finite(weight)) return first;
  q.weights_finite = false;
  return plan(q, run);
}

// ---- forward ---------------------------------------------------------------------------------

// The forward pass of kernel k (not aten) on dense tensors in its layout p, into `out`; with
// `flipped`, of the weight rotated by 180 degrees (backward-input as a forward conv).
void forward_kernel(Kernel k, Isa isa, const DepthwiseParams& p, const Tensor& x,
                    const Tensor& weight, const std::optional<Tensor>& bias, Tensor& out,
                    bool flipped = false) {
  KernelArgs a;
  a.dtype = dtype_of(x.scalar_type());
  a.src = x.const_data_ptr();
  a.dst = out.mutable_data_ptr();
  const int64_t taps = p.taps();
  if (k == Kernel::nhwc_tiles || k == Kernel::nhwc_windows || k == Kernel::channel_blocks) {
    const bool paired = k == Kernel::nhwc_tiles && a.dtype == Dtype::kBFloat16;
    const Tensor packed =
        pack_blocks(weight, bias, p, flipped, paired ? tile_paired_blocks(p.in_channels) : 0);
    a.weight = packed.const_data_ptr();
    if (k != Kernel::channel_blocks) {
      launch(k == Kernel::nhwc_tiles ? Entry::forward_nhwc_tiles : Entry::forward_nhwc_windows,
             isa, p, a, tile_item_count(p),
             grain_for(p.out_w * 4 * kLanes * taps));
    } else {
      // NCHW: one block per item (csrc/cpu/README.md, 'channel_blocks items').
      a.blocked = blocked_geometry(p, at::get_num_threads(), !p.channels_last);
      launch(Entry::forward_blocked, isa, p, a, a.blocked.items(), 1);
    }
    return;
  }
  TORCH_CHECK(!flipped, "fastdw: only the forward-only kernels run flipped forwards");
  const Packed packed = pack_per_channel(weight, bias, p, k == Kernel::nhwc_pixels);
  a.weight = packed.weight.const_data_ptr();
  a.bias = packed.bias.defined() ? packed.bias.const_data_ptr() : nullptr;
  if (k == Kernel::nhwc_pixels)
    launch(Entry::forward_nhwc_pixels, isa, p, a, p.batch * p.out_h,
           grain_for(p.out_w * p.out_channels * taps));
  else
    launch(Entry::forward_nchw_planes, isa, p, a, p.batch * p.in_channels,
           grain_for(p.out_h * p.out_w * p.multiplier * taps));
}

Tensor run_forward(Kernel k, Isa isa, const Problem& q, const Tensor& input,
                   const Tensor& weight, const std::optional<Tensor>& bias,
                   IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation) {
  const c10::MemoryFormat fmt = layout_of(q.p.channels_last);
  if (k == Kernel::aten) {
    const Tensor y = at::convolution(input.contiguous(fmt), weight.contiguous(), bias, stride,
                                     padding, dilation, false, {0, 0}, q.p.in_channels);
    return in_format(y, fmt);
  }
  const DepthwiseParams p = in_layout_of(k, q);
  const c10::MemoryFormat kfmt = layout_of(p.channels_last);
  Tensor out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w},
                         input.options().memory_format(kfmt));
  forward_kernel(k, isa, p, input.contiguous(kfmt), weight, bias, out);
  return in_format(out, fmt);
}

Tensor forward(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias,
               IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation) {
  const DepthwiseParams p = check_forward(input, weight, bias, stride, padding, dilation);
  if (p.output_numel() == 0)
    return at::empty({p.batch, p.out_channels, p.out_h, p.out_w},
                     input.options().memory_format(layout_of(p.channels_last)));
  Problem q{p, dtype_of(input.scalar_type()), Pass::fwd, true, at::get_num_threads()};
  const auto run = [&](Kernel k, Isa isa) {
    run_forward(k, isa, q, input, weight, bias, stride, padding, dilation);
  };
  const Plan plan_ = plan_for_weights(q, weight, run);
  return run_forward(plan_.kernel, plan_.isa, q, input, weight, bias, stride, padding, dilation);
}

// ---- backward-input ----------------------------------------------------------------------------

Tensor run_backward_input(Kernel k, Isa isa, const Problem& q, const Tensor& grad_output,
                          const Tensor& weight, IntArrayRef input_size, IntArrayRef stride,
                          IntArrayRef padding, IntArrayRef dilation) {
  const c10::MemoryFormat fmt = layout_of(q.p.channels_last);
  if (k == Kernel::aten) {
    // Only the input's sizes matter to grad_input: an uninitialised tensor stands for it.
    const Tensor like = at::empty(input_size, grad_output.options().memory_format(fmt));
    const Tensor gi = std::get<0>(at::convolution_backward(
        grad_output.contiguous(fmt), like, weight.contiguous(), std::nullopt, stride, padding,
        dilation, false, {0, 0}, q.p.in_channels, {true, false, false}));
    return in_format(gi, fmt);
  }
  const DepthwiseParams p = in_layout_of(k, q);
  const c10::MemoryFormat kfmt = layout_of(p.channels_last);
  const Tensor g = grad_output.contiguous(kfmt);
  Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(kfmt));
  if (runs_as_flipped_forward(k, q)) {
    DepthwiseParams f;
    flipped_forward(p, &f);
    forward_kernel(k, isa, f, g, weight, std::nullopt, grad_input, /*flipped=*/true);
    return in_format(grad_input, fmt);
  }
  const Packed packed = pack_per_channel(weight, std::nullopt, p, k == Kernel::nhwc_pixels);
  KernelArgs a;
  a.dtype = q.dtype;
  a.src = g.const_data_ptr();
  a.weight = packed.weight.const_data_ptr();
  a.dst = grad_input.mutable_data_ptr();
  const int64_t row_work = p.out_w * p.taps() * p.multiplier / p.stride_h;
  if (k == Kernel::nhwc_pixels)
    launch(Entry::backward_input_nhwc_pixels, isa, p, a, p.batch * p.in_h,
           grain_for(row_work * p.in_channels));
  else
    launch(Entry::backward_input_nchw_planes, isa, p, a, p.batch * p.in_channels,
           grain_for(row_work * p.in_h));
  return in_format(grad_input, fmt);
}

Tensor backward_input(const Tensor& grad_output, const Tensor& weight, IntArrayRef input_size,
                      IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation) {
  check_floating(grad_output, "grad_output");
  check_same_device_dtype(grad_output, "grad_output", weight, "weight");
  const c10::MemoryFormat fmt = kernel_memory_format(grad_output);
  const DepthwiseParams p = make_params(input_size, weight.sizes(), stride, padding, dilation,
                                        fmt == c10::MemoryFormat::ChannelsLast);
  check_grad_output(grad_output, p);
  if (p.input_numel() == 0) return at::empty(input_size, grad_output.options().memory_format(fmt));
  if (grad_output.numel() == 0)
    return at::zeros(input_size, grad_output.options().memory_format(fmt));
  Problem q{p, dtype_of(grad_output.scalar_type()), Pass::bwd_input, true, at::get_num_threads()};
  const auto run = [&](Kernel k, Isa isa) {
    run_backward_input(k, isa, q, grad_output, weight, input_size, stride, padding, dilation);
  };
  const Plan plan_ = plan_for_weights(q, weight, run);
  return run_backward_input(plan_.kernel, plan_.isa, q, grad_output, weight, input_size, stride,
                            padding, dilation);
}

// ---- backward-weight -------------------------------------------------------------------------

// The channel_blocks weight-gradient split must not follow the thread count: its partial sums
// are added in item order, and the bits must not change with torch.set_num_threads.
constexpr int64_t kWeightSplitThreads = 8;

// Pass 2 of channel_blocks: per block of kLanes channels, each item's partials added in item
// order (the per-channel order of the sum does not depend on this loop structure).
void reduce_block_partials(const DepthwiseParams& p, const BlockedGeometry& g,
                           const float* part, double* gw, double* gb) {
  const int64_t taps = p.taps(), item_floats = g.group_blocks * (taps + 1) * kLanes;
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

// Pass 2 of nhwc_pixels: per output channel, the chunks' partials in chunk order.
template <typename acc_t>
void reduce_chunk_partials(const DepthwiseParams& p, const acc_t* part, int64_t chunks,
                           double* gw, double* gb) {
  const int64_t Cout = p.out_channels, taps = p.taps();
  at::parallel_for(0, Cout, grain_for(chunks * (taps + 1)), [&](int64_t begin, int64_t end) {
    for (int64_t co = begin; co < end; ++co)
      for (int64_t t = 0; t <= taps; ++t) {
        double s = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk)
          s += part[(chunk * (taps + 1) + t) * Cout + co];
        if (t < taps) gw[co * taps + t] = s;
        else gb[co] = s;
      }
  });
}

std::tuple<Tensor, Tensor> run_backward_weight(Kernel k, Isa isa, const Problem& q,
                                               const Tensor& grad_output, const Tensor& input,
                                               IntArrayRef weight_size) {
  TORCH_CHECK(k != Kernel::aten, "fastdw: aten is no backward-weight kernel");
  const DepthwiseParams p = in_layout_of(k, q);
  const c10::MemoryFormat kfmt = layout_of(p.channels_last);
  const Tensor x = input.contiguous(kfmt), g = grad_output.contiguous(kfmt);
  const auto f64 = input.options().dtype(at::kDouble);
  Tensor gw = at::zeros({p.out_channels, p.taps()}, f64), gb = at::zeros({p.out_channels}, f64);
  double* gw_ptr = gw.mutable_data_ptr<double>();
  double* gb_ptr = gb.mutable_data_ptr<double>();
  KernelArgs a;
  a.dtype = q.dtype;
  a.src = g.const_data_ptr();
  a.src2 = x.const_data_ptr();
  const int64_t taps = p.taps();
  if (k == Kernel::channel_blocks) {
    // NCHW at batch 1: one block per item (csrc/cpu/README.md, 'channel_blocks items').
    a.blocked = blocked_geometry(p, kWeightSplitThreads, !p.channels_last && p.batch == 1);
    const int64_t item_floats = a.blocked.group_blocks * (taps + 1) * kLanes;
    Tensor partial = at::empty({a.blocked.items(), item_floats}, input.options().dtype(at::kFloat));
    a.dst = partial.mutable_data_ptr();
    launch(Entry::backward_weight_blocked, isa, p, a, a.blocked.items(), 1);
    reduce_block_partials(p, a.blocked, partial.const_data_ptr<float>(), gw_ptr, gb_ptr);
  } else if (k == Kernel::nhwc_pixels) {
    a.rows_per_chunk = pixel_weight_rows_per_chunk(p);
    const int64_t chunks = (p.batch * p.out_h + a.rows_per_chunk - 1) / a.rows_per_chunk;
    Tensor partial = at::empty({chunks, taps + 1, p.out_channels},
                               input.options().dtype(acc_type(input.scalar_type())));
    a.dst = partial.mutable_data_ptr();
    launch(Entry::backward_weight_nhwc_pixels, isa, p, a,
           chunks * ((p.in_channels + kLanes - 1) / kLanes), 1);
    if (partial.scalar_type() == at::kDouble)
      reduce_chunk_partials(p, partial.const_data_ptr<double>(), chunks, gw_ptr, gb_ptr);
    else
      reduce_chunk_partials(p, partial.const_data_ptr<float>(), chunks, gw_ptr, gb_ptr);
  } else {
    a.grad_weight = gw_ptr;
    a.grad_bias = gb_ptr;
    launch(Entry::backward_weight_nchw_planes, isa, p, a, p.in_channels,
           grain_for(p.batch * p.out_h * p.out_w * (taps + 1) * p.multiplier));
  }
  return {gw.to(input.scalar_type()).reshape(weight_size), gb.to(input.scalar_type())};
}

std::tuple<Tensor, Tensor> backward_weight(const Tensor& grad_output, const Tensor& input,
                                           IntArrayRef weight_size, IntArrayRef stride,
                                           IntArrayRef padding, IntArrayRef dilation) {
  check_floating(input, "input");
  check_same_device_dtype(input, "input", grad_output, "grad_output");
  TORCH_CHECK(input.dim() == 4, "fastdw: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  const DepthwiseParams p = make_params(
      input.sizes(), weight_size, stride, padding, dilation,
      kernel_memory_format(input) == c10::MemoryFormat::ChannelsLast);
  check_grad_output(grad_output, p);
  if (grad_output.numel() == 0)
    return {at::zeros(weight_size, input.options()), at::zeros({p.out_channels}, input.options())};
  const Problem q{p, dtype_of(input.scalar_type()), Pass::bwd_weight, true,
                  at::get_num_threads()};
  const Plan plan_ = plan(q, [&](Kernel k, Isa isa) {
    run_backward_weight(k, isa, q, grad_output, input, weight_size);
  });
  auto grads = run_backward_weight(plan_.kernel, plan_.isa, q, grad_output, input, weight_size);
  // A NaN or Inf in grad_output meets the zero padding on the kernels that materialise it
  // (0 * Inf = NaN where PyTorch leaves padded taps out). A finite result had no such product;
  // a non-finite one is recomputed on a kernel that visits in-bounds taps only (plan.h).
  if (materialises_padding(plan_.kernel, q) && !all_finite(std::get<0>(grads)))
    grads = run_backward_weight(Kernel::nhwc_pixels, plan_.isa, q, grad_output, input,
                                weight_size);
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdw, CPU, m) {
  m.impl("depthwise_conv2d", &forward);
  m.impl("depthwise_conv2d_backward_input", &backward_input);
  m.impl("depthwise_conv2d_backward_weight", &backward_weight);
}

}  // namespace cpu
}  // namespace fastdw
