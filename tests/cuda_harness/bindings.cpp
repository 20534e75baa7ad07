// The harness's surface: csrc/cuda's three op functions (ops.h), unchanged, registered as
// torch.ops.fastdw_cudasim.* on CPU tensors (their launches run in the simulator), plus the
// simulator's settings and launch counters as a Python module. See README.md.
#include <ATen/Context.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "cuda/ops.h"
#include "sim/control.h"

namespace {

// What the host code allocates (outputs, partial sums) is NaN-filled for the duration of a call,
// as torch does under use_deterministic_algorithms: an element no kernel writes shows as NaN.
class PoisonUninitialized {
 public:
  PoisonUninitialized()
      : algorithms_(at::globalContext().deterministicAlgorithms()),
        warn_only_(at::globalContext().deterministicAlgorithmsWarnOnly()),
        fill_(at::globalContext().deterministicFillUninitializedMemory()) {
    at::globalContext().setDeterministicAlgorithms(true, false);
    at::globalContext().setDeterministicFillUninitializedMemory(true);
  }
  ~PoisonUninitialized() {
    at::globalContext().setDeterministicAlgorithms(algorithms_, warn_only_);
    at::globalContext().setDeterministicFillUninitializedMemory(fill_);
  }

 private:
  bool algorithms_, warn_only_, fill_;
};

at::Tensor depthwise_conv2d(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation) {
  PoisonUninitialized poison;
  return fastdw::cuda::depthwise_conv2d(input, weight, bias, stride, padding, dilation);
}

at::Tensor depthwise_conv2d_backward_input(const at::Tensor& grad_output,
                                           const at::Tensor& weight, c10::IntArrayRef input_size,
                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                           c10::IntArrayRef dilation) {
  PoisonUninitialized poison;
  return fastdw::cuda::depthwise_conv2d_backward_input(grad_output, weight, input_size, stride,
                                                       padding, dilation);
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, c10::IntArrayRef weight_size,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation) {
  PoisonUninitialized poison;
  return fastdw::cuda::depthwise_conv2d_backward_weight(grad_output, input, weight_size, stride,
                                                        padding, dilation);
}

}  // namespace

// Schemas inferred from the functions: the arguments of torch.ops.fastdw.* in the same order.
TORCH_LIBRARY(fastdw_cudasim, m) {
  m.def("depthwise_conv2d", &depthwise_conv2d);
  m.def("depthwise_conv2d_backward_input", &depthwise_conv2d_backward_input);
  m.def("depthwise_conv2d_backward_weight", &depthwise_conv2d_backward_weight);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "csrc/cuda's kernels in a CUDA simulator on the CPU (tests/cuda_harness)";
  m.def(
      "configure",
      [](const std::string& order, const std::string& shared_poison) {
        TORCH_CHECK(order == "forward" || order == "reverse",
                    "cuda_sim: order must be 'forward' or 'reverse', got ", order);
        TORCH_CHECK(shared_poison == "nan" || shared_poison == "finite",
                    "cuda_sim: shared_poison must be 'nan' or 'finite', got ", shared_poison);
        cuda_sim::Settings s;
        s.order = order == "reverse" ? cuda_sim::Order::kReverse : cuda_sim::Order::kForward;
        s.shared_poison = shared_poison == "nan" ? 0xff : 0x41;
        cuda_sim::configure(s);
      },
      pybind11::arg("order"), pybind11::arg("shared_poison"),
      "Thread/block order ('forward' or 'reverse') and shared-memory poison ('nan': 0xff bytes, "
      "'finite': 0x41 bytes) for the launches that follow.");
  m.def("kernel_launches", &cuda_sim::kernel_launches,
        "[(kernel, launches)] for every kernel instantiation the host code can launch.");
  m.def("reset_launch_counts", &cuda_sim::reset_launch_counts);
}
