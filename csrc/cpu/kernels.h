#pragma once
// CPU kernel entry points. Each processes a contiguous range [begin, end) of independent work
// items so that the host code can parallelise with at::parallel_for (torch.set_num_threads
// governs them) while these translation units stay free of torch headers.
//
// scalar_t is the tensor dtype; acc_t the accumulation type (float for bf16/fp16). Weights and
// bias arrive pre-converted to acc_t by the host, in the layout each kernel documents.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "depthwise.h"

namespace fastdw {
namespace cpu {

// Forward. NCHW: work item = output row (n, co, oh); weight [Cout][kh*kw].
//          NHWC: work item = output row (n, oh);     weight [kh*kw][Cout].
// bias may be null.
template <typename scalar_t, typename acc_t>
void forward_nchw(const DepthwiseParams& p, const scalar_t* input, const acc_t* weight,
                  const acc_t* bias, scalar_t* output, int64_t begin, int64_t end);
template <typename scalar_t, typename acc_t>
void forward_nhwc(const DepthwiseParams& p, const scalar_t* input, const acc_t* weight,
                  const acc_t* bias, scalar_t* output, int64_t begin, int64_t end);

// Backward-input, as a gather so that each work item owns what it writes (no races).
// NCHW: work item = input row (n, c, ih); weight [Cout][kh*kw].
// NHWC: work item = input row (n, ih);    weight [kh*kw][Cout].
template <typename scalar_t, typename acc_t>
void backward_input_nchw(const DepthwiseParams& p, const scalar_t* grad_output,
                         const acc_t* weight, scalar_t* grad_input, int64_t begin, int64_t end);
template <typename scalar_t, typename acc_t>
void backward_input_nhwc(const DepthwiseParams& p, const scalar_t* grad_output,
                         const acc_t* weight, scalar_t* grad_input, int64_t begin, int64_t end);

// Backward-weight and bias, deterministic whatever the thread count.
// NCHW: work item = output channel co; writes grad_weight[co][kh*kw] and grad_bias[co].
template <typename scalar_t>
void backward_weight_nchw(const DepthwiseParams& p, const scalar_t* grad_output,
                          const scalar_t* input, double* grad_weight, double* grad_bias,
                          int64_t begin, int64_t end);
// NHWC, in two passes. Pass 1: work item = chunk of `rows_per_chunk` output rows (n, oh);
// writes partial[chunk][kh*kw + 1][Cout] (the last slot is the bias). Pass 2 (reduce): work
// item = output channel; sums the partials in chunk order.
int64_t backward_weight_nhwc_rows_per_chunk(const DepthwiseParams& p);
template <typename scalar_t, typename acc_t>
void backward_weight_nhwc_partials(const DepthwiseParams& p, const scalar_t* grad_output,
                                   const scalar_t* input, int64_t rows_per_chunk, acc_t* partial,
                                   int64_t begin, int64_t end);
template <typename acc_t>
void backward_weight_nhwc_reduce(const DepthwiseParams& p, const acc_t* partial,
                                 int64_t num_chunks, double* grad_weight, double* grad_bias,
                                 int64_t begin, int64_t end);

}  // namespace cpu
}  // namespace fastdw
