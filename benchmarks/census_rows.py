"""The census as suite rows: every layer of census_layers.json, in every configuration
(dtype x layout), forward and forward+backward, torch.nn.functional vs cnnext.functional."""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

import cnnext

from . import census
from .configs import CONFIGS
from .suite import Case, Row, Unavailable

# --quick keeps these: the layers issue 12 found losing (depthwise 5x5/7x7 incl. stride 2,
# 1x7/7x1, AlexNet 5x5, grouped 3x3, squeeze-excite 1x1 on a 1x1 map, MobileNetV2's 1x1
# expand, global average pool), a few large dense 3x3/1x1 layers, the ResNet max pool and
# one batch-1 layer (where the fixed cost of a call shows).
QUICK = (
    "conv5x5_dw_240-240_14_n8", "conv5x5_dw_96-96_28_s2_n8", "conv7x7_dw_768-768_7_n8",
    "conv7x7_dw_96-96_56_n8", "conv1x7_128-128_17_n8", "conv7x1_128-128_17_n8",
    "conv5x5_64-192_27_n8", "conv5x5_g2_96-256_27_n8", "conv3x3_g32_128-128_56_n8",
    "conv3x3_g13_104-104_56_s2_n8", "conv1x1_576-144_1_n8", "conv1x1_576-144_1_n1",
    "conv1x1_24-144_56_n8", "conv3x3_64-64_56_n8", "conv1x1_256-64_56_n8", "conv3x3_256-256_14_n8",
    "gap_96_14_n8", "gap_2048_7_n8", "maxpool3x3_s2_p1_64_112_n8",
)


def conv_flops(e):
    """Forward FLOPs (2 per multiply-add); the backward (grad input + grad weight) is twice this."""
    (kh, kw), (oh, ow) = e["kernel"], e["out"]
    return 2 * e["n"] * e["c_out"] * oh * ow * e["c_in"] // e["groups"] * kh * kw


def pool_bytes(e, element_size, backward):
    """Bytes a pooling kernel cannot avoid moving: input read + output written; with the
    backward also grad_output read + grad_input written, and for max pooling the int64 argmax
    written by the forward and read by the backward."""
    inp = e["n"] * e["c"] * e["h"] * e["w"] * element_size
    out = e["n"] * e["c"] * e["out"][0] * e["out"][1] * element_size
    if not backward:
        return inp + out
    indices = 2 * (out // element_size) * 8 if "max" in e["kind"] else 0
    return 2 * (inp + out) + indices


def _hw(h, w):
    return f"{h}²" if h == w else f"{h}x{w}"


def _pair(tag, value, default):
    if value == default:
        return ""
    return f" {tag}{value[0]}" if value[0] == value[1] else f" {tag}{value[0]},{value[1]}"


def shape_text(e):
    """8x240x14² → 240 k5 p2 g240, 8x128x17² → 192 k1x7 p0,3, 8x64x112² max k3 s2 p1 → 56²."""
    if e["kind"] == "conv":
        (kh, kw) = e["kernel"]
        text = f"{e['n']}x{e['c_in']}x{_hw(e['h'], e['w'])} → {e['c_out']} k{kh if kh == kw else f'{kh}x{kw}'}"
        text += _pair("s", e["stride"], [1, 1]) + _pair("p", e["padding"], [0, 0])
        text += _pair("d", e["dilation"], [1, 1])
        text += f" g{e['groups']}" if e["groups"] > 1 else ""
        return text + ("" if e["bias"] else " nobias")
    text = f"{e['n']}x{e['c']}x{_hw(e['h'], e['w'])} "
    if e["kind"].startswith("adaptive"):
        text += "adaptive " + ("avg" if "avg" in e["kind"] else "max")
    else:
        (kh, kw) = e["kernel"]
        text += f"{e['kind'].split('_')[0]} k{kh if kh == kw else f'{kh}x{kw}'}"
        text += _pair("s", e["stride"], [1, 1]) + _pair("p", e["padding"], [0, 0])
        text += _pair("d", e.get("dilation", [1, 1]), [1, 1]) + (" ceil" if e["ceil_mode"] else "")
        text += " excl-pad" if e["kind"] == "avg_pool" and not e["count_include_pad"] else ""
    return text + f" → {_hw(*e['out'])}"


def _forward_and_grads(fn, inputs, grad_output):
    out = fn(*inputs)
    return (out, *torch.autograd.grad(out, inputs, grad_output))


def _make_case(ours, theirs, inputs, out_shape, backward, config, device):
    if not backward:
        return Case(torch=lambda: theirs(*inputs), cnnext=lambda: ours(*inputs), grad_enabled=False)
    for t in inputs:
        t.requires_grad_()
    grad_output = config.apply(torch.randn(out_shape)).to(device)
    return Case(torch=lambda: _forward_and_grads(theirs, inputs, grad_output),
                cnnext=lambda: _forward_and_grads(ours, inputs, grad_output))


def conv_case(e, backward, config, device, dtype=None):
    layer = nn.Conv2d(e["c_in"], e["c_out"], e["kernel"], e["stride"], e["padding"], e["dilation"],
                      e["groups"], bias=e["bias"])  # torch's default init
    place = lambda t: config.apply(t.detach()).to(device)
    x = place(torch.randn(e["n"], e["c_in"], e["h"], e["w"]))
    inputs = [x, place(layer.weight)] + ([layer.bias.detach().to(device, config.dtype)] if e["bias"] else [])
    args = dict(stride=e["stride"], padding=e["padding"], dilation=e["dilation"], groups=e["groups"])
    # cnnext.functional looked up now (not at import) so a test can substitute a broken kernel.
    ours = partial(cnnext.functional.conv2d, **args)
    theirs = partial(F.conv2d, **args)
    return _make_case(ours, theirs, inputs, (e["n"], e["c_out"], *e["out"]), backward, config, device)


def _pool_args(e):
    if e["kind"].startswith("adaptive"):
        return dict(output_size=e["output_size"])
    args = dict(kernel_size=e["kernel"], stride=e["stride"], padding=e["padding"], ceil_mode=e["ceil_mode"])
    if e["kind"] == "max_pool":
        args["dilation"] = e["dilation"]
    else:
        args.update(count_include_pad=e["count_include_pad"], divisor_override=e["divisor_override"])
    return args


def pool_case(e, backward, config, device, dtype=None):
    name = {"max_pool": "max_pool2d", "avg_pool": "avg_pool2d", "adaptive_avg_pool": "adaptive_avg_pool2d",
            "adaptive_max_pool": "adaptive_max_pool2d"}[e["kind"]]
    ours = getattr(cnnext.functional, name, None)
    if ours is None:
        raise Unavailable(f"cnnext.functional.{name} is not available in this build")
    args = _pool_args(e)
    ours, theirs = partial(ours, **args), partial(getattr(F, name), **args)
    x = config.apply(torch.randn(e["n"], e["c"], e["h"], e["w"])).to(device)
    return _make_case(ours, theirs, [x], (e["n"], e["c"], *e["out"]), backward, config, device)


def census_rows(config_keys, entries=None):
    """Rows for every census entry x configuration x pass, the configurations of one layer
    next to each other (so a layout comparison sees the same machine load)."""
    entries = census.load() if entries is None else entries
    rows = []
    for e in entries:
        conv = e["kind"] == "conv"
        for key in config_keys:
            config = CONFIGS[key]
            for backward in (False, True):
                element_size = torch.empty((), dtype=config.dtype).element_size()
                rows.append(Row(
                    section="census_conv" if conv else "census_pool", name=e["name"],
                    pass_="fwd+bwd" if backward else "fwd", shape=shape_text(e), config=key,
                    quick=e["name"] in QUICK, dtype_override=config.dtype,
                    flops=conv_flops(e) * (3 if backward else 1) if conv else None,
                    bytes=None if conv else pool_bytes(e, element_size, backward),
                    make=partial(conv_case if conv else pool_case, e, backward, config),
                    spec=e, tags=" ".join(e["from"])))
    return rows
