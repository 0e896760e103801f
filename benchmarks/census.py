"""The layer census: every distinct conv and pooling layer shape of the published
architectures in benchmarks/architectures, at batch 1 and 8, each shape once with the
architectures (and how many times in each) it comes from.

Shapes are found by running each architecture on the meta device (no memory, no arithmetic)
with forward hooks on Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d and AdaptiveMaxPool2d.
The result is committed as benchmarks/census_layers.json, one layer per line:

    python -m benchmarks.census --write     # regenerate the committed file
    python -m benchmarks.census             # print a summary of the census
"""
import argparse
import json
import os
import sys

import torch
from torch import nn

from .architectures import ARCHITECTURES

BATCHES = (1, 8)
CENSUS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "census_layers.json")
POOL_KINDS = {nn.MaxPool2d: "max_pool", nn.AvgPool2d: "avg_pool",
              nn.AdaptiveAvgPool2d: "adaptive_avg_pool", nn.AdaptiveMaxPool2d: "adaptive_max_pool"}


def _pair(value):
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def _conv_record(module, x, out):
    n, c, h, w = x.shape
    return {"kind": "conv", "n": n, "c_in": c, "h": h, "w": w, "c_out": module.out_channels,
            "kernel": _pair(module.kernel_size), "stride": _pair(module.stride),
            "padding": _pair(module.padding), "dilation": _pair(module.dilation),
            "groups": module.groups, "bias": module.bias is not None, "out": list(out.shape[-2:])}


def _pool_record(module, x, out):
    n, c, h, w = x.shape
    kind = POOL_KINDS[type(module)]
    record = {"kind": kind, "n": n, "c": c, "h": h, "w": w}
    if kind.startswith("adaptive"):
        record["output_size"] = _pair(module.output_size)
    else:
        record.update(kernel=_pair(module.kernel_size), stride=_pair(module.stride or module.kernel_size),
                      padding=_pair(module.padding), ceil_mode=bool(module.ceil_mode))
        if kind == "max_pool":
            record["dilation"] = _pair(module.dilation)
        else:
            record.update(count_include_pad=bool(module.count_include_pad),
                          divisor_override=module.divisor_override)
    record["out"] = list(out.shape[-2:])
    return record


def trace(arch, batches=BATCHES):
    """For each batch size, the conv and pooling layers one forward pass of `arch` runs, in
    order, as records: {batch: [record, ...]}."""
    build, size = ARCHITECTURES[arch]
    with torch.device("meta"):
        model = build().eval()
    records = None

    def hook(module, inputs, out):
        maker = _conv_record if isinstance(module, nn.Conv2d) else _pool_record
        records.append(maker(module, inputs[0], out))

    for module in model.modules():
        if type(module) is nn.Conv2d or type(module) in POOL_KINDS:
            module.register_forward_hook(hook)
    traced = {}
    with torch.no_grad():
        for batch in batches:
            records = traced[batch] = []
            model(torch.empty(batch, 3, size, size, device="meta"))
    return traced


def _shape_key(record):
    return json.dumps({k: v for k, v in record.items() if k not in ("name", "from")}, sort_keys=True)


def _size(h, w):
    return f"{h}" if h == w else f"{h}x{w}"


def _pair_tag(prefix, value, default):
    if value == default:
        return ""
    return f"_{prefix}{value[0]}" if value[0] == value[1] else f"_{prefix}{value[0]}x{value[1]}"


def base_name(r):
    """A readable name that says what the layer is: conv5x5_dw_240-240_14_n8,
    conv1x7_128-128_17_n8, maxpool3x3_s2_p1_64_112_n8, gap_96_14_n8."""
    if r["kind"] == "conv":
        (kh, kw), dil = r["kernel"], r["dilation"]
        name = f"conv{kh}x{kw}"
        if r["groups"] == r["c_in"] == r["c_out"] and r["groups"] > 1:
            name += "_dw"
        elif r["groups"] > 1:
            name += f"_g{r['groups']}"
        name += f"_{r['c_in']}-{r['c_out']}_{_size(r['h'], r['w'])}"
        name += _pair_tag("s", r["stride"], [1, 1])
        name += _pair_tag("p", r["padding"], [(kh - 1) // 2 * dil[0], (kw - 1) // 2 * dil[1]])
        name += _pair_tag("d", dil, [1, 1])
    elif r["kind"].startswith("adaptive"):
        oh, ow = r["output_size"]
        kind = "avg" if r["kind"] == "adaptive_avg_pool" else "max"
        name = (f"g{kind[0]}p" if [oh, ow] == [1, 1] else f"adaptive{kind}{_size(oh, ow)}")
        name += f"_{r['c']}_{_size(r['h'], r['w'])}"
    else:
        (kh, kw) = r["kernel"]
        name = f"{r['kind'].split('_')[0]}pool{kh}x{kw}"
        name += _pair_tag("s", r["stride"], [1, 1]) + _pair_tag("p", r["padding"], [0, 0])
        if r.get("dilation", [1, 1]) != [1, 1]:
            name += _pair_tag("d", r["dilation"], [1, 1])
        name += "_ceil" if r["ceil_mode"] else ""
        if r["kind"] == "avg_pool" and not r["count_include_pad"]:
            name += "_excl"
        name += f"_{r['c']}_{_size(r['h'], r['w'])}"
    return name + f"_n{r['n']}"


def build_census():
    """Every distinct layer shape, convs first then pooling, each in order of first
    appearance (batch 1 before batch 8, architectures in ARCHITECTURES order), with `from`:
    {architecture: number of layers of that shape in one forward pass}."""
    found = {}
    traced = {arch: trace(arch) for arch in ARCHITECTURES}
    for batch in BATCHES:
        for arch in ARCHITECTURES:
            for record in traced[arch][batch]:
                entry = found.setdefault(_shape_key(record), dict(record, **{"from": {}}))
                entry["from"][arch] = entry["from"].get(arch, 0) + 1
    entries = [e for e in found.values() if e["kind"] == "conv"] + \
              [e for e in found.values() if e["kind"] != "conv"]
    taken = {}
    for entry in entries:
        name = base_name(entry)
        if name in taken:  # same readable name, different details (bias): suffix by order
            taken[name] += 1
            name = f"{name}_{chr(ord('a') + taken[name] - 1)}"
        else:
            taken[name] = 1
        entry["name"] = name
    return [{"name": e["name"], **{k: v for k, v in e.items() if k != "name"}} for e in entries]


def dumps(entries):
    """One layer per line, so the file reads (and diffs) as a table."""
    return "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n"


def load(path=CENSUS_PATH):
    with open(path) as f:
        return json.load(f)


def summary(entries):
    lines = [f"{len(entries)} distinct layer shapes from {len(ARCHITECTURES)} architectures "
             f"at batch {' and '.join(map(str, BATCHES))}:"]
    kinds = {}
    for e in entries:
        kinds.setdefault((e["kind"], e["n"]), 0)
        kinds[(e["kind"], e["n"])] += 1
    for (kind, n), count in sorted(kinds.items()):
        lines.append(f"  {kind:<18} batch {n}: {count}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.census", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {os.path.relpath(CENSUS_PATH)}")
    args = p.parse_args(argv)
    entries = build_census()
    if args.write:
        with open(CENSUS_PATH, "w") as f:
            f.write(dumps(entries))
        print(f"wrote {CENSUS_PATH}")
    print(summary(entries))


if __name__ == "__main__":
    sys.exit(main())
