// Backward-input, channels_last: the kernel of nhwc.cuh with BWD = true.
#include "launchers.h"
#include "nhwc.cuh"

namespace fastdw {
namespace cuda {

bool backward_input_nhwc(const at::Tensor& g, const at::Tensor& w, at::Tensor& grad_input,
                         const DepthwiseParams& p) {
  bool launched = false;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "fastdw_depthwise_backward_input_nhwc_cuda", [&] {
    launched = launch_nhwc<scalar_t, true>(
        g.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), nullptr,
        grad_input.mutable_data_ptr<scalar_t>(), p, stream);
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
