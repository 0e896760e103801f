"""cnnext's benchmark suite: cnnext against torch on real network layers, pooling, GEMM and
whole models, beside the machine's own limits measured in the same run.

Run it with `python -m benchmarks` (see benchmarks/README.md)."""
