"""Builds the CUDA harness: csrc/cuda's own sources, compiled as C++ by g++ with the simulator
(sim/), under AddressSanitizer and UndefinedBehaviorSanitizer, as the Python extension
``fastdw_cudasim`` (see README.md).

    python tests/cuda_harness/build.py         builds it (ninja: only what changed is rebuilt)
    python tests/cuda_harness/build.py --env   prints the NAME=VALUE settings a process that
                                               loads it needs, for `env $(...) python ...`
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parents[1]
CUDA_SOURCES = ROOT / "csrc" / "cuda"
BUILD = ROOT / "build" / "cuda_harness"

# register.cu binds the op functions to the dispatcher's CUDA key; bindings.cpp binds the same
# functions to the harness's own op namespace instead.
EXCLUDED = {"register.cu"}

# Images at or above this many elements take the 64-bit fallback kernels (2^31 - 1 in the real
# build): the harness reaches those kernels with small tensors.
INDEX32_LIMIT = 1 << 14

SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-sanitize-recover=all",
              "-fno-omit-frame-pointer"]
CFLAGS = ["-O1", "-g1", "-DFASTDW_CUDA_SIM", f"-DFASTDW_INDEX32_LIMIT={INDEX32_LIMIT}",
          "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-function", "-Wno-psabi"] + SANITIZERS


def kernel_sources() -> list[Path]:
    return sorted(p for p in CUDA_SOURCES.glob("*.cu") if p.name not in EXCLUDED)


def _cpp_wrappers() -> list[Path]:
    # torch.utils.cpp_extension hands a .cu file to nvcc: each one is compiled through a one-line
    # .cpp that includes it. Rewritten only when its text changes, so ninja's timestamps hold.
    out = BUILD / "sources"
    out.mkdir(parents=True, exist_ok=True)
    wrappers = []
    for cu in kernel_sources():
        wrapper = out / f"{cu.stem}.cpp"
        text = f'#include "{cu}"\n'
        if not wrapper.exists() or wrapper.read_text() != text:
            wrapper.write_text(text)
        wrappers.append(wrapper)
    return wrappers


def _gxx_library(name: str) -> str:
    path = subprocess.run(["g++", f"-print-file-name={name}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        raise RuntimeError(f"g++ has no {name} (install the compiler's runtime libraries)")
    return os.path.realpath(path)


def preload() -> str:
    """LD_PRELOAD for a process that loads the harness: ASan's runtime must be the first library
    loaded, and libstdc++ must be loaded when it starts (its __cxa_throw interceptor binds then;
    without it the first C++ exception aborts the process)."""
    return f"{_gxx_library('libasan.so')}:{_gxx_library('libstdc++.so')}"


def harness_settings() -> dict:
    """What a process that loads the harness needs: the ASan runtime preloaded, leak checks off
    (Python and torch keep allocations to exit), any sanitizer report fatal."""
    return {"LD_PRELOAD": preload(),
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:halt_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def asan_environment(env=None) -> dict:
    """`env` (default: this process's environment) with harness_settings()."""
    return {**(os.environ if env is None else env), **harness_settings()}


def asan_preloaded() -> bool:
    return "libasan" in os.environ.get("LD_PRELOAD", "")


def build(verbose: bool = False):
    """Compiles what changed and imports the extension module (needs the ASan runtime
    preloaded into this process)."""
    from torch.utils.cpp_extension import load

    sources = _cpp_wrappers() + [HARNESS / "sim" / "cuda_sim.cpp", HARNESS / "bindings.cpp",
                                 HARNESS / "selftest_kernels.cpp"]
    BUILD.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", "2")
    return load(name="fastdw_cudasim", sources=[str(s) for s in sources],
                extra_cflags=CFLAGS, extra_ldflags=SANITIZERS,
                extra_include_paths=[str(HARNESS / "include"), str(ROOT / "csrc"), str(HARNESS)],
                build_directory=str(BUILD), verbose=verbose)


if __name__ == "__main__":
    if sys.argv[1:] == ["--env"]:
        print(" ".join(f"{k}={v}" for k, v in harness_settings().items()))
        sys.exit(0)
    if not asan_preloaded():
        # Re-run this script with the runtime the extension needs preloaded.
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], asan_environment())
    build(verbose=True)
    print("fastdw_cudasim built in", BUILD)
