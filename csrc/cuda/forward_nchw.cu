// Forward, NCHW: the shared-memory tiled kernel (nchw_tiled.cuh) instantiated for every dtype
// and kernel variant.
#include "launchers.h"
#include "nchw_tiled.cuh"

namespace fastdw {
namespace cuda {

bool forward_nchw(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::Tensor& out,
                  const DepthwiseParams& p) {
  bool launched = false;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "fastdw_depthwise_forward_nchw_cuda", [&] {
    launched = launch_nchw_tiled<scalar_t, false>(
        x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
        p, stream);
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
