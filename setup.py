"""Builds cnnext._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

Environment:
  CNNEXT_SANITIZE=1   compile with AddressSanitizer + UndefinedBehaviorSanitizer (make test-asan)
  CNNEXT_NO_CUDA=1    skip the CUDA sources even where they could be built
  CNNEXT_DEBUG=1      -O0 -g
  TORCH_CUDA_ARCH_LIST  CUDA architectures, e.g. "9.0" or "8.0;9.0+PTX". Unset: torch's
                      cpp_extension builds for every visible GPU's capability, the highest with
                      PTX too (sm_90 + compute_90 PTX on an H200). With no GPU visible we default
                      to "8.0;9.0+PTX" (torch would fail on an empty list). The kernels need sm_80+.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def _flag(name):
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def _extension():
    import torch

    here = os.path.dirname(os.path.abspath(__file__))
    # Filter on the path relative to the project: the checkout itself may sit under a "cuda" dir.
    cpu_sources = sorted(
        rel
        for rel in (
            os.path.relpath(p, here)
            for p in glob.glob(os.path.join(here, "csrc", "**", "*.cpp"), recursive=True)
        )
        if not rel.startswith(os.path.join("csrc", "cuda") + os.sep)
    )
    # csrc/cuda: kernels (*.cu, CUDA headers only) and their torch bindings (*.cpp, host code).
    cuda_sources = sorted(
        os.path.relpath(p, here)
        for pattern in ("*.cu", "*.cpp")
        for p in glob.glob(os.path.join(here, "csrc", "cuda", pattern))
    )
    with_cuda = (
        not _flag("CNNEXT_NO_CUDA")
        and torch.version.cuda is not None
        and CUDA_HOME is not None
        and bool(cuda_sources)
    )
    opt = ["-O0", "-g"] if _flag("CNNEXT_DEBUG") else ["-O3"]
    # No -march=native: SIMD kernels pick their ISA at run time (function target attributes).
    cxx = opt + ["-fopenmp", "-std=c++17", "-Wall", "-Wno-unknown-pragmas"]
    link = ["-fopenmp"]
    if _flag("CNNEXT_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        cxx += san + ["-g"]
        link += san
    define_macros = [("WITH_CUDA", None)] if with_cuda else []
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        nvcc = opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            "cnnext._C",
            cpu_sources + cuda_sources,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
            define_macros=define_macros,
        )
    return CppExtension(
        "cnnext._C", cpu_sources, extra_compile_args={"cxx": cxx}, extra_link_args=link
    )


setup(
    packages=find_packages(include=["cnnext", "cnnext.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
