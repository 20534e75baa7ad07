#pragma once
// The seam between the host code (depthwise_cpu.cpp, which packs weights, splits work and runs
// ranges of work items on ATen's thread pool) and the kernel files, compiled once per ISA copy
// (isa.h, per_isa.h) and free of torch headers. Every kernel entry point has one signature,
// declared here once: it runs work items [begin, end) of one pass of one kernel.
#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"
#include "depthwise.h"

namespace fastdw {
namespace cpu {

// Channels per block of the channel-blocked kernels: one AVX-512 register of floats.
constexpr int64_t kLanes = 16;

enum class Dtype { kDouble, kFloat, kBFloat16, kHalf };

// The compile-time specialisations, the one table every kernel's size switch expands (as
// csrc/cuda/common.cuh's FASTDW_SPECIALIZATIONS): square kernel sizes and strides. Other sizes
// and strides take each kernel's run-time path.
#define FASTDW_SQUARE_SIZES(X) X(3) X(5) X(7)
#define FASTDW_STRIDES(X) X(1) X(2)

// nchw_planes' backward-input takes its interleaved-phase path (backward_input_stride2) at
// stride 2 with dilation 1; the plan's rule for NCHW strided backward-input keys on the same.
inline bool stride2_undilated(const DepthwiseParams& p) {
  return p.stride_h == 2 && p.stride_w == 2 && p.dilation_h == 1 && p.dilation_w == 1;
}

// ---- work decompositions shared by the host and the kernels ---------------------------------

// A work item of the channel-blocked kernels: (image, group of kLanes-channel blocks, strip of
// output rows), numbered strip-fastest.
struct BlockItem {
  int64_t n, b0, blocks;      // image, first channel block, number of blocks
  int64_t oh_begin, oh_end;   // output rows
};

// An item's scratch is a ring of the padded input rows that one output row reads,
// [block][ring slot][column][kLanes] floats. The split depends on the shape and a thread count
// (the actual one for the forward; a fixed one for the weight gradient, whose partial sums are
// added in item order), never on the data, and changes no result: each output element is
// computed by exactly one item with a fixed order of taps.
struct BlockedGeometry {
  int64_t batch = 0, blocks = 0, group_blocks = 0, groups = 0, strips = 0, rows_per_strip = 0;
  int64_t out_h = 0;
  int64_t padded_w = 0;  // scratch columns: those the taps of out_w outputs reach
  int64_t dilation_h = 1, kernel_h = 1;

  int64_t items() const { return batch * groups * strips; }
  // Input rows one output row reads: the ring of rows kept per channel block.
  int64_t ring_rows() const { return (kernel_h - 1) * dilation_h + 1; }
  int64_t scratch_floats() const { return group_blocks * ring_rows() * padded_w * kLanes; }
  BlockItem item(int64_t i) const {
    const int64_t s = i % strips, rest = i / strips, grp = rest % groups;
    const int64_t b0 = grp * group_blocks, begin = s * rows_per_strip;
    return {rest / groups, b0, std::min(group_blocks, blocks - b0), begin,
            std::min(out_h, begin + rows_per_strip)};
  }
};

// Groups keep an item's ring of rows near 64 KiB (within L2, close to L1) while there are a
// few items per thread; strips exist only to make those items. `single_block`: one block per
// item instead, for NCHW input, where a ring row of a group of b blocks reads kLanes * b planes
// at once (the callers say where it was measured faster).
inline BlockedGeometry blocked_geometry(const DepthwiseParams& p, int64_t threads,
                                        bool single_block) {
  BlockedGeometry g;
  g.batch = p.batch;
  g.blocks = (p.in_channels + kLanes - 1) / kLanes;
  g.out_h = p.out_h;
  g.padded_w = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  g.dilation_h = p.dilation_h;
  g.kernel_h = p.kernel_h;
  const int64_t block_bytes = g.ring_rows() * g.padded_w * kLanes * int64_t(sizeof(float));
  const int64_t max_group = single_block ? 1 : std::max<int64_t>(1, (64 << 10) / block_bytes);
  g.groups = (g.blocks + max_group - 1) / max_group;
  g.group_blocks = (g.blocks + g.groups - 1) / g.groups;
  g.groups = (g.blocks + g.group_blocks - 1) / g.group_blocks;
  const int64_t base = g.batch * g.groups;
  const int64_t want_strips = std::max<int64_t>(1, (4 * threads + base - 1) / base);
  g.rows_per_strip = std::max<int64_t>(1, (p.out_h + want_strips - 1) / want_strips);
  g.strips = (p.out_h + g.rows_per_strip - 1) / g.rows_per_strip;
  return g;
}

// The channel groups of the in-place channels_last tiles: groups of 4 full blocks, then one of
// 2 and one of 1 for the rest, then the partial block. Items: (n, oh, group), group fastest.
struct TileGroup {
  int64_t b0, nb;
  bool full;  // all kLanes channels of each block exist
};
inline int64_t tile_group_count(int64_t channels) {
  const int64_t full = channels / kLanes;
  return full / 4 + (full % 4) / 2 + (full % 2) + (channels % kLanes != 0);
}
inline TileGroup tile_group(int64_t channels, int64_t g) {
  const int64_t full = channels / kLanes, fours = full / 4;
  if (g < fours) return {4 * g, 4, true};
  int64_t b = 4 * fours;
  g -= fours;
  if (full % 4 >= 2) {
    if (g == 0) return {b, 2, true};
    b += 2, --g;
  }
  if (full % 2) {
    if (g == 0) return {b, 1, true};
    b += 1, --g;
  }
  return {b, 1, false};
}

// The work items of nhwc_tiles and nhwc_windows: (image n, output row oh, channel group g),
// numbered in strips of kTileStripRows rows: strip-major, then group, then the row in the strip,
// so that a thread runs a few consecutive rows of one group (the input rows they share are
// read again while still cached: in L1 when a group's rows are narrow enough, in L2 otherwise)
// before the next group of the same rows. Items past the last row of a short last strip have
// oh >= out_h and do nothing.
struct TileItem {
  int64_t n, oh, group;
};
// 4 rows: 1.05-1.12x on 192@28, 384@14 and 960@7 3x3 at N = 8 (Emerald Rapids, float32, one
// process per order), the same elsewhere (bench/results/cpu-intel-xeon-emerald-rapids-2core_
// 2026-12-01_nhwc_tiles_strips.txt).
constexpr int64_t kTileStripRows = 4;
inline int64_t tile_item_count(const DepthwiseParams& p) {
  const int64_t R = kTileStripRows;
  return p.batch * ((p.out_h + R - 1) / R) * tile_group_count(p.in_channels) * R;
}
inline TileItem tile_item(const DepthwiseParams& p, int64_t item) {
  const int64_t R = kTileStripRows, groups = tile_group_count(p.in_channels);
  const int64_t strips = (p.out_h + R - 1) / R;
  const int64_t row = item % R, rest = item / R, g = rest % groups, strip = rest / groups;
  return {strip / strips, (strip % strips) * R + row, g};
}

// nhwc_tiles in bfloat16 reads the blocks of its groups of 4 and 2 in channel pairs
// (load_bf16_pairs): block 2k holds the even channels of 32k..32k+31 and block 2k+1 the odd
// ones, in its weights (packed so) and in its accumulators. Those are the first
// tile_paired_blocks(C) blocks; the group of 1 and the partial block are in channel order.
inline int64_t tile_paired_blocks(int64_t channels) { return channels / kLanes / 2 * 2; }

// Rows per chunk of the channels_last per-pixel weight gradient, whose work items are (chunk,
// block of kLanes channels): from the shape alone, never from the thread count, so the order of
// its sums is fixed. About 64 items, chunks as long as that allows (the accumulators of a
// block stay in registers over a chunk's rows).
inline int64_t pixel_weight_rows_per_chunk(const DepthwiseParams& p) {
  const int64_t rows = p.batch * p.out_h, blocks = (p.in_channels + kLanes - 1) / kLanes;
  const int64_t chunks = std::clamp<int64_t>((64 + blocks - 1) / blocks, 1, std::max<int64_t>(1, rows));
  return std::max<int64_t>(1, (rows + chunks - 1) / chunks);
}

// ---- the entry points --------------------------------------------------------------------

// What a range reads and writes. acc = the accumulation type (double for float64, else
// float). Weights come packed as the kernel reads them (see pack_weights in the host code):
//   nchw_planes  [C*m][taps] acc, bias [C*m] acc
//   nhwc_pixels  [taps][C*m] acc, bias [C*m] acc
//   nhwc_tiles, nhwc_windows, channel_blocks  [block][taps + 1][kLanes] float (the taps, then
//                the bias; the taps reversed for a flipped forward)
struct KernelArgs {
  Dtype dtype = Dtype::kFloat;
  const void* src = nullptr;    // forward: input; backward: grad_output
  const void* src2 = nullptr;   // backward-weight: input
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* dst = nullptr;          // forward: output; backward-input: grad_input;
                                // backward-weight: partial sums (nhwc_pixels: acc
                                // [chunk][taps + 1][C*m]; channel_blocks: float
                                // [item][group_blocks][taps + 1][kLanes])
  double* grad_weight = nullptr;  // backward-weight of nchw_planes: [C*m][taps]
  double* grad_bias = nullptr;    // and [C*m]
  BlockedGeometry blocked;        // channel_blocks
  int64_t rows_per_chunk = 0;     // nhwc_pixels backward-weight
};

// The entry points, X(ARG, name), and their work items:
//   forward_nchw_planes          input planes (n, c)
//   forward_nhwc_pixels          output rows (n, oh)
//   forward_nhwc_tiles           (n, oh, tile_group) in strips of rows (tile_item)
//   forward_nhwc_windows         the same
//   forward_blocked              BlockedGeometry items
//   backward_input_nchw_planes   input planes (n, c)
//   backward_input_nhwc_pixels   input rows (n, ih)
//   backward_weight_nchw_planes  input channels c
//   backward_weight_nhwc_pixels  (chunk of rows_per_chunk output rows, kLanes-channel block),
//                                chunk-major (partial sums)
//   backward_weight_blocked      BlockedGeometry items, geometry for a fixed thread count
//                                (partial sums)
#define FASTDW_CPU_ENTRY_POINTS(X, ARG) \
  X(ARG, forward_nchw_planes)           \
  X(ARG, forward_nhwc_pixels)           \
  X(ARG, forward_nhwc_tiles)            \
  X(ARG, forward_nhwc_windows)          \
  X(ARG, forward_blocked)               \
  X(ARG, backward_input_nchw_planes)    \
  X(ARG, backward_input_nhwc_pixels)    \
  X(ARG, backward_weight_nchw_planes)   \
  X(ARG, backward_weight_nhwc_pixels)   \
  X(ARG, backward_weight_blocked)

enum class Entry : int {
#define FASTDW_ENTRY_ENUM(ARG, NAME) NAME,
  FASTDW_CPU_ENTRY_POINTS(FASTDW_ENTRY_ENUM, )
#undef FASTDW_ENTRY_ENUM
};
constexpr int kEntryCount = 0
#define FASTDW_ENTRY_COUNT(ARG, NAME) +1
    FASTDW_CPU_ENTRY_POINTS(FASTDW_ENTRY_COUNT, )
#undef FASTDW_ENTRY_COUNT
    ;

// The one signature, declared in every ISA copy's namespace.
#define FASTDW_DECLARE_ENTRY(ISA, NAME)                                                     \
  FASTDW_TARGET_##ISA void NAME(const DepthwiseParams& p, const KernelArgs& a, int64_t begin, \
                                int64_t end);
#define FASTDW_DECLARE_ISA_COPY(ISA, NEEDS) \
  namespace ISA {                           \
  FASTDW_CPU_ENTRY_POINTS(FASTDW_DECLARE_ENTRY, ISA)  \
  }
FASTDW_CPU_ISAS(FASTDW_DECLARE_ISA_COPY)
#undef FASTDW_DECLARE_ISA_COPY

using EntryFn = void (*)(const DepthwiseParams&, const KernelArgs&, int64_t, int64_t);

// The copy of an entry point built for `isa`.
inline EntryFn entry_point(Isa isa, Entry e) {
  static const EntryFn table[kIsaCount][kEntryCount] = {
#define FASTDW_ENTRY_ADDRESS(ISA, NAME) &ISA::NAME,
#define FASTDW_ISA_ROW(ISA, NEEDS) {FASTDW_CPU_ENTRY_POINTS(FASTDW_ENTRY_ADDRESS, ISA)},
      FASTDW_CPU_ISAS(FASTDW_ISA_ROW)
#undef FASTDW_ENTRY_ADDRESS
#undef FASTDW_ISA_ROW
  };
  return table[int(isa)][int(e)];
}

}  // namespace cpu
}  // namespace fastdw
