#pragma once
// CPU kernel entry points, compiled once per instruction set (namespaces generic and avx2; see
// isa.h). Each processes a contiguous range [begin, end) of independent work items so that the
// host code can parallelise with at::parallel_for (torch.set_num_threads governs them) while the
// kernel translation units stay free of torch headers.
//
// scalar_t is the tensor dtype, acc_t the accumulation type (float for bf16/fp16). Weights and
// bias arrive pre-converted to acc_t, laid out [Cout][kh*kw] for NCHW kernels and [kh*kw][Cout]
// for NHWC kernels; bias may be null. Weight gradients are written in double.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cpu/isa.h"
#include "depthwise.h"

#define FASTDW_DECLARE_CPU_KERNELS(ATTR)                                                        \
  /* Forward. NCHW: work item = input plane (n, c); NHWC: output row (n, oh). */               \
  template <typename scalar_t, typename acc_t>                                                \
  ATTR void forward_nchw(const DepthwiseParams& p, const scalar_t* input, const acc_t* weight, \
                         const acc_t* bias, scalar_t* output, int64_t begin, int64_t end);     \
  template <typename scalar_t, typename acc_t>                                                \
  ATTR void forward_nhwc(const DepthwiseParams& p, const scalar_t* input, const acc_t* weight, \
                         const acc_t* bias, scalar_t* output, int64_t begin, int64_t end);     \
  /* Backward-input. NCHW: work item = input plane (n, c); NHWC: input row (n, ih). */         \
  template <typename scalar_t, typename acc_t>                                                \
  ATTR void backward_input_nchw(const DepthwiseParams& p, const scalar_t* grad_output,        \
                                const acc_t* weight, scalar_t* grad_input, int64_t begin,      \
                                int64_t end);                                                  \
  template <typename scalar_t, typename acc_t>                                                \
  ATTR void backward_input_nhwc(const DepthwiseParams& p, const scalar_t* grad_output,        \
                                const acc_t* weight, scalar_t* grad_input, int64_t begin,      \
                                int64_t end);                                                  \
  /* Backward-weight and bias. NCHW: work item = input channel c (all its multiplier        */ \
  /* outputs). NHWC: pass 1 over chunks of output rows into partial[chunk][taps + 1][Cout], */ \
  /* pass 2 over output channels adding the partials in chunk order.                        */ \
  template <typename scalar_t, typename acc_t>                                                \
  ATTR void backward_weight_nchw(const DepthwiseParams& p, const scalar_t* grad_output,       \
                                 const scalar_t* input, double* grad_weight, double* grad_bias, \
                                 int64_t begin, int64_t end);                                  \
  template <typename scalar_t, typename acc_t>                                                \
  ATTR void backward_weight_nhwc_partials(const DepthwiseParams& p,                           \
                                          const scalar_t* grad_output, const scalar_t* input, \
                                          int64_t rows_per_chunk, acc_t* partial,              \
                                          int64_t begin, int64_t end);                         \
  template <typename acc_t>                                                                   \
  ATTR void backward_weight_nhwc_reduce(const DepthwiseParams& p, const acc_t* partial,       \
                                        int64_t num_chunks, double* grad_weight,               \
                                        double* grad_bias, int64_t begin, int64_t end);

namespace fastdw {
namespace cpu {
namespace generic {
FASTDW_DECLARE_CPU_KERNELS()
}
namespace avx2 {
FASTDW_DECLARE_CPU_KERNELS(FASTDW_TARGET_AVX2)
}

// Rows of the NHWC backward-weight partial pass per chunk: depends on the shape only, never on
// the thread count, so the summation order is fixed.
int64_t backward_weight_nhwc_rows_per_chunk(const DepthwiseParams& p);

}  // namespace cpu
}  // namespace fastdw
