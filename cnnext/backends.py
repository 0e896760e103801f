"""Switches of cnnext's kernels, in the style of ``torch.backends``.

``cnnext.backends.cpu.benchmark = True`` is the CPU twin of ``torch.backends.cudnn.benchmark``:
the first CPU convolution of each problem (sizes, strides, padding, dilation, groups, dtype,
thread count, pass) times every algorithm that applies to it and keeps the fastest for the
later calls with that key. The first call is slower; results agree with the rule's choice
within the float tolerances documented in the README (algorithms differ in summation order,
Winograd in rounding). With the flag off (the default) the choice is the cost rule's: a
deterministic function of the problem.
"""
import contextlib

import torch

from . import ops as _ops  # noqa: F401  (loads the operators)


class _CpuBackend:
    @property
    def benchmark(self):
        return bool(torch.ops.cnnext._conv2d_benchmark(None))

    @benchmark.setter
    def benchmark(self, enabled):
        torch.ops.cnnext._conv2d_benchmark(bool(enabled))

    def benchmark_cache_clear(self):
        """Forget every measured choice."""
        torch.ops.cnnext._conv2d_benchmark_cache(True)

    def benchmark_cache_size(self):
        """Number of measured choices held (bounded: emptied when it reaches 4,096)."""
        return int(torch.ops.cnnext._conv2d_benchmark_cache(False))

    @contextlib.contextmanager
    def flags(self, benchmark):
        """Sets ``benchmark`` for a block, then restores the previous value."""
        previous = self.benchmark
        self.benchmark = benchmark
        try:
            yield
        finally:
            self.benchmark = previous

    def isa(self):
        """The ISA the CPU kernels run: "avx512", "avx2" or "portable" (CNNEXT_ISA narrows it)."""
        return str(torch.ops.cnnext._cpu_isa())

    def bf16_isa(self):
        """What bfloat16 convolution products run on: "avx512bf16" (the CPU's pair dot
        products, float32 accumulation) or "float32" (the float32 kernels on converted copies,
        where the CPU lacks AVX512-BF16 or CNNEXT_ISA is "avx512", "avx2" or "portable")."""
        return str(torch.ops.cnnext._cpu_bf16_isa())

    def weight_cache_stats(self):
        """The inference weight cache (packed weights of unchanged weights, reused under
        torch.no_grad / inference_mode): dict of entries, bytes, hits and misses."""
        entries, nbytes, hits, misses = torch.ops.cnnext._weight_cache(False)
        return dict(entries=entries, bytes=nbytes, hits=hits, misses=misses)

    def weight_cache_clear(self):
        """Empties the inference weight cache and its counters."""
        torch.ops.cnnext._weight_cache(True)

    def algorithms(self, input_size, weight_size, stride=1, padding=0, dilation=1, groups=1,
                   dtype=torch.float32, pass_="forward", channels_last=False):
        """Names of the conv algorithms that apply to a problem (table order); channels_last:
        the problem with NHWC activations."""
        return list(torch.ops.cnnext._conv2d_algorithms(
            list(input_size), list(weight_size), *_pairs(stride, padding, dilation), groups,
            dtype, pass_, channels_last))

    def choice(self, input_size, weight_size, stride=1, padding=0, dilation=1, groups=1,
               dtype=torch.float32, pass_="forward", channels_last=False):
        """The algorithm the cost rule (or CNNEXT_CONV_ALGO) picks for a problem."""
        return str(torch.ops.cnnext._conv2d_choice(
            list(input_size), list(weight_size), *_pairs(stride, padding, dilation), groups,
            dtype, pass_, channels_last))


def _pairs(*values):
    return [list(v) if isinstance(v, (tuple, list)) else [v, v] for v in values]


cpu = _CpuBackend()
