"""Fits the CPU conv cost rule (csrc/cpu/conv_cost_model.h) on the layer census.

  python tools/fit_conv_cost.py measure [--out csrc/cpu/conv_cost_fit_<isa>.json] [--filter RE]
      times every applicable algorithm of the table on every float32 census conv shape (batch
      1 and 8), for each pass (forward, grad_input, grad_weight) and each layout (NCHW rows on
      NCHW tensors, NHWC rows on channels_last tensors), forcing each row with
      CNNEXT_CONV_ALGO, and records the times with the C++ cost features of each row; and the
      NCHW <-> NHWC copies of each shape's activations. The file is per ISA (the active one,
      cnnext.backends.cpu.isa(); CNNEXT_ISA=avx2 measures the AVX2 kernels on an AVX-512 CPU).
  python tools/fit_conv_cost.py fit
      fits c_call, c_task, c_mac, c_byte per (ISA, algorithm, pass) by non-negative least
      squares on relative error, from every csrc/cpu/conv_cost_fit_<isa>.json; writes
      csrc/cpu/conv_cost_coefficients.h, and reports how the fitted rule's choices compare with
      the fastest measured option (for a channels_last problem the NCHW rows count with their
      copies): on the fitted shapes, and leaving each architecture out of the fit in turn (its
      shapes then judged by a rule fitted without them). An ISA with no file (portable), or an
      (algorithm, pass) an ISA's file lacks, borrows the nearest ISA's coefficients.
  python tools/fit_conv_cost.py check [--fit FILE]
      with the extension rebuilt, compares the rule's choices (cnnext.backends.cpu.choice) with
      the measured times: the loss against the fastest row per shape and pass.

Run the measurement on a quiet machine (it takes several minutes); the fit is instant.
"""
import argparse
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import cnnext  # noqa: E402

PASSES = ("forward", "grad_input", "grad_weight")
ALGORITHMS = ("direct", "pointwise", "winograd", "implicit", "im2col", "matmul",  # ConvAlgoId order
              "pointwise_nhwc", "im2col_nhwc", "direct_nhwc", "grouped_nhwc")
TABLE_ORDER = ("direct_nhwc", "grouped_nhwc", "direct", "matmul", "pointwise_nhwc", "pointwise", "winograd",
               "implicit", "im2col_nhwc", "im2col")  # ties
ISAS = ("portable", "avx2", "avx512")  # the Isa enum's order (gemm/gemm.h)


def fit_path(isa):
    return os.path.join(ROOT, "csrc", "cpu", f"conv_cost_fit_{isa}.json")
COEFFICIENTS_H = os.path.join(ROOT, "csrc", "cpu", "conv_cost_coefficients.h")


CENSUS = os.path.join(ROOT, "benchmarks", "census_layers.json")


def census_conv_layers(path=CENSUS):
    """Every conv layer of the census (benchmarks/census_layers.json) as a problem."""
    with open(path) as f:
        layers = json.load(f)
    for layer in layers:
        if layer["kind"] != "conv":
            continue
        yield dict(name=layer["name"], archs=sorted(layer["from"]),
                   input=[layer["n"], layer["c_in"], layer["h"], layer["w"]],
                   weight=[layer["c_out"], layer["c_in"] // layer["groups"], *layer["kernel"]],
                   stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                   groups=layer["groups"])


def census_shapes():
    return list(census_conv_layers())


def problem_args(spec):
    n, c, h, w = spec["input"]
    return ([n, c, h, w], list(spec["weight"]), list(spec["stride"]), list(spec["padding"]),
            list(spec["dilation"]), spec["groups"])


def time_call(fn, budget_s, min_reps=5, max_reps=50):
    t0 = time.perf_counter()
    fn()  # warm-up: workspaces, page faults
    if time.perf_counter() - t0 > 0.05:  # a large layer: a couple of runs are stable enough
        min_reps = 2
    best, reps, start = math.inf, 0, time.perf_counter()
    while reps < min_reps or (time.perf_counter() - start < budget_s and reps < max_reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def pass_call(pass_, x, w, b, go, args):
    stride, padding, dilation, groups = args
    if pass_ == "forward":
        return lambda: torch.ops.cnnext.conv2d(x, w, b, stride, padding, dilation, groups)
    mask = [pass_ == "grad_input", pass_ == "grad_weight", False]
    return lambda: torch.ops.cnnext.conv2d_backward(go, x, w, stride, padding, dilation, groups,
                                                    mask)


def save(out_path, rows, copies):
    meta = dict(date_utc=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                torch=torch.__version__, threads=torch.get_num_threads(),
                isa=cnnext.backends.cpu.isa(),
                command="python tools/fit_conv_cost.py measure", dtype="float32",
                note="seconds: best of repeated calls of the pass alone, forced with "
                     "CNNEXT_CONV_ALGO; features: calls, tasks, macs, bytes of "
                     "conv_cost_model.cpp; copies: NCHW <-> NHWC copies of input and output")
    with open(out_path, "w") as f:
        json.dump(dict(meta=meta, rows=rows, copies=copies), f, indent=0)


def measure(out_path, name_filter, budget_s, layouts=("nchw", "channels_last")):
    """Resumable: (shape, layout) pairs already in out_path are kept and skipped."""
    torch.manual_seed(0)
    rows, copies, started = [], [], time.time()
    if os.path.exists(out_path):
        with open(out_path) as f:
            data = json.load(f)
        rows, copies = data["rows"], data.get("copies", [])
    done = {(r["name"], r.get("channels_last", False)) for r in rows}
    wanted = [layout == "channels_last" for layout in layouts]
    shapes = [s for s in census_shapes() if (not name_filter or re.search(name_filter, s["name"]))
              and any((s["name"], cl) not in done for cl in wanted)]
    cl = torch.channels_last
    for i, spec in enumerate(shapes):
        inp, wsz, stride, padding, dilation, groups = problem_args(spec)
        x = torch.randn(inp)
        w = torch.randn(wsz) * 0.1
        b = torch.randn(wsz[0])
        out = torch.ops.cnnext.conv2d(x, w, b, stride, padding, dilation, groups)
        go = torch.randn_like(out)
        for channels_last in wanted:
            if (spec["name"], channels_last) in done:
                continue
            if channels_last and ambiguous_layout(inp):
                continue  # the kernels take such a tensor as NCHW: nothing NHWC to measure
            xs, gos = (x.contiguous(memory_format=cl), go.contiguous(memory_format=cl)) \
                if channels_last else (x, go)
            for pass_ in PASSES:
                names = cnnext.backends.cpu.algorithms(inp, wsz, stride, padding, dilation,
                                                       groups, torch.float32, pass_,
                                                       channels_last=channels_last)
                for algo in names:
                    if channels_last and algo in NCHW_ONLY:
                        continue
                    os.environ["CNNEXT_CONV_ALGO"] = algo_knob(algo)
                    try:
                        seconds = time_call(pass_call(pass_, xs, w, b, gos,
                                                      (stride, padding, dilation, groups)),
                                            budget_s)
                    finally:
                        os.environ.pop("CNNEXT_CONV_ALGO", None)
                    rows.append(dict(name=spec["name"], archs=spec.get("archs", []), input=inp,
                                     weight=wsz, stride=stride, padding=padding,
                                     dilation=dilation, groups=groups, pass_=pass_,
                                     algorithm=algo, channels_last=channels_last,
                                     seconds=seconds, features=[]))
        # The copies an NCHW row pays on a channels_last call.
        xc, oc = x.contiguous(memory_format=cl), out.contiguous(memory_format=cl)
        for t, to in ((xc, torch.contiguous_format), (out, cl), (oc, torch.contiguous_format)):
            if True not in wanted:
                break
            # The copy conv2d.cpp makes (csrc/cpu/layout_copy.h), not torch's copy_.
            seconds = time_call(lambda: torch.ops.cnnext._layout_copy(t, to == cl), budget_s)
            copies.append(dict(name=spec["name"], bytes=t.numel() * t.element_size(),
                               seconds=seconds))
        print(f"[{i + 1}/{len(shapes)}] {spec['name']} {time.time() - started:.0f}s", flush=True)
        if i % 10 == 9:
            save(out_path, rows, copies)
    save(out_path, rows, copies)
    print(f"wrote {len(rows)} timings to {out_path}")


# The rows that exist only for NCHW (on a channels_last call they run on copies, which the
# fit accounts for by adding the copies' time) and the CNNEXT_CONV_ALGO knob of each row.
NCHW_ONLY = ("direct", "pointwise", "winograd", "implicit", "im2col")


def ambiguous_layout(size):
    """A tensor whose NCHW and channels_last strides coincide (1x1 maps, one channel): torch
    (and conv2d.cpp) take it as NCHW."""
    n, c, h, w = size
    return h * w == 1 or c == 1


def algo_knob(algo):
    return algo[:-len("_nhwc")] if algo.endswith("_nhwc") else algo


def nnls_fit(rows):
    from scipy.optimize import nnls

    a = np.array([r["features"] for r in rows], dtype=float)
    t = np.array([r["seconds"] for r in rows], dtype=float)
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    weights = 1.0 / t  # relative error: every shape counts alike
    coef, _ = nnls((a / scale) * weights[:, None], np.ones_like(t))
    return coef / scale


# Timings that ran more than this many times slower than the fit predicts are treated as
# disturbed (a 2-core machine shared with other processes: an OpenMP region waits a scheduler
# tick for a descheduled thread) and left out of the next round of the fit.
DISTURBED = 4.0


def robust_fit(rows, rounds=4):
    keep = rows
    coef = None
    for _ in range(rounds):
        if len(keep) < 3:
            break
        coef = nnls_fit(keep)
        ratio = [r["seconds"] / max(float(np.dot(coef, r["features"])), 1e-12) for r in rows]
        keep = [r for r, q in zip(rows, ratio) if q <= DISTURBED]
    if coef is not None and keep:
        # Least squares on relative error leans low where the model cannot follow the shapes
        # (overestimates cost more than underestimates); one scale makes the estimate unbiased
        # in log terms, which is how rows are compared.
        pred = [max(float(np.dot(coef, r["features"])), 1e-12) for r in keep]
        coef = coef * float(np.exp(np.mean([math.log(r["seconds"] / q) for r, q in zip(keep, pred)])))
    return coef


def fit(rows):
    coefficients = {}
    for algo in ALGORITHMS:
        for pass_ in PASSES:
            sel = [r for r in rows if r["algorithm"] == algo and r["pass_"] == pass_]
            coefficients[(algo, pass_)] = robust_fit(sel) if len(sel) >= 3 else None
    return coefficients


def fit_copies(copies):
    """[c_call, c_byte] of one layout copy."""
    rows = [dict(features=[1.0, c["bytes"]], seconds=c["seconds"]) for c in copies]
    return robust_fit(rows) if len(rows) >= 3 else None


def predict(coefficients, row):
    c = coefficients.get((row["algorithm"], row["pass_"]))
    if c is None:
        return math.inf
    return float(np.dot(c, row["features"]))


def copy_bytes(row):
    """Bytes the NCHW rows copy on a channels_last call (conv2d.cpp): the input and output
    activations, 4-byte float32."""
    n, c, h, w = row["input"]
    o = row["weight"][0]
    oh = (h + 2 * row["padding"][0] - row["dilation"][0] * (row["weight"][2] - 1) - 1) // row["stride"][0] + 1
    ow = (w + 2 * row["padding"][1] - row["dilation"][1] * (row["weight"][3] - 1) - 1) // row["stride"][1] + 1
    return 4.0 * (n * c * h * w + n * o * oh * ow)


def group_problems(rows, copies=()):
    """(shape, pass, layout) -> candidate options. A channels_last problem's candidates are
    the NHWC rows and the NCHW rows with their layout copies (measured seconds and features
    carried in "copy_seconds" / "copy_bytes")."""
    copy_s = {}
    for c in copies:
        copy_s.setdefault(c["name"], []).append(c["seconds"])
    problems = {}
    for r in rows:
        cl = r.get("channels_last", False)
        problems.setdefault((r["name"], r["pass_"], cl), []).append(r)
    for (name, pass_, cl), cands in list(problems.items()):
        if not cl or name not in copy_s:
            continue
        for r in problems.get((name, pass_, False), []):
            if r["algorithm"] == "matmul":  # the same row in both layouts: measured on each
                continue
            # input CL -> NCHW, and the result back (or grad_output in, for the backward)
            cands.append(dict(r, channels_last=True, via_copies=True,
                              copy_seconds=copy_s[name][0] + copy_s[name][1],
                              copy_bytes=copy_bytes(r)))
    return problems


def option_seconds(r):
    return r["seconds"] + r.get("copy_seconds", 0.0)


def option_estimate(coefficients, copy_coef, r):
    est = predict(coefficients, r)
    if r.get("via_copies"):
        est += copy_coef[0] + copy_coef[1] * r["copy_bytes"] if copy_coef is not None else 0.0
    return est


def evaluate(problems, coefficients_for, copy_coef=None):
    """loss = time of the rule's pick / fastest time, per (shape, pass, layout)."""
    losses = []
    order = {a: i for i, a in enumerate(TABLE_ORDER)}
    for key, cands in problems.items():
        coefficients = coefficients_for(key, cands)
        pick = min(cands, key=lambda r: (option_estimate(coefficients, copy_coef, r),
                                         order[r["algorithm"]]))
        best = min(cands, key=option_seconds)
        label = lambda r: r["algorithm"] + (" (copies)" if r.get("via_copies") else "")
        losses.append((option_seconds(pick) / option_seconds(best), key, label(pick), label(best)))
    return losses


def summarize(label, losses):
    ratios = np.array([l[0] for l in losses])
    geo = float(np.exp(np.log(ratios).mean()))
    exact = float((ratios <= 1.0 + 1e-12).mean())
    within = float((ratios <= 1.10).mean())
    worst = sorted(losses, key=lambda l: l[0], reverse=True)[:8]
    print(f"{label}: {len(ratios)} problems; rule/fastest geomean {geo:.3f}, "
          f"picks the fastest {exact:.0%}, within 10% {within:.0%}, worst {ratios.max():.2f}")
    for ratio, key, pick, best in worst:
        if ratio > 1.10:
            layout = "channels_last" if key[2] else "NCHW"
            print(f"    {ratio:5.2f}x  {key[0]} {key[1]} {layout}: rule {pick}, fastest {best}")
    return dict(problems=len(ratios), geomean_loss=geo, fastest_share=exact,
                within_10pct_share=within, worst=float(ratios.max()))


NEVER = [1.0, 0.0, 0.0, 0.0]  # an (algorithm, pass) never measured anywhere: never chosen


def write_header(per_isa, copies_per_isa, path, metas):
    """per_isa: isa -> {(algo, pass): coef or None}. Missing entries borrow the nearest ISA's."""
    def nearest(isa):
        i = ISAS.index(isa)
        return sorted((j for j in range(len(ISAS)) if ISAS[j] in per_isa),
                      key=lambda j: (abs(j - i), -j))
    lines = [
        "#pragma once",
        "// Generated by tools/fit_conv_cost.py from csrc/cpu/conv_cost_fit_<isa>.json: do not edit.",
    ]
    for isa, meta in metas.items():
        lines.append(f"// {isa}: fitted on {meta.get('problems', '?')} census problems measured "
                     f"{meta.get('date_utc', '?')} (torch {meta.get('torch', '?')}, "
                     f"{meta.get('threads', '?')} threads, float32).")
    lines += [
        "// An ISA without measurements borrows the nearest measured ISA's coefficients.",
        "// [isa][algorithm][pass][c_call (s), c_task (s), c_mac (s per multiply-add), "
        "c_byte (s per byte)]",
        "namespace cnnext::cpu {",
        f"constexpr double kConvCostCoefficients[{len(ISAS)}][{len(ALGORITHMS)}][{len(PASSES)}][4] = {{",
    ]
    for isa in ISAS:
        lines.append(f"    {{  // {isa}")
        for algo in ALGORITHMS:
            cells = []
            for pass_ in PASSES:
                c = None
                for j in nearest(isa):
                    c = per_isa[ISAS[j]].get((algo, pass_))
                    if c is not None:
                        break
                c = NEVER if c is None else list(c)
                cells.append("{" + ", ".join(f"{v:.6g}" for v in c) + "}")
            lines.append(f"        {{{', '.join(cells)}}},  // {algo}")
        lines.append("    },")
    lines += ["};", "// [isa][c_call (s), c_byte (s per byte)] of one NCHW <-> NHWC activation copy.",
              f"constexpr double kLayoutCopyCoefficients[{len(ISAS)}][2] = {{"]
    for isa in ISAS:
        c = None
        for j in nearest(isa):
            c = copies_per_isa.get(ISAS[j])
            if c is not None:
                break
        c = [0.0, 0.0] if c is None else list(c)
        lines.append(f"    {{{', '.join(f'{v:.6g}' for v in c)}}},  // {isa}")
    lines += ["};", "}  // namespace cnnext::cpu", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def refresh_features(rows, isa):
    """Features from the built extension, computed for the ISA the times were measured on
    (the model's definition may have changed since; the times themselves do not)."""
    previous = os.environ.get("CNNEXT_ISA")
    os.environ["CNNEXT_ISA"] = isa
    try:
        if cnnext.backends.cpu.isa() != isa:
            # This CPU lacks the ISA: the extension would narrow it and compute another ISA's
            # features. Keep those stored with the times (from the last fit on such a CPU).
            print(f"   this CPU cannot run {isa}: its stored features are kept")
            return
        for r in rows:
            r["features"] = list(torch.ops.cnnext._conv2d_cost_features(
                r["input"], r["weight"], r["stride"], r["padding"], r["dilation"], r["groups"],
                torch.float32, r["pass_"], r["algorithm"], r.get("channels_last", False))[:4])
    finally:
        if previous is None:
            os.environ.pop("CNNEXT_ISA", None)
        else:
            os.environ["CNNEXT_ISA"] = previous


def fit_one_isa(path):
    with open(path) as f:
        data = json.load(f)
    isa = data["meta"].get("isa", "avx2")
    rows, copies = data["rows"], data.get("copies", [])
    print(f"== {isa}: {path}")
    refresh_features(rows, isa)
    problems = group_problems(rows, copies)
    coefficients = fit(rows)
    copy_coef = fit_copies(copies)
    in_sample = summarize("fitted rule on the fitted shapes",
                          evaluate(problems, lambda k, c: coefficients, copy_coef))
    # Leave one architecture out: shapes of architecture A judged by a rule fitted without
    # every shape that A has (shapes shared with other architectures are left out too).
    archs = sorted({a for r in rows for a in r["archs"]})
    held = []
    for arch in archs:
        rest = [r for r in rows if arch not in r["archs"]]
        if not rest:
            continue
        c_rest = fit(rest)
        mine = {k: v for k, v in problems.items() if arch in v[0]["archs"]}
        held += evaluate(mine, lambda k, c: c_rest, copy_coef)
    held_out = summarize("leave-one-architecture-out", held) if held else None
    meta = dict(data["meta"], isa=isa, problems=len(problems))
    data["fit"] = dict(
        coefficients={f"{a} {p}": (None if c is None else list(map(float, c)))
                      for (a, p), c in coefficients.items()},
        layout_copy=None if copy_coef is None else list(map(float, copy_coef)),
        in_sample=in_sample, leave_one_architecture_out=held_out)
    with open(path, "w") as f:
        json.dump(data, f, indent=0)
    return isa, coefficients, copy_coef, meta


def command_fit():
    per_isa, copies_per_isa, metas = {}, {}, {}
    for isa in ISAS:
        if os.path.exists(fit_path(isa)):
            isa_, coefficients, copy_coef, meta = fit_one_isa(fit_path(isa))
            per_isa[isa_], copies_per_isa[isa_], metas[isa_] = coefficients, copy_coef, meta
    write_header(per_isa, copies_per_isa, COEFFICIENTS_H, metas)
    print(f"wrote {COEFFICIENTS_H}; rebuild the extension to use it")


def command_check(path):
    """The built extension's choices of row (within the layout) against the measured times."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    problems = group_problems(rows)
    losses = []
    for key, cands in problems.items():
        r0 = cands[0]
        pick = cnnext.backends.cpu.choice(r0["input"], r0["weight"], r0["stride"], r0["padding"],
                                          r0["dilation"], r0["groups"], torch.float32, r0["pass_"],
                                          channels_last=key[2])
        times = {r["algorithm"]: r["seconds"] for r in cands}
        best = min(times.values())
        losses.append((times[pick] / best, key, pick, min(times, key=times.get)))
    summarize("built rule", losses)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("measure", "fit", "check"))
    ap.add_argument("--fit", "--out", dest="path", default=None,
                    help="default: csrc/cpu/conv_cost_fit_<active isa>.json")
    ap.add_argument("--filter", default=None, help="regex on census layer names")
    ap.add_argument("--budget", type=float, default=0.15, help="seconds per timing (after 3 reps)")
    ap.add_argument("--layouts", default="nchw,channels_last",
                    help="comma-separated: nchw, channels_last (measure)")
    args = ap.parse_args()
    if args.command == "fit":
        command_fit()
        return
    path = args.path or fit_path(cnnext.backends.cpu.isa())
    if args.command == "measure":
        measure(path, args.filter, args.budget, tuple(args.layouts.split(",")))
    else:
        command_check(path)


if __name__ == "__main__":
    main()
