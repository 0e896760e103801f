# The README's commands: `make test` and `make bench`. Both install first, idempotently.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install deps test bench fuzz test-asan cuda-check clean

# torch==2.13.0 only when no torch is importable, so a CUDA torch on a GPU machine is kept.
deps:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q numpy pytest hypothesis expecttest psutil ninja pybind11 "setuptools>=64" wheel matplotlib tqdm scikit-learn

install: deps
	$(PIP) install -q --no-build-isolation -e .

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench: install
	$(PYTHON) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info cnnext/*.so

# Compiles every csrc/cuda source for sm_80 and sm_90 without a GPU (also run by `make test`
# through tests/test_cuda_compile.py). Needs nvcc; no install.
cuda-check:
	$(PYTHON) tools/cuda_compile_check.py
