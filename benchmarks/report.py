"""What a person reads: a table grouped by section and configuration, a JSON of every
number, a PNG chart and a summary page whose headline says where cnnext stands against
torch's best configuration."""
import json
import math
import os

from .configs import CONFIGS

SECTION_TITLES = {
    "census_conv": "Census conv layers  (F.conv2d vs cnnext.functional.conv2d; throughput: GFLOP/s; "
                   "limit: torch.mm GEMM peak, bfloat16: the bf16 peak)",
    "census_pool": "Census pooling layers  (throughput: GB/s of the minimum bytes moved; limit: copy bandwidth)",
    "model": "Models  (torch model vs cnnext.convert(model), same weights)",
    "conv": "The old 16-layer suite: convolution  (throughput: GFLOP/s; limit: torch.mm GEMM peak)",
    "pool": "The old suite: pooling  (throughput: GB/s of the minimum bytes moved; limit: copy bandwidth)",
    "gemm": "GEMM, float32 squares  (cnnext.gemm vs torch.mm; limit: torch.mm peak)",
}
SECTIONS = list(SECTION_TITLES)


def config_title(key, summary=None):
    if key is None:
        dtype = summary["machine"]["dtype"] if summary else "the run's dtype"
        return f"{dtype} NCHW"
    return CONFIGS[key].title if key in CONFIGS else key


def _fmt_ms(ms):
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _fmt_ratio(ratio):
    """torch/cnnext with the direction spelt out: >1 means cnnext is faster."""
    if ratio is None:
        return "-"
    arrow = "▲" if ratio >= 1.05 else "▼" if ratio <= 1 / 1.05 else "="
    return f"{ratio:5.2f}x {arrow}"


def _fmt_tp(side):
    value = side.get("gbps", side.get("gflops"))
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _fmt_frac(side):
    frac = side.get("fraction_of_peak")
    return "-" if frac is None else f"{100 * frac:.0f}%" if frac >= 0.1 else f"{100 * frac:.1f}%"


def _blocks(rows):
    """(section, config) -> rows, sections in SECTIONS order, configurations in order of
    first appearance."""
    blocks = {}
    for section in SECTIONS:
        for row in rows:
            if row.section == section:
                blocks.setdefault((section, getattr(row, "config", None)), []).append(row)
    return blocks


def _geomean_groups(summary):
    """The geomeans of a summary, each with section/config/pass (older JSONs keyed them as
    "section pass" only)."""
    groups = []
    for key, g in summary["geomeans"].items():
        if "section" not in g:
            section, pass_ = key.split(" ", 1)
            g = dict(g, section=section, config=None, **{"pass": pass_})
        groups.append(dict({"min_ratio": None, "min_row": "-", "fraction_of_peak": {}}, **g))
    return groups


def _min_text(g):
    return "-" if g["min_ratio"] is None else f"{g['min_ratio']:.2f}x ({g['min_row']})"


def _copy_curve_text(peaks):
    curve = peaks.get("copy_curve") or []
    if not curve:
        return ""
    points = ", ".join(f"{p['gbps']:.0f} at {p['mib']} MiB" for p in curve)
    return f" ({points}; a pooling row is held to the copy of its own size)"


def _limits_line(summary):
    peaks = summary["peaks"]
    line = (f"machine limits measured in this run: GEMM peak {peaks['gemm_gflops']:.0f} GFLOP/s "
            f"(torch.mm), copy bandwidth {peaks['copy_gbps']:.1f} GB/s at best"
            + _copy_curve_text(peaks))
    if peaks.get("bf16_gflops") and peaks.get("bf16_peak_source"):
        line += f", bfloat16 peak {peaks['bf16_gflops']:.0f} GFLOP/s ({peaks['bf16_peak_source']}"
        line += f"; torch.mm bfloat16 {peaks['bf16_mm_gflops']:.0f})" if peaks.get("bf16_mm_gflops") else ")"
    return line


def table(rows, summary):
    """The end-of-run table as a string: one block per section and configuration."""
    name_w = max([18] + [len(r.name) + 2 for r in rows])
    shape_w = max([34] + [len(r.shape) + 2 for r in rows])
    header = (f"{'row':<{name_w}}{'pass':<11}{'shape':<{shape_w}}{'torch ms':>10}{'cnnext ms':>11}"
              f"{'torch/cnnext':>14}{'thru t|c':>14}{'of limit t|c':>14}{'faults t|c':>12}  note")
    m = summary["machine"]
    lines = [f"cnnext vs torch on {m['cpu_model']} ({m['torch_threads']} threads, {m['device']}), "
             f"{m['date_utc']}", _limits_line(summary),
             "torch/cnnext = torch's median time / cnnext's: >1 (▲) cnnext faster, <1 (▼) slower. "
             "t|c = torch | cnnext."]
    for (section, config), block in _blocks(rows).items():
        lines += ["", f"== {SECTION_TITLES[section]} — {config_title(config, summary)}", header]
        for row in block:
            res = row.result
            t, c = res.get("torch", {}), res.get("cnnext", {})
            note = ""
            if res.get("status") != "ok":
                note = f"{res['status']}: {res.get('error') or ''}"
                if len(note) > 90:
                    note = note[:87] + "..."
            elif res.get("disturbed"):
                note = f"other load {100 * res['other_cpu_load']:.0f}%"
            faults = (f"{t['page_faults_per_call']:.0f}|{c['page_faults_per_call']:.0f}"
                      if res.get("timed") else "-")
            lines.append(
                f"{row.name:<{name_w}}{row.pass_:<11}{row.shape:<{shape_w}}"
                f"{_fmt_ms(t.get('median_ms')):>10}{_fmt_ms(c.get('median_ms')):>11}"
                f"{_fmt_ratio(res.get('ratio')):>14}"
                f"{(_fmt_tp(t) + '|' + _fmt_tp(c)) if res.get('timed') else '-':>14}"
                f"{(_fmt_frac(t) + '|' + _fmt_frac(c)) if res.get('timed') else '-':>14}"
                f"{faults:>12}  {note}".rstrip())
        for g in _geomean_groups(summary):
            if g["section"] == section and g.get("config") == config:
                lines.append(f"{'':<{name_w}}{'geomean ' + g['pass'] + ' over ' + str(g['rows']) + ' rows':<{shape_w + 11}}"
                             f"{'':<21}{_fmt_ratio(g['geomean_ratio']):>14}   min {_min_text(g)}")
    for dtype, best in summary.get("best_layout", {}).items():
        lines += ["", f"== Best layout each side, {dtype}: per row torch's faster of NCHW/channels_last "
                      "vs cnnext's faster of the two"]
        for g in best["groups"].values():
            lines.append(f"{g['section']:<14}{g['pass']:<12}{g['rows']:>5} rows  geomean "
                         f"{_fmt_ratio(g['geomean_ratio'])}  min {g['min_ratio']:.2f}x ({g['min_row']})  "
                         f"torch's faster: {_layouts(g['torch_layouts'])}; cnnext's: {_layouts(g['cnnext_layouts'])}")
    if summary.get("memory"):
        lines.append("")
        lines.append("== Peak extra memory of one call, fresh process (MiB; includes the outputs/grads "
                     "themselves, shown as 'results')")
        lines.append(f"{'layer':<18}{'side':<8}{'fwd':>8}{'results':>9}{'fwd+bwd':>9}{'results':>9}")
        for m in summary["memory"]:
            if "error" in m:
                lines.append(f"{m['layer']:<18}{m['side']:<8}  error: {m['error']}")
                continue
            mib = lambda b: f"{b / 2**20:.1f}"
            lines.append(f"{m['layer']:<18}{m['side']:<8}{mib(m['fwd_extra_bytes']):>8}"
                         f"{mib(m['fwd_output_bytes']):>9}{mib(m['fwdbwd_extra_bytes']):>9}"
                         f"{mib(m['fwdbwd_result_bytes']):>9}")
    disturbed = summary["run"].get("disturbed_rows", 0)
    if disturbed:
        lines.append("")
        lines.append(f"note: {disturbed} row(s) ran while other processes used >= "
                     f"{100 * summary['run']['disturbed_threshold']:.0f}% of the CPUs (/proc/stat); "
                     "their times are less trustworthy: rerun (--retries) on a quiet machine.")
    lines.append("")
    lines.append(f"wall time {summary['run']['wall_s']:.0f} s; command: {summary['machine']['command']}")
    return "\n".join(lines)


def _layouts(counts):
    return ", ".join(f"{layout} {n}" for layout, n in counts.items() if n) or "-"


def _clean(value):
    """JSON without NaN/inf (strict parsers reject them): non-finite numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(rows, summary):
    records = []
    for row in rows:
        record = {"section": row.section, "name": row.name, "pass": row.pass_, "shape": row.shape,
                  "config": row.config}
        if isinstance(row.spec, dict):  # a census entry
            record["spec"] = row.spec
        elif row.spec is not None and hasattr(row.spec, "__dataclass_fields__"):
            record["spec"] = {k: getattr(row.spec, k) for k in row.spec.__dataclass_fields__
                              if isinstance(getattr(row.spec, k), (int, float, str, bool, tuple))}
        record.update(row.result)
        records.append(record)
    return _clean({"schema_version": 2, **summary, "rows": records})


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)


PER_ROW_PLOT_LIMIT = 80  # more lines than this: the distribution plot


def plot(rows, summary, path):
    """Few rows: per row (plot_rows). Many (a census run): the distribution of the ratios per
    section, configuration and pass (plot_distribution)."""
    keys = {(r.section, getattr(r, "config", None), r.name) for r in rows}
    if len(keys) > PER_ROW_PLOT_LIMIT:
        plot_distribution(rows, summary, path)
    else:
        plot_rows(rows, summary, path)


def _suptitle(summary):
    m, p = summary["machine"], summary["peaks"]
    return (f"cnnext vs torch {m['torch']} — {m['cpu_model']}, {m['torch_threads']} threads, "
            f"{m['device']} — {m['date_utc']}\n" + _limits_line(summary).replace("machine limits measured in this run: ",
                                                                                    "limits measured in-run: "))


def plot_distribution(rows, summary, path):
    """One panel per section: for each configuration and pass, torch/cnnext of every timed
    row sorted from worst to best (log scale; 1 = parity), the geomean in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for row in rows:
        if row.result.get("timed"):
            groups.setdefault(row.section, {}).setdefault((getattr(row, "config", None), row.pass_), []).append(
                row.result["ratio"])
    sections = [s for s in SECTIONS if s in groups]
    if not sections:
        return
    fig, axes = plt.subplots(1, len(sections), figsize=(6.5 * len(sections), 6.5), squeeze=False)
    for ax, section in zip(axes[0], sections):
        for (config, pass_), ratios in groups[section].items():
            ratios = sorted(ratios)
            xs = [(i + 0.5) / len(ratios) for i in range(len(ratios))]
            geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
            ax.plot(xs, ratios, marker="." if len(ratios) < 40 else None, linewidth=1.4,
                    label=f"{config_title(config, summary)}, {pass_}: geomean {geo:.2f}x, min {ratios[0]:.2f}x "
                          f"({len(ratios)})")
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_title(section.replace("_", " "))
        ax.set_xlabel("fraction of rows (sorted, worst first)")
        ax.set_ylabel("torch time / cnnext time (>1: cnnext faster)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(_suptitle(summary), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rows(rows, summary, path):
    """Left: torch/cnnext per row (log scale, 1 = parity). Right: fraction of the machine's
    limit per row for both sides (GEMM peak for conv/GEMM, copy bandwidth for pooling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []  # one line per (section, config, name) with both passes beside
    for row in rows:
        key = (row.section, getattr(row, "config", None), row.name)
        if key not in names:
            names.append(key)
    if not names:
        return
    by_key = {}
    for row in rows:
        by_key.setdefault((row.section, getattr(row, "config", None), row.name), {})[row.pass_] = row
    first_pass = {"conv": "fwd", "pool": "fwd", "gemm": "fwd", "model": "inference",
                  "census_conv": "fwd", "census_pool": "fwd"}
    second_pass = {"conv": "fwd+bwd", "pool": "fwd+bwd", "gemm": None, "model": "train step",
                   "census_conv": "fwd+bwd", "census_pool": "fwd+bwd"}

    height = 2.4 + 0.32 * len(names)
    fig, (ax_ratio, ax_frac) = plt.subplots(1, 2, figsize=(15, height), sharey=True,
                                            gridspec_kw={"width_ratios": [1.1, 1]})
    ys = list(range(len(names)))[::-1]
    colors = {"first": "#2b6cb0", "second": "#dd6b20"}
    bar = 0.38
    for y, key in zip(ys, names):
        section = key[0]
        passes = by_key[key]
        for offset, which, pass_name in ((bar / 2, "first", first_pass[section]),
                                         (-bar / 2, "second", second_pass[section])):
            row = passes.get(pass_name)
            if row is None:
                continue
            res = row.result
            if res.get("timed"):
                ratio = res["ratio"]
                ax_ratio.barh(y + offset, math.log10(ratio), height=bar, left=0, color=colors[which])
                ax_ratio.text(math.log10(ratio) + (0.01 if ratio >= 1 else -0.01), y + offset,
                              f"{ratio:.2f}", va="center", ha="left" if ratio >= 1 else "right", fontsize=7)
                for side, marker in (("torch", "o"), ("cnnext", "D")):
                    frac = res[side].get("fraction_of_peak")
                    if frac is not None:
                        ax_frac.plot(100 * frac, y + offset, marker=marker, linestyle="none",
                                     markersize=6, color=colors[which],
                                     markerfacecolor="white" if side == "torch" else colors[which])
            else:
                status = res.get("status", "?")
                ax_ratio.text(0, y + offset, f" {status}", va="center", ha="left", fontsize=7,
                              color="#c53030" if status in ("FAILED", "ERROR") else "#718096")
    labels = [f"{name}  [{section}{', ' + config if config else ''}]" for section, config, name in names]
    ax_ratio.set_yticks(ys)
    ax_ratio.set_yticklabels(labels, fontsize=8)
    ax_ratio.axvline(0, color="black", linewidth=1)
    ticks = [0.1, 0.2, 0.5, 1, 2, 5, 10]
    lo = min([-0.35] + [math.log10(r.result["ratio"]) - 0.15 for r in rows if r.result.get("timed")])
    hi = max([0.35] + [math.log10(r.result["ratio"]) + 0.2 for r in rows if r.result.get("timed")])
    ax_ratio.set_xlim(lo, hi)
    ax_ratio.set_xticks([math.log10(t) for t in ticks if lo <= math.log10(t) <= hi])
    ax_ratio.set_xticklabels([f"{t:g}x" for t in ticks if lo <= math.log10(t) <= hi])
    ax_ratio.set_xlabel("torch time / cnnext time  (log scale; right of 1 = cnnext faster)")
    ax_ratio.grid(axis="x", alpha=0.3)
    ax_frac.set_xlabel("% of the machine's limit measured in this run\n"
                       "(conv, GEMM, models: torch.mm GEMM peak, bfloat16: its peak; pooling: copy bandwidth)")
    ax_frac.grid(axis="x", alpha=0.3)
    fracs = [100 * r.result[s]["fraction_of_peak"] for r in rows if r.result.get("timed")
             for s in ("torch", "cnnext") if r.result[s].get("fraction_of_peak") is not None]
    ax_frac.set_xlim(0, max([100] + [f * 1.05 for f in fracs]))
    # Separators between sections.
    for i in range(1, len(names)):
        if names[i][:2] != names[i - 1][:2]:
            for ax in (ax_ratio, ax_frac):
                ax.axhline(ys[i] + 0.5, color="#a0aec0", linewidth=0.8, linestyle="--")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=colors["first"], label="forward / inference"),
                        Patch(color=colors["second"], label="fwd+bwd / train step"),
                        Line2D([], [], marker="o", linestyle="none", color="gray",
                               markerfacecolor="white", label="torch (right panel)"),
                        Line2D([], [], marker="D", linestyle="none", color="gray",
                               label="cnnext (right panel)")],
               loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(_suptitle(summary), fontsize=10)
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(value):
    return "-" if value is None else f"{100 * value:.0f}%" if value >= 0.1 else f"{100 * value:.1f}%"


def headline(summary):
    """Markdown tables: where cnnext stands against torch per configuration and pass, against
    torch's best layout (each side in its faster one), and on whole models."""
    lines = ["## Where cnnext stands against torch (torch time / cnnext time; >1: cnnext faster)", "",
             "Each configuration on both sides (like for like); min = the slowest row; of limit = median "
             "fraction of the machine's limit per side (GEMM peak, bfloat16 peak, or copy bandwidth).", "",
             "| section | configuration | pass | rows | geomean | min (row) | rows < 0.9x | of limit torch | of limit cnnext |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate(SECTIONS)}
    for g in sorted(_geomean_groups(summary), key=lambda g: order.get(g["section"], 99)):
        f = g.get("fraction_of_peak") or {}
        lines.append(f"| {g['section']} | {config_title(g.get('config'), summary)} | {g['pass']} | {g['rows']} | "
                     f"**{g['geomean_ratio']:.2f}x** | {_min_text(g)} | {g.get('rows_below_floor', '-')} | "
                     f"{_pct(f.get('torch'))} | {_pct(f.get('cnnext'))} |")
    for dtype, best in summary.get("best_layout", {}).items():
        lines += ["", f"### Best layout each side, {dtype}: torch's faster of NCHW and channels_last vs "
                      "cnnext's faster of the two, per row", "",
                  "| section | pass | rows | geomean | min (row) | rows < 0.9x | torch's faster layout | cnnext's faster layout |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in best["groups"].values():
            lines.append(f"| {g['section']} | {g['pass']} | {g['rows']} | **{g['geomean_ratio']:.2f}x** | "
                         f"{g['min_ratio']:.2f}x ({g['min_row']}) | {g['rows_below_floor']} | {_layouts(g['torch_layouts'])} | "
                         f"{_layouts(g['cnnext_layouts'])} |")
    models = [r for r in summary.get("_rows", []) if r.section == "model" and r.result.get("timed")]
    if models:
        lines += ["", "### Models (torch model vs cnnext.convert(model), same weights)", "",
                  "| model | configuration | pass | shape | torch ms | cnnext ms | torch/cnnext |",
                  "|---|---|---|---|---|---|---|"]
        for r in models:
            res = r.result
            lines.append(f"| {r.name} | {config_title(getattr(r, 'config', None), summary)} | {r.pass_} | "
                         f"{r.shape} | {_fmt_ms(res['torch']['median_ms'])} | {_fmt_ms(res['cnnext']['median_ms'])} | "
                         f"{res['ratio']:.2f}x |")
    return lines


def markdown(rows, summary, text):
    """A short page for benchmarks/results/: when, where, how, the headline, the table."""
    m, p, r = summary["machine"], summary["peaks"], summary["run"]
    lines = [f"# cnnext benchmark run, {m['date_utc']}", "",
             f"- command: `{m['command']}` ({r['mode']}, {r['rows']} rows, {r['wall_s']:.0f} s)",
             f"- machine: {m['cpu_model']}, {m['logical_cores']} logical cores, "
             f"{m['torch_threads']} threads, {m['device']}; torch {m['torch']}; "
             f"cnnext {m['cnnext_commit']}",
             f"- {_limits_line(summary)}",
             f"- rows disturbed by other processes (>= {100 * r['disturbed_threshold']:.0f}% of the "
             f"CPUs busy elsewhere, from /proc/stat): {r['disturbed_rows']} of {r['rows']}"]
    if r.get("interrupted"):
        lines.append("- **interrupted**: rows marked 'not run' were not measured")
    if r["failed_rows"]:
        lines.append(f"- rows failing the correctness gate (never timed): {', '.join(r['failed_rows'])}")
    if r["unavailable_rows"]:
        lines.append(f"- rows not available in this build: {len(r['unavailable_rows'])}")
    lines += [""] + headline(dict(summary, _rows=rows))
    lines += ["", "![ratio and fraction of peak per row](results.png)", "", "## Table", "",
              "```", text, "```", "",
              "Peak memory: each side of a layer runs once in a fresh process with glibc's default "
              "allocator; the peak resident set (getrusage ru_maxrss, plus a psutil sampler) minus "
              "the resident set before the call. It includes the output and gradients themselves.",
              ""]
    return "\n".join(lines)


def write_all(rows, summary, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    text = table(rows, summary)
    paths = {name: os.path.join(out_dir, name)
             for name in ("results.json", "results.png", "table.txt", "summary.md")}
    write_json(paths["results.json"], to_json(rows, summary))
    with open(paths["table.txt"], "w") as f:
        f.write(text + "\n")
    with open(paths["summary.md"], "w") as f:
        f.write(markdown(rows, summary, text))
    plot(rows, summary, paths["results.png"])
    return text, paths


def rows_from_json(data):
    """Rows with what the report reads, rebuilt from a results.json."""
    from types import SimpleNamespace

    keys = {"section", "name", "pass", "shape", "config", "spec"}
    rows = []
    for r in data["rows"]:
        config, spec = r.get("config"), r.get("spec")
        if isinstance(config, dict):  # schema 1 kept the layer's definition under "config"
            config, spec = None, config
        rows.append(SimpleNamespace(section=r["section"], name=r["name"], pass_=r["pass"], shape=r["shape"],
                                    config=config, spec=spec,
                                    label=f"{r['name']} {r['pass']}" + (f" [{config}]" if config else ""),
                                    result={k: v for k, v in r.items() if k not in keys}))
    return rows


if __name__ == "__main__":
    # python -m benchmarks.report results.json OUT_DIR: redraw table, PNG and summary from a JSON.
    import sys

    source, out_dir = sys.argv[1], sys.argv[2]
    with open(source) as f:
        data = json.load(f)
    summary = {k: v for k, v in data.items() if k not in ("rows", "schema_version")}
    rows = rows_from_json(data)
    os.makedirs(out_dir, exist_ok=True)
    text = table(rows, summary)
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(markdown(rows, summary, text))
    plot(rows, summary, os.path.join(out_dir, "results.png"))
    if os.path.abspath(source) != os.path.abspath(os.path.join(out_dir, "results.json")):
        write_json(os.path.join(out_dir, "results.json"), data)
    print(text)
