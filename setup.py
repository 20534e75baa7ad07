"""Builds fastdw._C: the C++ CPU kernels always, the CUDA kernels when they can be compiled.

Environment knobs:
  FASTDW_CUDA=auto|1|0   auto (default): build CUDA when torch is a CUDA build and nvcc exists
                         (a GPU is not needed); 1: require it; 0: CPU only.
  TORCH_CUDA_ARCH_LIST   honoured; defaults to "8.0;9.0" when unset and no GPU is visible.
  FASTDW_DEBUG=1         -O0 -g, device line info.
  MAX_JOBS               ninja parallelism; capped by free memory (~2.5 GB per job).
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(msg):
    print(f"[fastdw setup] {msg}", file=sys.stderr, flush=True)


def _locate_cuda_home():
    # /usr/local/bin/nvcc may be a wrapper script, which makes torch guess CUDA_HOME=/usr/local;
    # resolve the real toolkit before torch.utils.cpp_extension reads the environment.
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for candidate in ("/usr/local/cuda", "/opt/cuda"):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


def _cap_max_jobs():
    if "MAX_JOBS" in os.environ:
        return
    try:
        with open("/proc/meminfo") as f:
            avail_kb = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable"))
        by_memory = max(1, int(avail_kb / (2.5 * 1024 * 1024)))
    except (OSError, StopIteration):
        by_memory = 2
    os.environ["MAX_JOBS"] = str(max(1, min(os.cpu_count() or 1, by_memory)))


cuda_home = _locate_cuda_home()
if cuda_home:
    os.environ.setdefault("CUDA_HOME", cuda_home)
_cap_max_jobs()

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

mode = os.environ.get("FASTDW_CUDA", "auto").lower()
debug = os.environ.get("FASTDW_DEBUG", "0") == "1"
have_nvcc = bool(cuda_home) and os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
if mode == "0":
    build_cuda, why = False, "FASTDW_CUDA=0"
elif torch.version.cuda is None:
    build_cuda, why = False, f"torch {torch.__version__} is a CPU build"
elif not have_nvcc:
    build_cuda, why = False, "nvcc not found"
elif not cuda_sources:
    build_cuda, why = False, "no CUDA sources in csrc/cuda"
else:
    build_cuda, why = True, f"torch CUDA {torch.version.cuda}, nvcc in {cuda_home}"
if mode == "1" and not build_cuda:
    raise RuntimeError(f"FASTDW_CUDA=1 but the CUDA kernels cannot be built: {why}")

cpu_sources = ["csrc/module.cpp", "csrc/ops.cpp"] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
# Threads come from ATen's at::parallel_for (torch.set_num_threads governs them). With torch's
# OpenMP backend that is an inline template around `#pragma omp parallel`, compiled into *this*
# module: without -fopenmp it silently runs every kernel on one thread. Linking -fopenmp asks for
# libgomp.so.1, which resolves to the copy torch has already loaded, so there is one runtime and
# one thread pool. -fopenmp-simd alone would give only the `omp simd` hints.
# No -std flag: torch.utils.cpp_extension picks the standard its headers need (C++20 in 2.14).
openmp = "OpenMP" in torch.__config__.parallel_info() and sys.platform.startswith("linux")
openmp_flags = ["-fopenmp"] if openmp else ["-fopenmp-simd"]
link_flags = ["-fopenmp"] if openmp else []
cxx_flags = opt + openmp_flags + ["-fno-math-errno", "-ffp-contract=fast", "-Wall",
                                  "-Wno-unknown-pragmas", "-Wno-psabi"]
include_dirs = [os.path.join(ROOT, "csrc")]

if build_cuda:
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # Without a visible GPU torch cannot infer the arch list and the build would fail.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    # Headers such as cusparse.h ship in the nvidia wheels, not always in the toolkit.
    for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
        for site in sys.path:
            include_dirs += sorted(glob.glob(os.path.join(site, pattern)))
    nvcc_flags = (["-O0", "-G"] if debug else ["-O3", "-lineinfo"]) + [
        "--expt-relaxed-constexpr",
        "-U__CUDA_NO_HALF_OPERATORS__",
        "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-U__CUDA_NO_HALF2_OPERATORS__",
    ]
    ext = CUDAExtension(
        "fastdw._C",
        cpu_sources + cuda_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags + ["-DFASTDW_WITH_CUDA"], "nvcc": nvcc_flags + ["-DFASTDW_WITH_CUDA"]},
        extra_link_args=link_flags,
    )
    _log(f"building CPU + CUDA ({why}); archs {os.environ.get('TORCH_CUDA_ARCH_LIST')}; "
         f"MAX_JOBS={os.environ['MAX_JOBS']}")
else:
    ext = CppExtension("fastdw._C", cpu_sources, include_dirs=include_dirs,
                       extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    _log(f"building CPU only ({why}); MAX_JOBS={os.environ['MAX_JOBS']}")

setup(
    name="fastdw",
    version="0.1.0",
    description="Fast depthwise and depthwise-separable convolutions for PyTorch",
    packages=find_packages(include=["fastdw", "fastdw.*"]),
    package_data={"fastdw": ["bench_suites/*.json"]},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.6"],
)
