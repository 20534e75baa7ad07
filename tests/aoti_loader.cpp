// Runs an AOTInductor package from C++, with no Python: the recipe of docs/shipping.md, built
// and run by tests/test_export_aoti.py.
//
//   aoti_loader <fastdw library | -> <package.pt2> N C H W
//
// Loads the fastdw library (fastdw.export.library_path(); "-" loads none, to show the error),
// runs the package on sin(0.37 * arange) reshaped to (N, C, H, W) and prints the output's
// sizes, then its values, one per line.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s <fastdw library | -> <package.pt2> N C H W\n", argv[0]);
    return 2;
  }
  if (std::string(argv[1]) != "-" &&
      // RTLD_LAZY: the library's two Python C-API functions stay unresolved (never called).
      // RTLD_GLOBAL: as torch.ops.load_library does.
      dlopen(argv[1], RTLD_LAZY | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
    return 2;
  }
  std::vector<int64_t> shape;
  for (int i = 3; i < 7; ++i) shape.push_back(std::atoll(argv[i]));
  int64_t numel = shape[0] * shape[1] * shape[2] * shape[3];
  at::Tensor input = at::arange(numel, at::kFloat).mul(0.37).sin().reshape(shape);

  at::Tensor out;
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[2]);
    out = loader.run({input}).at(0).contiguous();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  for (int64_t size : out.sizes()) std::printf("%lld ", static_cast<long long>(size));
  std::printf("\n");
  const float* values = out.data_ptr<float>();
  for (int64_t i = 0; i < out.numel(); ++i) std::printf("%.9g\n", values[i]);
  return 0;
}
