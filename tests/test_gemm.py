"""cnnext.gemm (csrc/cpu/gemm) against float64 torch.mm, on every micro-kernel path this CPU has.

Shapes cover sizes below, at and just past the micro-tile (mr x nr: avx512 14x32 float / 14x16
double, avx2 6x16 / 6x8, portable 4x8 / 4x4), K = 1, odd K, K past one packed block (kc: 384
float / 192 double on avx512, 256 elsewhere) and N past one column block (nc = 640..1024), in all
four transpose combinations; plus the in-place B path (few rows, B not transposed).
"""
import itertools
import os
import subprocess
import sys

import pytest
import torch

import cnnext  # noqa: F401

ALL_ISAS = ["avx512", "avx2", "portable"]


def _supported(isa):
    try:
        torch.ops.cnnext.gemm(torch.ones(1, 1), torch.ones(1, 1), False, False, 1.0, 0.0, None, isa)
        return True
    except RuntimeError as e:
        assert "not supported by this CPU" in str(e)
        return False


ISAS = [isa for isa in ALL_ISAS if _supported(isa)]
DTYPES = [torch.float32, torch.float64]
TRANSPOSES = list(itertools.product([False, True], repeat=2))

SHAPES = [  # (M, N, K)
    (1, 1, 1),
    (7, 17, 33),
    (17, 33, 7),
    (33, 7, 17),
    (1, 70, 5),  # one row, several column slivers, in-place B
    (70, 1, 9),  # one column
    (3, 5, 1),  # K = 1, smaller than any micro-tile
    (15, 33, 385),  # edge tiles on both sides, K just past one float block
    (29, 65, 401),  # odd K past one block; few rows (in-place B when not transposed)
    (45, 97, 31),  # several row slivers with an edge sliver, 3+ column slivers
    (6, 784, 25),  # conv-shaped: LeNet first layer
    (6, 25, 1001),  # grad_weight-shaped (A * B^T: dot-product path), K tail
    (300, 16, 144),  # 16 columns, K under the dot path's minimum: packed, A * B^T too
    (75, 40, 20),  # more rows than the in-place-B limit on every path: packed B
]


def _operands(m, n, k, ta, tb, dtype):
    a = torch.randn((k, m) if ta else (m, k), dtype=dtype)
    b = torch.randn((n, k) if tb else (k, n), dtype=dtype)
    return a, b


def _reference(a, b, ta, tb, alpha=1.0, beta=0.0, c=None):
    a64 = (a.t() if ta else a).double()
    b64 = (b.t() if tb else b).double()
    out = alpha * (a64 @ b64)
    if beta != 0.0:
        out = out + beta * c.double()
    return out


def _check(actual, expected, dtype, k):
    assert actual.dtype == dtype
    assert torch.isfinite(actual).all()
    # float32 sums of k products of N(0,1) values: error grows with k (blocked order vs. torch).
    tol = dict(rtol=1e-5, atol=2e-6 * (k + 8)) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12 * (k + 8))
    torch.testing.assert_close(actual.double(), expected, **tol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_matches_float64_reference(isa, dtype, ta, tb):
    for m, n, k in SHAPES:
        a, b = _operands(m, n, k, ta, tb, dtype)
        out = torch.ops.cnnext.gemm(a, b, ta, tb, 1.0, 0.0, None, isa)
        assert out.shape == (m, n)
        _check(out, _reference(a, b, ta, tb), dtype, k)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (-2.0, 0.75), (0.5, 0.0), (0.0, 0.5), (0.0, 0.0)])
def test_alpha_beta(isa, dtype, alpha, beta):
    for (m, n, k), (ta, tb) in zip([(7, 17, 33), (6, 25, 1001), (45, 97, 1), (6, 784, 25)], TRANSPOSES):
        a, b = _operands(m, n, k, ta, tb, dtype)
        c = torch.randn(m, n, dtype=dtype)
        out = torch.ops.cnnext.gemm(a, b, ta, tb, alpha, beta, c, isa)
        _check(out, _reference(a, b, ta, tb, alpha, beta, c), dtype, k)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_beta_zero_never_reads_c(isa, dtype):
    # beta == 0 means C is write-only: NaN or Inf garbage in it must not reach the result.
    for (m, n, k), (ta, tb) in zip([(7, 17, 33), (29, 65, 401), (3, 5, 1), (45, 97, 31)], TRANSPOSES):
        a, b = _operands(m, n, k, ta, tb, dtype)
        for garbage in (float("nan"), float("inf")):
            c = torch.full((m, n), garbage, dtype=dtype)
            out = torch.ops.cnnext.gemm(a, b, ta, tb, 1.5, 0.0, c, isa)
            _check(out, _reference(a, b, ta, tb, 1.5), dtype, k)


@pytest.mark.parametrize("isa", ISAS)
def test_large_edge_tiles_and_threads(isa):
    # Several column blocks (N > nc), K blocks and a ragged last tile in both directions, large
    # enough that the work is split between threads.
    m, n, k = 131, 1401, 777
    for ta, tb in [(False, False), (True, True)]:
        a, b = _operands(m, n, k, ta, tb, torch.float32)
        c = torch.randn(m, n)
        out = torch.ops.cnnext.gemm(a, b, ta, tb, 0.25, -1.0, c, isa)
        _check(out, _reference(a, b, ta, tb, 0.25, -1.0, c), torch.float32, k)


@pytest.mark.parametrize("isa", ISAS)
def test_deterministic_and_thread_count_independent(isa):
    # Every C element is one FMA chain over K in a fixed order, whichever thread computes it,
    # so the result is bitwise identical across calls and across thread counts. Shapes: the
    # packed path and the dot-product path.
    threads = torch.get_num_threads()
    try:
        for m, n, k in [(300, 517, 450), (12, 30, 2000)]:
            a, b = _operands(m, n, k, False, True, torch.float32)
            torch.set_num_threads(threads)
            first = torch.ops.cnnext.gemm(a, b, False, True, 1.0, 0.0, None, isa)
            assert torch.equal(first, torch.ops.cnnext.gemm(a, b, False, True, 1.0, 0.0, None, isa))
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                assert torch.equal(first, torch.ops.cnnext.gemm(a, b, False, True, 1.0, 0.0, None, isa))
    finally:
        torch.set_num_threads(threads)


def test_isa_environment_override():
    # CNNEXT_ISA narrows the automatic choice: "auto" must then give bitwise the forced path.
    # The variable is read per call; one subprocess sets it before each ISA.
    script = (
        "import os, torch, cnnext\n"
        "torch.manual_seed(0)\n"
        "a, b = torch.randn(37, 301), torch.randn(301, 75)\n"
        "ref = a.double() @ b.double()\n"
        "for isa in {isas!r}:\n"
        "    os.environ['CNNEXT_ISA'] = isa\n"
        "    auto = torch.ops.cnnext.gemm(a, b, False, False, 1.0, 0.0, None, 'auto')\n"
        "    forced = torch.ops.cnnext.gemm(a, b, False, False, 1.0, 0.0, None, isa)\n"
        "    assert torch.equal(auto, forced), isa\n"
        "    assert (auto.double() - ref).abs().max() < 1e-3, isa\n"
        "    if isa == 'portable' and len({isas!r}) > 1:  # no FMA there: other roundings\n"
        "        best = torch.ops.cnnext.gemm(a, b, False, False, 1.0, 0.0, None, {isas!r}[0])\n"
        "        assert not torch.equal(auto, best), 'CNNEXT_ISA=portable was ignored'\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", script.format(isas=ISAS)], env=env, check=True, cwd=root)


def test_bad_arguments():
    a = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="cnnext.gemm: inner dimensions differ"):
        torch.ops.cnnext.gemm(a, a, False, False, 1.0, 0.0, None, "auto")
    with pytest.raises(RuntimeError, match="unknown isa='sse9'"):
        torch.ops.cnnext.gemm(a, a.t(), False, False, 1.0, 0.0, None, "sse9")
    with pytest.raises(RuntimeError, match="beta != 0 needs c"):
        torch.ops.cnnext.gemm(a, a.t(), False, False, 1.0, 1.0, None, "auto")


# ---- op(A) read in place (direct_a): few columns, A not transposed ----------------------------
# CNNEXT_GEMM_DIRECT_A (read per call): "0" packs op(A), "1" reads it in place whenever
# op(A) = A, unset chooses by shape. Both paths run the same FMA chain per element, so they must
# agree bitwise, not just within a tolerance.
DIRECT_A_SHAPES = [  # (M, N, K): partial slivers on both sides, odd K, K past one block
    (1, 1, 1),
    (13, 31, 7),  # one partial A sliver (mr = 14 on avx512, 6 on avx2, 4 portable)
    (15, 33, 17),  # a whole sliver and a 1-row one; a 1-column B sliver
    (29, 24, 385),  # K past one packed block, N = 24 (a NHWC 1x1 layer's output channels)
    (100, 64, 64),
    (57, 144, 29),
    (45, 257, 31),  # more B slivers than the automatic limit (forced in place here)
    (6, 70, 401),  # rows few enough for direct_b: forced direct_a must still be exact
]


def _gemm_with(monkeypatch, mode, *args):
    monkeypatch.setenv("CNNEXT_GEMM_DIRECT_A", mode)
    return torch.ops.cnnext.gemm(*args)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tb", [False, True])
def test_direct_a_matches_reference_and_packed_bitwise(monkeypatch, isa, dtype, tb):
    for m, n, k in DIRECT_A_SHAPES:
        a, b = _operands(m, n, k, False, tb, dtype)
        direct = _gemm_with(monkeypatch, "1", a, b, False, tb, 1.0, 0.0, None, isa)
        packed = _gemm_with(monkeypatch, "0", a, b, False, tb, 1.0, 0.0, None, isa)
        _check(direct, _reference(a, b, False, tb), dtype, k)
        assert torch.equal(direct, packed), (m, n, k)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (-2.0, 0.75), (0.5, 0.0)])
def test_direct_a_alpha_beta(monkeypatch, isa, dtype, alpha, beta):
    for m, n, k in [(29, 24, 385), (57, 144, 29)]:
        a, b = _operands(m, n, k, False, True, dtype)
        c = torch.randn(m, n, dtype=dtype)
        direct = _gemm_with(monkeypatch, "1", a, b, False, True, alpha, beta, c, isa)
        packed = _gemm_with(monkeypatch, "0", a, b, False, True, alpha, beta, c, isa)
        _check(direct, _reference(a, b, False, True, alpha, beta, c), dtype, k)
        assert torch.equal(direct, packed)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_direct_a_beta_zero_never_reads_c(monkeypatch, isa, dtype):
    for m, n, k in [(13, 31, 7), (29, 24, 385), (45, 257, 31)]:
        a, b = _operands(m, n, k, False, False, dtype)
        for garbage in (float("nan"), float("inf")):
            c = torch.full((m, n), garbage, dtype=dtype)
            out = _gemm_with(monkeypatch, "1", a, b, False, False, 1.5, 0.0, c, isa)
            _check(out, _reference(a, b, False, False, 1.5), dtype, k)


@pytest.mark.parametrize("isa", ISAS)
def test_direct_a_threads_and_auto(monkeypatch, isa):
    # Large enough to be split between threads; the automatic choice (in place for N = 64 with
    # lda = 300, packed for lda = 1024 floats, a multiple of 4 KiB) is bitwise the packed path.
    threads = torch.get_num_threads()
    try:
        for m, n, k in [(2000, 64, 300), (700, 40, 1024), (900, 256, 77)]:
            a, b = _operands(m, n, k, False, True, torch.float32)
            torch.set_num_threads(1)
            packed = _gemm_with(monkeypatch, "0", a, b, False, True, 1.0, 0.0, None, isa)
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                for mode in ("1", "auto"):
                    out = _gemm_with(monkeypatch, mode, a, b, False, True, 1.0, 0.0, None, isa)
                    assert torch.equal(out, packed), (m, n, k, t, mode)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_direct_a_rows_wider_than_k(monkeypatch, isa, dtype):
    # lda > K: the op takes contiguous operands, so this goes through the NHWC 1x1 conv row,
    # whose GEMMs read each group's channel slice of the activation rows (K = 29 of lda = 232)
    # and each group's output slice (ldc = 64 * 8). The forced row and ISA keep it on this path.
    monkeypatch.setenv("CNNEXT_ISA", isa)
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "pointwise")
    x = torch.randn(2, 232, 9, 11, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.randn(64, 29, 1, 1, dtype=dtype)
    bias = torch.randn(64, dtype=dtype)
    out = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("CNNEXT_GEMM_DIRECT_A", mode)
        out[mode] = cnnext.functional.conv2d(x, w, bias, groups=8)
    expected = torch.nn.functional.conv2d(x.double(), w.double(), bias.double(), groups=8)
    _check(out["1"], expected, dtype, 29)
    assert torch.equal(out["1"], out["0"])


def test_direct_a_environment_value_checked(monkeypatch):
    a = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="CNNEXT_GEMM_DIRECT_A must be 0, 1 or auto"):
        _gemm_with(monkeypatch, "yes", a, a.t(), False, False, 1.0, 0.0, None, "auto")
