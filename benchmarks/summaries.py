"""What the rows add up to: per (section, configuration, pass) the geometric mean of
torch/cnnext, the slowest row and the median fraction of the machine's limit per side;
and "best layout each side": per layer and pass, torch's faster of NCHW and channels_last
against cnnext's faster of the two, in one dtype."""
import math

from .configs import CONFIGS

TARGET_FLOOR = 0.9  # the issues' "no layer below 0.9x": rows under it are counted

# The layout pairs "best layout each side" compares, by dtype.
LAYOUT_PAIRS = {"float32": ("f32-nchw", "f32-cl"), "bfloat16": ("bf16-nchw", "bf16-cl"),
                "float16": ("f16-nchw", "f16-cl")}


def _geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def group_key(section, config, pass_):
    return f"{section} {pass_}" if config is None else f"{section} {config} {pass_}"


def geomeans(rows):
    """{key: {section, config, pass, rows, geomean_ratio, min_ratio, min_row, rows_below_floor,
    fraction_of_peak: {torch, cnnext}}} over the timed rows, in order of first appearance.
    fraction_of_peak is the median of the rows' fractions of the machine's limit."""
    groups = {}
    for row in rows:
        if row.result.get("timed"):
            groups.setdefault((row.section, row.config, row.pass_), []).append(row)
    out = {}
    for (section, config, pass_), members in groups.items():
        ratios = [r.result["ratio"] for r in members]
        slowest = min(members, key=lambda r: r.result["ratio"])
        fractions = {}
        for side in ("torch", "cnnext"):
            values = sorted(r.result[side]["fraction_of_peak"] for r in members
                            if r.result[side].get("fraction_of_peak") is not None)
            fractions[side] = values[len(values) // 2] if values else None
        out[group_key(section, config, pass_)] = {
            "section": section, "config": config, "pass": pass_, "rows": len(members),
            "geomean_ratio": _geomean(ratios), "min_ratio": slowest.result["ratio"],
            "min_row": slowest.name, "rows_below_floor": sum(r < TARGET_FLOOR for r in ratios),
            "fraction_of_peak": fractions}
    return out


def best_layout(rows):
    """{dtype: {"groups": {"section pass": {section, pass, rows, geomean_ratio, min_ratio,
    min_row, rows_below_floor, torch_layouts, cnnext_layouts}}, "rows": [per layer and pass]}} for each dtype
    whose two layouts were both timed for some row. torch_layouts counts which layout was
    torch's faster ({"NCHW": n, "channels_last": m}); likewise for cnnext."""
    by_layer = {}
    for row in rows:
        if row.result.get("timed") and row.config:
            by_layer.setdefault((row.section, row.name, row.pass_), {})[row.config] = row
    out = {}
    for dtype, pair in LAYOUT_PAIRS.items():
        per_row = []
        for (section, name, pass_), configs in by_layer.items():
            if not all(key in configs for key in pair):
                continue
            best = {}
            for side in ("torch", "cnnext"):
                key = min(pair, key=lambda k: configs[k].result[side]["median_ms"])
                best[side] = (CONFIGS[key].layout, configs[key].result[side]["median_ms"])
            per_row.append({"section": section, "name": name, "pass": pass_,
                            "torch_layout": best["torch"][0], "torch_ms": best["torch"][1],
                            "cnnext_layout": best["cnnext"][0], "cnnext_ms": best["cnnext"][1],
                            "ratio": best["torch"][1] / best["cnnext"][1]})
        if not per_row:
            continue
        groups = {}
        for r in per_row:
            groups.setdefault((r["section"], r["pass"]), []).append(r)
        summary = {}
        for (section, pass_), members in groups.items():
            slowest = min(members, key=lambda r: r["ratio"])
            count = lambda side: {layout: sum(r[f"{side}_layout"] == layout for r in members)
                                  for layout in ("NCHW", "channels_last")}
            summary[f"{section} {pass_}"] = {
                "section": section, "pass": pass_, "rows": len(members),
                "geomean_ratio": _geomean([r["ratio"] for r in members]),
                "min_ratio": slowest["ratio"], "min_row": slowest["name"],
                "rows_below_floor": sum(r["ratio"] < TARGET_FLOOR for r in members),
                "torch_layouts": count("torch"), "cnnext_layouts": count("cnnext")}
        out[dtype] = {"groups": summary, "rows": per_row}
    return out
