#pragma once
// Channel-blocked CPU kernels (blocked.inc): their work decomposition, shared by the host code
// and the kernels, and their entry points per instruction set.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cpu/isa.h"
#include "depthwise.h"

namespace fastdw {
namespace cpu {

// Channels per block: one AVX-512 register of floats (two AVX2 registers).
constexpr int64_t kLanes = 16;

struct BlockedItem {
  int64_t n, b0, blocks;      // image, first channel block, number of blocks
  int64_t oh_begin, oh_end;   // output rows
};

// Work items are (image, group of channel blocks, strip of output rows), numbered strip-fastest.
// An item's scratch is a ring of the padded input rows that one output row reads,
// [block][ring slot][column][kLanes] floats. The decomposition depends on the shape and the thread count, never on the data, and
// changes no result: each output element is computed by exactly one item, with a fixed order of
// taps (backward-weight reduces per-item partial sums in item order).
struct BlockedGeometry {
  int64_t batch, blocks, group_blocks, groups, strips, rows_per_strip, out_h;
  int64_t padded_w;  // scratch columns: those the taps of out_w outputs reach
  int64_t dilation_h, kernel_h;

  int64_t items() const { return batch * groups * strips; }
  // Input rows one output row reads: the ring of rows kept per channel block.
  int64_t ring_rows() const { return (kernel_h - 1) * dilation_h + 1; }
  int64_t scratch_floats() const { return group_blocks * ring_rows() * padded_w * kLanes; }
  BlockedItem item(int64_t i) const {
    const int64_t s = i % strips, rest = i / strips, grp = rest % groups;
    const int64_t b0 = grp * group_blocks, begin = s * rows_per_strip;
    return {rest / groups, b0, std::min(group_blocks, blocks - b0), begin,
            std::min(out_h, begin + rows_per_strip)};
  }
};

// Groups keep an item's ring of rows near 64 KiB (within the L2 cache, close to L1) while
// there are a few items per thread; strips exist only to make those items.
inline BlockedGeometry blocked_geometry(const DepthwiseParams& p, int64_t threads) {
  BlockedGeometry g;
  g.batch = p.batch;
  g.blocks = (p.in_channels + kLanes - 1) / kLanes;
  g.out_h = p.out_h;
  g.padded_w = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  g.dilation_h = p.dilation_h;
  g.kernel_h = p.kernel_h;
  const int64_t block_bytes = g.ring_rows() * g.padded_w * kLanes * int64_t(sizeof(float));
  const int64_t max_group = std::max<int64_t>(1, (64 << 10) / block_bytes);
  g.groups = (g.blocks + max_group - 1) / max_group;
  g.group_blocks = (g.blocks + g.groups - 1) / g.groups;
  g.groups = (g.blocks + g.group_blocks - 1) / g.group_blocks;
  const int64_t base = g.batch * g.groups;
  const int64_t want_strips = std::max<int64_t>(1, (4 * threads + base - 1) / base);
  g.rows_per_strip = std::max<int64_t>(1, (p.out_h + want_strips - 1) / want_strips);
  g.strips = (p.out_h + g.rows_per_strip - 1) / g.rows_per_strip;
  return g;
}

// Whether an item's ring of rows is of reasonable size (pathological padding or dilation makes
// it huge; those shapes keep the other kernels, which visit only in-bounds taps).
inline bool blocked_fits(const DepthwiseParams& p, const BlockedGeometry& g) {
  const double floats = double(g.ring_rows()) * double(g.padded_w) * kLanes;
  const double plane = double(p.in_h) * double(p.in_w) + double(p.out_h) * double(p.out_w);
  return floats <= std::max(4.0 * plane * kLanes, double(1 << 20));
}

// std::allocator with 64-byte alignment (a whole vector per scratch pixel, one cache line).
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
  }
  void deallocate(T* ptr, std::size_t) { ::operator delete(ptr, std::align_val_t(64)); }
  bool operator==(const AlignedAllocator&) const { return true; }
};

// The shapes the in-place channels_last forward is compiled for.
inline bool direct_nhwc_fits(const DepthwiseParams& p) {
  const bool square = p.kernel_h == p.kernel_w && p.stride_h == p.stride_w;
  return p.channels_last && p.multiplier == 1 && square && p.dilation_h == 1 &&
         p.dilation_w == 1 && (p.kernel_h == 3 || p.kernel_h == 5 || p.kernel_h == 7) &&
         (p.stride_h == 1 || p.stride_h == 2);
}

// The channel blocks [b0, b0 + nb) of one work item of the in-place channels_last forward; full:
// all kLanes channels of each block exist.
struct DirectGroup {
  int64_t b0, nb;
  bool full;
};

// Groups of 4 full blocks, then one of 2 and one of 1 for the rest, then the partial block.
inline int64_t direct_group_count(int64_t channels) {
  const int64_t full = channels / kLanes;
  return full / 4 + (full % 4) / 2 + (full % 2) + (channels % kLanes != 0);
}
inline DirectGroup direct_group(int64_t channels, int64_t g) {
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

// The tensor dtypes the channel-blocked kernels are instantiated for: M(type) for each.
#define FASTDW_BLOCKED_DTYPES(M) M(float) M(c10::BFloat16) M(c10::Half)

#define FASTDW_DECLARE_BLOCKED_KERNELS(ATTR)                                                  \
  /* Forward, multiplier 1; packed as for forward_direct_nhwc. Items [begin, end) of g. */  \
  template <typename scalar_t>                                                              \
  ATTR void forward_blocked(const DepthwiseParams& p, const BlockedGeometry& g,             \
                            const scalar_t* input, const float* packed, scalar_t* output,   \
                            int64_t begin, int64_t end);                                    \
  /* Backward-weight pass 1, multiplier 1: partial[item][block][taps + 1][kLanes] floats. */  \
  template <typename scalar_t>                                                              \
  ATTR void backward_weight_blocked(const DepthwiseParams& p, const BlockedGeometry& g,     \
                                    const scalar_t* grad_output, const scalar_t* input,     \
                                    float* partial, int64_t begin, int64_t end);              \
  /* Channels_last forward reading the input in place (direct_nhwc.inc), for direct_nhwc_fits \
     shapes; packed [block][taps + 1][kLanes] floats (taps, then bias). Items: (n, oh, group). */ \
  template <typename scalar_t>                                                              \
  ATTR void forward_direct_nhwc(const DepthwiseParams& p, const scalar_t* input,            \
                                const float* packed, scalar_t* output, int64_t begin,       \
                                int64_t end);

namespace generic {
FASTDW_DECLARE_BLOCKED_KERNELS()
}
namespace avx2 {
FASTDW_DECLARE_BLOCKED_KERNELS(FASTDW_TARGET_AVX2)
}
namespace avx512 {
FASTDW_DECLARE_BLOCKED_KERNELS(FASTDW_TARGET_AVX512)
}

}  // namespace cpu
}  // namespace fastdw
