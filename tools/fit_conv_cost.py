"""Fits the CPU conv cost rule (csrc/cpu/conv_cost_model.h) on the layer census.

  python tools/fit_conv_cost.py measure [--out csrc/cpu/conv_cost_fit.json] [--filter RE]
      times every applicable algorithm of the table on every float32 census conv shape (batch
      1 and 8), for each pass (forward, grad_input, grad_weight), forcing each row with
      CNNEXT_CONV_ALGO, and records the times with the C++ cost features of each row.
  python tools/fit_conv_cost.py fit [--fit csrc/cpu/conv_cost_fit.json]
      fits c_call, c_task, c_mac, c_byte per (algorithm, pass) by non-negative least squares on relative
      error, writes csrc/cpu/conv_cost_coefficients.h, and reports how the fitted rule's choices
      compare with the fastest measured row: on the fitted shapes, and leaving each architecture
      out of the fit in turn (its shapes then judged by a rule fitted without them).
  python tools/fit_conv_cost.py check [--fit ...]
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
              "pointwise_nhwc", "im2col_nhwc", "direct_nhwc")
TABLE_ORDER = ("direct_nhwc", "direct", "matmul", "pointwise_nhwc", "pointwise", "winograd",
               "implicit", "im2col_nhwc", "im2col")  # ties
DEFAULT_FIT = os.path.join(ROOT, "csrc", "cpu", "conv_cost_fit.json")
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


def save(out_path, rows):
    meta = dict(date_utc=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                torch=torch.__version__, threads=torch.get_num_threads(),
                command="python tools/fit_conv_cost.py measure", dtype="float32",
                note="seconds: best of repeated calls of the pass alone, forced with "
                     "CNNEXT_CONV_ALGO; features: calls, tasks, macs, bytes of conv_cost_model.cpp")
    with open(out_path, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=0)


def measure(out_path, name_filter, budget_s):
    """Resumable: shapes already in out_path are kept and skipped."""
    torch.manual_seed(0)
    rows, started = [], time.time()
    if os.path.exists(out_path):
        with open(out_path) as f:
            rows = json.load(f)["rows"]
    done = {r["name"] for r in rows}
    shapes = [s for s in census_shapes() if (not name_filter or re.search(name_filter, s["name"]))
              and s["name"] not in done]
    for i, spec in enumerate(shapes):
        inp, wsz, stride, padding, dilation, groups = problem_args(spec)
        x = torch.randn(inp)
        w = torch.randn(wsz) * 0.1
        b = torch.randn(wsz[0])
        out = torch.ops.cnnext.conv2d(x, w, b, stride, padding, dilation, groups)
        go = torch.randn_like(out)
        for pass_ in PASSES:
            names = cnnext.backends.cpu.algorithms(inp, wsz, stride, padding, dilation, groups,
                                                   torch.float32, pass_)
            for algo in names:
                os.environ["CNNEXT_CONV_ALGO"] = algo
                try:
                    seconds = time_call(pass_call(pass_, x, w, b, go,
                                                  (stride, padding, dilation, groups)), budget_s)
                finally:
                    os.environ.pop("CNNEXT_CONV_ALGO", None)
                feats = torch.ops.cnnext._conv2d_cost_features(
                    inp, wsz, stride, padding, dilation, groups, torch.float32, pass_, algo)
                rows.append(dict(name=spec["name"], archs=spec.get("archs", []), input=inp,
                                 weight=wsz, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups, pass_=pass_, algorithm=algo, seconds=seconds,
                                 features=list(feats[:4])))
        print(f"[{i + 1}/{len(shapes)}] {spec['name']} {time.time() - started:.0f}s", flush=True)
        if i % 10 == 9:
            save(out_path, rows)
    save(out_path, rows)
    print(f"wrote {len(rows)} timings to {out_path}")


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
DISTURBED = 2.5


def robust_fit(rows, rounds=4):
    keep = rows
    coef = None
    for _ in range(rounds):
        if len(keep) < 3:
            break
        coef = nnls_fit(keep)
        ratio = [r["seconds"] / max(float(np.dot(coef, r["features"])), 1e-12) for r in rows]
        keep = [r for r, q in zip(rows, ratio) if q <= DISTURBED]
    return coef


def fit(rows):
    coefficients = {}
    for algo in ALGORITHMS:
        for pass_ in PASSES:
            sel = [r for r in rows if r["algorithm"] == algo and r["pass_"] == pass_]
            coefficients[(algo, pass_)] = robust_fit(sel) if len(sel) >= 3 else None
    return coefficients


def predict(coefficients, row):
    c = coefficients.get((row["algorithm"], row["pass_"]))
    if c is None:
        return math.inf
    return float(np.dot(c, row["features"]))


def group_problems(rows):
    problems = {}
    for r in rows:
        key = (r["name"], r["pass_"])
        problems.setdefault(key, []).append(r)
    return problems


def evaluate(problems, coefficients_for):
    """loss = time of the rule's pick / fastest time, per (shape, pass)."""
    losses = []
    for key, cands in problems.items():
        coefficients = coefficients_for(key, cands)
        order = {a: i for i, a in enumerate(TABLE_ORDER)}
        pick = min(cands, key=lambda r: (predict(coefficients, r), order[r["algorithm"]]))
        best = min(r["seconds"] for r in cands)
        losses.append((pick["seconds"] / best, key, pick["algorithm"],
                       min(cands, key=lambda r: r["seconds"])["algorithm"]))
    return losses


def summarize(label, losses):
    ratios = np.array([l[0] for l in losses])
    geo = float(np.exp(np.log(ratios).mean()))
    exact = float((ratios <= 1.0 + 1e-12).mean())
    within = float((ratios <= 1.10).mean())
    worst = sorted(losses, reverse=True)[:8]
    print(f"{label}: {len(ratios)} problems; rule/fastest geomean {geo:.3f}, "
          f"picks the fastest {exact:.0%}, within 10% {within:.0%}, worst {ratios.max():.2f}")
    for ratio, key, pick, best in worst:
        if ratio > 1.10:
            print(f"    {ratio:5.2f}x  {key[0]} {key[1]}: rule {pick}, fastest {best}")
    return dict(problems=len(ratios), geomean_loss=geo, fastest_share=exact,
                within_10pct_share=within, worst=float(ratios.max()))


def write_header(coefficients, path, meta):
    lines = [
        "#pragma once",
        "// Generated by tools/fit_conv_cost.py from csrc/cpu/conv_cost_fit.json: do not edit.",
        f"// Fitted {meta.get('date_utc', '?')} on {meta.get('problems', '?')} census problems "
        f"(torch {meta.get('torch', '?')}, {meta.get('threads', '?')} threads, float32).",
        "// [algorithm][pass][c_call (s), c_task (s), c_mac (s per multiply-add), c_byte (s per byte)]",
        "namespace cnnext::cpu {",
        f"constexpr double kConvCostCoefficients[{len(ALGORITHMS)}][{len(PASSES)}][4] = {{",
    ]
    for algo in ALGORITHMS:
        cells = []
        for pass_ in PASSES:
            c = coefficients[(algo, pass_)]
            # An (algorithm, pass) never measured is never chosen by the rule.
            c = [1.0, 0.0, 0.0, 0.0] if c is None else list(c)
            cells.append("{" + ", ".join(f"{v:.6g}" for v in c) + "}")
        lines.append(f"    {{{', '.join(cells)}}},  // {algo}")
    lines += ["};", "}  // namespace cnnext::cpu", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def refresh_features(rows):
    """Features from the built extension (the model's definition may have changed since the
    times were measured; the times themselves do not)."""
    for r in rows:
        r["features"] = list(torch.ops.cnnext._conv2d_cost_features(
            r["input"], r["weight"], r["stride"], r["padding"], r["dilation"], r["groups"],
            torch.float32, r["pass_"], r["algorithm"])[:4])


def command_fit(path):
    with open(path) as f:
        data = json.load(f)
    rows = data["rows"]
    refresh_features(rows)
    problems = group_problems(rows)
    coefficients = fit(rows)
    in_sample = summarize("fitted rule on the fitted shapes", evaluate(problems, lambda k, c: coefficients))
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
        held += evaluate(mine, lambda k, c: c_rest)
    held_out = summarize("leave-one-architecture-out", held) if held else None
    meta = dict(data["meta"], problems=len(problems))
    write_header(coefficients, COEFFICIENTS_H, meta)
    data["fit"] = dict(
        coefficients={f"{a} {p}": (None if c is None else list(map(float, c)))
                      for (a, p), c in coefficients.items()},
        in_sample=in_sample, leave_one_architecture_out=held_out)
    with open(path, "w") as f:
        json.dump(data, f, indent=0)
    print(f"wrote {COEFFICIENTS_H}; rebuild the extension to use it")


def command_check(path):
    """The built extension's choices against the measured times."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    problems = group_problems(rows)
    losses = []
    for key, cands in problems.items():
        r0 = cands[0]
        pick = cnnext.backends.cpu.choice(r0["input"], r0["weight"], r0["stride"], r0["padding"],
                                          r0["dilation"], r0["groups"], torch.float32, r0["pass_"])
        times = {r["algorithm"]: r["seconds"] for r in cands}
        best = min(times.values())
        losses.append((times[pick] / best, key, pick, min(times, key=times.get)))
    summarize("built rule", losses)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("measure", "fit", "check"))
    ap.add_argument("--fit", "--out", dest="path", default=DEFAULT_FIT)
    ap.add_argument("--filter", default=None, help="regex on census layer names")
    ap.add_argument("--budget", type=float, default=0.15, help="seconds per timing (after 3 reps)")
    args = ap.parse_args()
    if args.command == "measure":
        measure(args.path, args.filter, args.budget)
    elif args.command == "fit":
        command_fit(args.path)
    else:
        command_check(args.path)


if __name__ == "__main__":
    main()
