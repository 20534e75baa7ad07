// Forward, channels_last: the channel-vectorised kernel (nhwc.cuh) instantiated for every
// dtype and kernel variant.
#include "launchers.h"
#include "nhwc.cuh"

namespace fastdw {
namespace cuda {

bool forward_nhwc(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::Tensor& out,
                  const DepthwiseParams& p) {
  bool launched = false;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "fastdw_depthwise_forward_nhwc_cuda", [&] {
    launched = launch_nhwc<scalar_t, false>(
        x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
        p, stream);
  });
  return launched;
}

}  // namespace cuda
}  // namespace fastdw
