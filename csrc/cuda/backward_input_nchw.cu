// Backward-input, NCHW: the tiled kernel of nchw_tiled.cuh with BWD = true.
#include "launchers.h"
#include "nchw_tiled.cuh"

namespace fastdw {
namespace cuda {

bool backward_input_nchw(const at::Tensor& g, const at::Tensor& w, at::Tensor& grad_input,
                         const DepthwiseParams& p) {
  bool launched = false;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "fastdw_depthwise_backward_input_nchw_cuda", [&] {
    launched = launch_nchw_tiled<scalar_t, true>(
        g.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), nullptr,
        grad_input.mutable_data_ptr<scalar_t>(), p, stream);
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
