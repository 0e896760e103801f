"""cnnext.functional.conv2d against torch.nn.functional.conv2d: forward, the three grads and the
output layout, over a pairwise covering of the configuration axes (every pair of values of any
two axes appears in at least one case, where the pair is possible at all), plus the dtypes and
edge cases torch's conv2d accepts beyond float32/float64."""
import itertools
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

CF = cnnext.functional.conv2d
# torch warns that 'same' with an even dilated kernel copies the input; so do we, silently.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

AXES = {
    "kernel": [(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1), (2, 5)],
    "stride": [1, 2, 3, (1, 2)],
    "padding": [0, 1, 2, (0, 2), "same", "valid"],
    "dilation": [1, 2, (1, 3)],
    "groups": ["1", "2", "depthwise", "depthwise_x2"],
    "bias": [True, False],
    "batch": [0, 1, 3, None],  # None: batch-less 3-D input
    "size": [(1, 1), (2, 3), (5, 5), (6, 9), (11, 7), (12, 12)],
    "dtype": [torch.float32, torch.float64],
    "input_layout": ["contiguous", "channels_last", "sliced"],
    "weight_layout": ["contiguous", "channels_last", "transposed"],
    "grad_layout": ["contiguous", "sliced", "expanded"],
}


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _valid(cfg):
    """Whether torch accepts the configuration (so both sides compute a result)."""
    (kh, kw), (sh, sw), (dh, dw) = cfg["kernel"], _pair(cfg["stride"]), _pair(cfg["dilation"])
    if cfg["padding"] == "same":
        if (sh, sw) != (1, 1):
            return False
        return True  # 'same' pads to the dilated kernel, so any size works
    ph, pw = (0, 0) if cfg["padding"] == "valid" else _pair(cfg["padding"])
    h, w = cfg["size"]
    return h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1


def _covering_cases(seed=2024, pool=4000):
    """Greedy pairwise covering: draw a pool of valid random configurations, then keep the one
    covering most not-yet-covered value pairs until no pair the pool can cover is left."""
    rng = random.Random(seed)
    names = list(AXES)
    candidates = []
    while len(candidates) < pool:
        cfg = {n: rng.randrange(len(AXES[n])) for n in names}
        if _valid({n: AXES[n][i] for n, i in cfg.items()}):
            candidates.append(cfg)

    def pairs(cfg):
        return {(a, cfg[a], b, cfg[b]) for a, b in itertools.combinations(names, 2)}

    uncovered = set().union(*(pairs(c) for c in candidates))
    chosen = []
    while uncovered:
        best = max(candidates, key=lambda c: len(pairs(c) & uncovered))
        uncovered -= pairs(best)
        chosen.append({n: AXES[n][i] for n, i in best.items()})
    return chosen


CASES = _covering_cases()


def _case_id(cfg):
    return "-".join(
        f"{n}={str(v).replace(' ', '').replace('torch.', '')}" for n, v in cfg.items()
    )


def _channels(groups, gen):
    """(in_channels, out_channels, groups) for the groups kind."""
    c = int(torch.randint(1, 4, (), generator=gen))
    m = int(torch.randint(1, 4, (), generator=gen))
    if groups == "1":
        return c, m, 1
    if groups == "2":
        return 2 * c, 2 * m, 2
    if groups == "depthwise":
        return c + 1, c + 1, c + 1
    return c + 1, 2 * (c + 1), c + 1  # depthwise with channel multiplier 2


def _laid_out(t, layout):
    """t's values in the requested memory layout (never a copy sharing t's storage)."""
    if layout == "contiguous":
        return t.clone()
    if layout == "channels_last":
        if t.dim() == 4:
            return t.clone(memory_format=torch.channels_last)
        return t.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # 3-D: channels innermost
    if layout == "sliced":  # every other column of a wider tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed":  # H and W swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(layout)


def _grad_output(shape, layout, dtype, device, gen):
    if layout == "expanded":  # zero strides over the batch (and height)
        row = torch.randn(shape[-1], generator=gen, dtype=dtype).to(device)
        return row.expand(shape)
    g = torch.randn(shape, generator=gen, dtype=dtype).to(device)
    return _laid_out(g, layout)


def _run_both(input, weight, bias, grad_layout, gen, **kwargs):
    """Forward and grads of cnnext and torch on the same leaves; returns pairs (ours, torch)."""
    results = []
    for fn in (CF, F.conv2d):
        leaves = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_()
                  if t is not None else None for t in (input, weight, bias)]
        results.append((fn(*leaves, **kwargs), leaves))
    (out, ours), (ref, theirs) = results
    grad = _grad_output(ref.shape, grad_layout, ref.dtype, ref.device, gen)
    wrt = [i for i, t in enumerate(ours) if t is not None]
    g_ours = torch.autograd.grad(out, [ours[i] for i in wrt], grad)
    g_ref = torch.autograd.grad(ref, [theirs[i] for i in wrt], grad)
    return out, ref, list(zip(g_ours, g_ref))


@pytest.mark.parametrize("cfg", CASES, ids=[_case_id(c) for c in CASES])
def test_conv2d_matches_torch(cfg, device):
    gen = torch.Generator().manual_seed(zlib.crc32(_case_id(cfg).encode()))
    dtype = cfg["dtype"]
    cin, cout, groups = _channels(cfg["groups"], gen)
    h, w = cfg["size"]
    shape = (cin, h, w) if cfg["batch"] is None else (cfg["batch"], cin, h, w)
    x = _laid_out(torch.randn(shape, generator=gen, dtype=dtype).to(device), cfg["input_layout"])
    wt = torch.randn((cout, cin // groups) + cfg["kernel"], generator=gen, dtype=dtype).to(device)
    wt = _laid_out(wt, cfg["weight_layout"])
    b = torch.randn(cout, generator=gen, dtype=dtype).to(device) if cfg["bias"] else None
    out, ref, grads = _run_both(
        x, wt, b, cfg["grad_layout"], gen, stride=cfg["stride"], padding=cfg["padding"],
        dilation=cfg["dilation"], groups=groups,
    )
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert_close(out, ref)
    if ref.numel() > 0 and device == "cpu":
        assert out.stride() == ref.stride(), "output layout differs from torch's"
    for name, (g, g_ref) in zip(("input", "weight", "bias"), grads):
        assert g.shape == g_ref.shape, name
        assert_close(g, g_ref, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_covering_is_pairwise():
    """The case list covers every feasible pair of axis values (guards the generator)."""
    names = list(AXES)
    covered = {
        (a, repr(c[a]), b, repr(c[b])) for c in CASES for a, b in itertools.combinations(names, 2)
    }
    for a, b in itertools.combinations(names, 2):
        for va, vb in itertools.product(AXES[a], AXES[b]):
            if (a, repr(va), b, repr(vb)) not in covered:
                assert not _feasible_pair(a, va, b, vb), f"{a}={va}, {b}={vb} is not covered"


def _feasible_pair(a, va, b, vb):
    shape_axes = ["kernel", "stride", "padding", "dilation", "size"]
    fixed = {a: va, b: vb}
    free = [n for n in shape_axes if n not in fixed]
    for vals in itertools.product(*(AXES[n] for n in free)):
        if _valid({**fixed, **dict(zip(free, vals))}):
            return True
    return False


# ---- larger shapes: several GEMM blocks, batch parallelism, 1x1 fast path ------------------
@pytest.mark.parametrize(
    "n,cin,cout,hw,k,stride,padding,groups",
    [
        (3, 32, 48, (19, 23), 3, 1, 1, 1),
        (2, 64, 40, (9, 9), 1, 1, 0, 1),  # pointwise: the image is the column matrix
        (4, 24, 24, (17, 15), 5, 2, 2, 24),  # depthwise, strided
        (1, 36, 72, (13, 11), 3, (2, 1), (1, 0), 4),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_larger_shapes(n, cin, cout, hw, k, stride, padding, groups, dtype, device):
    x = torch.randn(n, cin, *hw, dtype=dtype, device=device)
    w = torch.randn(cout, cin // groups, k, k, dtype=dtype, device=device) / (cin // groups * k * k) ** 0.5
    b = torch.randn(cout, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(1)
    out, ref, grads = _run_both(x, w, b, "contiguous", gen, stride=stride, padding=padding, groups=groups)
    assert_close(out, ref)
    for g, g_ref in grads:
        # On CUDA, cuDNN's float32 grad_weight (sums of ~1,300 products of magnitude ~36 here)
        # differs from an exact sum by more than 1e-4 on its small entries: compare relative
        # to the largest magnitude there, as tests/test_cuda.py does.
        scale = max(1.0, g_ref.abs().max().item()) if device == "cuda" else 1.0
        assert_close(g / scale, g_ref / scale)


# ---- dtypes beyond float32/float64 (CPU: computed in a wider type, as torch does) ----------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_on_cpu(dtype):
    x = torch.randn(2, 6, 9, 8, dtype=dtype)
    w = (torch.randn(4, 3, 3, 3) / 3).to(dtype)
    b = torch.randn(4, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    out, ref, grads = _run_both(x, w, b, "contiguous", gen, stride=(1, 2), padding=1, groups=2)
    assert out.dtype == dtype
    assert_close(out, ref)
    for g, g_ref in grads:
        assert g.dtype == dtype
        # Grads sum over a whole batch and plane: half-type rounding of torch's own result.
        assert_close(g, g_ref, rtol=5e-2, atol=5e-2 * g_ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_dtypes_match_torch_exactly(dtype):
    # torch's CPU conv2d accepts integer tensors and wraps around on overflow (int8/uint8 here).
    low, high = (0, 200) if dtype == torch.uint8 else (-100, 100)
    x = torch.randint(low, high, (2, 4, 7, 6)).to(dtype)
    w = torch.randint(-7 if dtype != torch.uint8 else 0, 8, (6, 2, 3, 2)).to(dtype)
    b = torch.arange(6).to(dtype)
    for kwargs in (dict(padding=1, groups=2), dict(padding="same", groups=2),
                   dict(stride=2, dilation=(2, 1), groups=2)):
        try:
            expected = F.conv2d(x, w, b, **kwargs)
        except NotImplementedError:  # torch has no dilated integer kernel but for int64
            with pytest.raises(NotImplementedError, match="cnnext.conv2d: .*dilation"):
                CF(x, w, b, **kwargs)
            continue
        torch.testing.assert_close(CF(x, w, b, **kwargs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_matches_torch_with_grads(dtype):
    x = torch.randn(2, 4, 6, 7, dtype=dtype)
    w = torch.randn(6, 2, 3, 3, dtype=dtype)
    b = torch.randn(6, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    out, ref, _ = _run_both(x, w, b, "contiguous", gen, padding="same", groups=2)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.complex64 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, ref, **tol)
    # Complex autograd (conjugate Wirtinger) through a real-valued loss.
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ours = torch.autograd.grad(CF(*leaves, padding="same", groups=2).abs().sum(), leaves)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    theirs = torch.autograd.grad(F.conv2d(*leaves, padding="same", groups=2).abs().sum(), leaves)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, **tol)


# ---- edge cases torch accepts -----------------------------------------------------------
def test_zero_input_channels_like_torch():
    # torch's "empty" path: no input channels gives a zero-channel output, whatever out_channels.
    for shape, padding in (((2, 0, 8, 8), 0), ((0, 8, 8), 1), ((2, 0, 0, 5), 2)):
        x = torch.randn(shape, requires_grad=True)
        w = torch.randn(6, 0, 3, 3, requires_grad=True)
        b = torch.randn(6, requires_grad=True)
        out, ref = CF(x, w, b, padding=padding), F.conv2d(x, w, b, padding=padding)
        assert out.shape == ref.shape
        grads = torch.autograd.grad(out.sum(), (x, w, b))
        refs = torch.autograd.grad(ref.sum(), (x, w, b))
        for g, r in zip(grads, refs):
            assert_close(g, r)


def test_empty_batch_with_empty_image_like_torch():
    x = torch.randn(0, 3, 0, 4)
    w = torch.randn(5, 3, 3, 3)
    assert CF(x, w, padding=2).shape == F.conv2d(x, w, padding=2).shape


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(padding=[1]), dict(groups=1, dilation=(2,))])
def test_int_like_arguments(kwargs):
    import numpy as np

    x, w = torch.randn(2, 4, 9, 9), torch.randn(6, 4, 3, 3)
    for convert in (lambda v: v, np.int64, torch.tensor):
        args = {k: ([convert(i) for i in v] if isinstance(v, (list, tuple)) else convert(v))
                for k, v in kwargs.items()}
        assert_close(CF(x, w, **args), F.conv2d(x, w, **args))


def test_keyword_arguments_and_meta_tensors():
    x, w, b = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.randn(3)
    assert_close(CF(input=x, weight=w, bias=b, padding="same"), F.conv2d(x, w, b, padding="same"))
    meta = CF(x.to("meta"), w.to("meta"), b.to("meta"), stride=2)
    assert meta.shape == F.conv2d(x, w, b, stride=2).shape and meta.device.type == "meta"


# ---- autocast and forward-mode AD: torch's conv2d supports both ----------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_the_lower_precision_like_torch(dtype):
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4)
    with torch.autocast("cpu", dtype=dtype):
        out, ref = CF(x, w, b, padding=1), F.conv2d(x, w, b, padding=1)
        assert CF(x.double(), w.double()).dtype == torch.float64  # float64 is left alone
    assert out.dtype == ref.dtype == dtype
    assert_close(out, ref)
    for g, r in zip(torch.autograd.grad(out.sum(), (x, w)), torch.autograd.grad(ref.sum(), (x, w))):
        assert g.dtype == r.dtype
        assert_close(g, r, rtol=2e-2, atol=2e-2 * r.abs().max().item())


def test_forward_mode_ad_like_torch():
    import torch.autograd.forward_ad as fwAD

    x, w, b = (torch.randn(s, dtype=torch.float64) for s in ((2, 4, 7, 6), (6, 2, 3, 2), (6,)))
    tangents = [torch.randn_like(t) for t in (x, w, b)]
    kwargs = dict(padding="same", dilation=(2, 1), groups=2)
    results = []
    for fn in (CF, F.conv2d):
        with fwAD.dual_level():
            out = fn(*(fwAD.make_dual(p, t) for p, t in zip((x, w, b), tangents)), **kwargs)
            results.append(fwAD.unpack_dual(out).tangent)
        # Only some arguments dual; and the functorch transform.
        results.append(torch.func.jvp(lambda w_: fn(x, w_, b, **kwargs), (w,), (tangents[1],))[1])
        results.append(torch.func.jacfwd(lambda x_: fn(x_, w, **kwargs))(x[:1, :, :3, :2]))
    for ours, theirs in zip(results[:3], results[3:]):
        assert_close(ours, theirs)
