"""python -m benchmarks [--quick|--full] [--config f32-nchw,f32-cl,bf16-cl] [--filter REGEX]
                       [--device cpu|cuda] [--threads N] [--dtype float32] [--out DIR] [--retries N]"""
import argparse
import os
import sys

from .configs import CONFIGS, DEFAULT_CONFIGS

# glibc returns large freed blocks to the OS and takes them back page by page (a page fault
# per 4 KiB on first touch), which made the same row vary 1.3-6x between runs on the dev VM.
# Pinning the allocator (no mmap'ed blocks, no trimming) lets both sides reuse their pages.
PINNED_ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
                    "MALLOC_TOP_PAD_": str(64 << 20)}
_REEXEC_FLAG = "CNNEXT_BENCH_ALLOCATOR_PINNED"


def _config_list(text):
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown configuration(s) {unknown or text!r}; "
                                         f"choose from {', '.join(CONFIGS)}")
    return keys


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=(
        "cnnext vs torch on real network layers, pooling, GEMM and whole models, beside the "
        "machine's limits measured in the same run. Writes table.txt, results.json and "
        "results.png to --out."))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="representative subset, short time budget (default; < 3 min on 2 cores)")
    mode.add_argument("--full", dest="quick", action="store_false",
                      help="every layer, pooling row and model, longer time budget per row")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--config", default=",".join(DEFAULT_CONFIGS), type=_config_list,
                   help="configurations (dtype x layout) of the census and model rows, comma-separated, "
                        f"from {', '.join(CONFIGS)} (default: {','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"], default="float32",
                   help="dtype of the GEMM peak and of the old 16-layer suite (--full)")
    p.add_argument("--filter", metavar="REGEX", help="only rows whose name, section/name or source "
                   "architecture matches (re.search), e.g. 'conv5x5_dw', 'census_pool/', 'convnext'")
    p.add_argument("--threads", type=int, default=0, help="torch/cnnext threads (default: torch's)")
    p.add_argument("--out", default="bench-out", help="output directory (default: bench-out)")
    p.add_argument("--retries", type=int, default=0,
                   help="rerun a row up to N times while other processes load the CPU")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per row")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-pin-allocator", dest="pin", action="store_false",
                   help="keep glibc's default malloc settings")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    env_update = dict(PINNED_ALLOCATOR) if args.pin else {}
    if args.threads:
        env_update["OMP_NUM_THREADS"] = str(args.threads)
    if env_update and os.environ.get(_REEXEC_FLAG) != "1":
        # malloc reads these at start-up only: restart the interpreter with them set.
        os.environ.update(env_update, **{_REEXEC_FLAG: "1"})
        os.execv(sys.executable, [sys.executable, "-m", "benchmarks", *argv])

    import torch

    from .run import Config, defaults, run_suite

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("python -m benchmarks: --device cuda, but torch.cuda.is_available() is False "
                 f"(torch {torch.__version__})")
    config = defaults(Config(device=args.device, dtype=getattr(torch, args.dtype), quick=args.quick,
                             threads=args.threads, filter=args.filter, out_dir=args.out,
                             retries=args.retries, progress=args.progress, configs=args.config))
    if args.budget is not None:
        config.timing["budget_s"] = config.model_timing["budget_s"] = args.budget
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: report what was measured
    _, _, text, paths = run_suite(config)
    print(text)
    print(f"\nwrote {paths['table.txt']}, {paths['results.json']}, {paths['results.png']}")


if __name__ == "__main__":
    main()
