"""What a person reads: a table grouped by section, a JSON of every number, a PNG chart."""
import json
import math
import os

SECTION_TITLES = {
    "conv": "Convolution layers  (throughput: GFLOP/s; limit: torch.mm GEMM peak)",
    "pool": "Pooling  (throughput: GB/s of the minimum bytes moved; limit: copy bandwidth)",
    "gemm": "GEMM, float32 squares  (cnnext.gemm vs torch.mm; limit: torch.mm peak)",
    "model": "Models  (torch model vs cnnext.convert(model), same weights)",
}
SECTIONS = list(SECTION_TITLES)


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


def table(rows, summary):
    """The end-of-run table as a string."""
    lines = []
    header = (f"{'row':<18}{'pass':<11}{'shape':<34}{'torch ms':>10}{'cnnext ms':>11}"
              f"{'torch/cnnext':>14}{'thru t|c':>14}{'of limit t|c':>14}{'faults t|c':>12}  note")
    peaks = summary["peaks"]
    lines.append(f"cnnext vs torch on {summary['machine']['cpu_model']} "
                 f"({summary['machine']['torch_threads']} threads, {summary['machine']['dtype']}, "
                 f"{summary['machine']['device']}), {summary['machine']['date_utc']}")
    lines.append(f"machine limits measured in this run: GEMM peak {peaks['gemm_gflops']:.0f} GFLOP/s "
                 f"(torch.mm), copy bandwidth {peaks['copy_gbps']:.1f} GB/s")
    lines.append("torch/cnnext = torch's median time / cnnext's: >1 (▲) cnnext faster, <1 (▼) slower. "
                 "t|c = torch | cnnext.")
    for section in SECTIONS:
        section_rows = [r for r in rows if r.section == section]
        if not section_rows:
            continue
        lines.append("")
        lines.append(f"== {SECTION_TITLES[section]}")
        lines.append(header)
        for row in section_rows:
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
                f"{row.name:<18}{row.pass_:<11}{row.shape:<34}"
                f"{_fmt_ms(t.get('median_ms')):>10}{_fmt_ms(c.get('median_ms')):>11}"
                f"{_fmt_ratio(res.get('ratio')):>14}"
                f"{(_fmt_tp(t) + '|' + _fmt_tp(c)) if res.get('timed') else '-':>14}"
                f"{(_fmt_frac(t) + '|' + _fmt_frac(c)) if res.get('timed') else '-':>14}"
                f"{faults:>12}  {note}".rstrip())
        for key, g in summary["geomeans"].items():
            if key.startswith(section + " "):
                lines.append(f"{'':<18}{'geomean ' + key.split(' ', 1)[1] + ' over ' + str(g['rows']) + ' rows':<45}"
                             f"{'':<19}{_fmt_ratio(g['geomean_ratio']):>14}")
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
        record = {"section": row.section, "name": row.name, "pass": row.pass_, "shape": row.shape}
        if row.spec is not None and hasattr(row.spec, "__dataclass_fields__"):
            record["config"] = {k: getattr(row.spec, k) for k in row.spec.__dataclass_fields__
                                if isinstance(getattr(row.spec, k), (int, float, str, bool, tuple))}
        record.update(row.result)
        records.append(record)
    return _clean({"schema_version": 1, **summary, "rows": records})


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)


def plot(rows, summary, path):
    """Left: torch/cnnext per row (log scale, 1 = parity). Right: fraction of the machine's
    limit per row for both sides (GEMM peak for conv/GEMM, copy bandwidth for pooling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []  # one line per (section, name) with fwd and fwd+bwd (or inference/train) beside
    for row in rows:
        key = (row.section, row.name)
        if key not in names:
            names.append(key)
    if not names:
        return
    by_key = {}
    for row in rows:
        by_key.setdefault((row.section, row.name), {})[row.pass_] = row
    first_pass = {"conv": "fwd", "pool": "fwd", "gemm": "fwd", "model": "inference"}
    second_pass = {"conv": "fwd+bwd", "pool": "fwd+bwd", "gemm": None, "model": "train step"}

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
    labels = [f"{name}  [{section}]" for section, name in names]
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
                       "(conv, GEMM, models: torch.mm GEMM peak; pooling: copy bandwidth)")
    ax_frac.grid(axis="x", alpha=0.3)
    fracs = [100 * r.result[s]["fraction_of_peak"] for r in rows if r.result.get("timed")
             for s in ("torch", "cnnext") if r.result[s].get("fraction_of_peak") is not None]
    ax_frac.set_xlim(0, max([100] + [f * 1.05 for f in fracs]))
    # Separators between sections.
    for i in range(1, len(names)):
        if names[i][0] != names[i - 1][0]:
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
    m, p = summary["machine"], summary["peaks"]
    fig.suptitle(f"cnnext vs torch {m['torch']} — {m['cpu_model']}, {m['torch_threads']} threads, "
                 f"{m['dtype']}, {m['device']} — {m['date_utc']}\n"
                 f"limits measured in-run: GEMM {p['gemm_gflops']:.0f} GFLOP/s, "
                 f"copy {p['copy_gbps']:.1f} GB/s\n"
                 + "geomean torch/cnnext: " + ", ".join(f"{k} {g['geomean_ratio']:.2f}x"
                                                        for k, g in summary["geomeans"].items()),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows, summary, text):
    """A short page for benchmarks/results/: when, where, how, the headline, the table."""
    m, p, r = summary["machine"], summary["peaks"], summary["run"]
    lines = [f"# cnnext benchmark run, {m['date_utc']}", "",
             f"- command: `{m['command']}` ({r['mode']}, {r['rows']} rows, {r['wall_s']:.0f} s)",
             f"- machine: {m['cpu_model']}, {m['logical_cores']} logical cores, "
             f"{m['torch_threads']} threads, {m['device']}; torch {m['torch']}; "
             f"cnnext {m['cnnext_commit']}; dtype {m['dtype']}",
             f"- limits measured in this run: GEMM peak {p['gemm_gflops']:.0f} GFLOP/s (torch.mm), "
             f"copy bandwidth {p['copy_gbps']:.1f} GB/s",
             f"- rows disturbed by other processes (>= {100 * r['disturbed_threshold']:.0f}% of the "
             f"CPUs busy elsewhere, from /proc/stat): {r['disturbed_rows']} of {r['rows']}"]
    if r.get("interrupted"):
        lines.append("- **interrupted**: rows marked 'not run' were not measured")
    if r["failed_rows"]:
        lines.append(f"- rows failing the correctness gate (never timed): {', '.join(r['failed_rows'])}")
    if r["unavailable_rows"]:
        lines.append(f"- rows not available in this build: {len(r['unavailable_rows'])}")
    lines += ["", "## Headline: geometric mean of torch time / cnnext time (>1: cnnext faster)", "",
              "| section | pass | rows | torch/cnnext |", "|---|---|---|---|"]
    for key, g in summary["geomeans"].items():
        section, pass_ = key.split(" ", 1)
        lines.append(f"| {section} | {pass_} | {g['rows']} | {g['geomean_ratio']:.2f}x |")
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

    keys = {"section", "name", "pass", "shape", "config"}
    return [SimpleNamespace(section=r["section"], name=r["name"], pass_=r["pass"], shape=r["shape"],
                            label=f"{r['name']} {r['pass']}",
                            result={k: v for k, v in r.items() if k not in keys})
            for r in data["rows"]]


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
