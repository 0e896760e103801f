# The README's commands: `make test` and `make bench`. Both install first, idempotently.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install deps test bench wheel fuzz test-asan cuda-check clean

# torch==2.13.0 only when no torch is importable, so a CUDA torch on a GPU machine is kept.
deps:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q numpy pytest hypothesis expecttest psutil ninja pybind11 "setuptools>=64" wheel matplotlib tqdm scikit-learn \
		onnx onnxscript onnxruntime

install: deps
	$(PIP) install -q --no-build-isolation -e .

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench: install
	$(PYTHON) -m benchmarks $(BENCH_ARGS)

# A binary wheel in dist/ for the installed torch (the extension records that torch's version
# and refuses any other at import). Built in the tree: build/ objects are reused.
wheel: deps
	$(PIP) wheel --no-build-isolation --no-deps -w dist .

clean:
	rm -rf build dist *.egg-info cnnext/*.so cnnext/_build_info.py

# ---- hardening (issue 5) --------------------------------------------------------------------
# make fuzz: the property tests with a long budget (examples per test; fresh random examples).
FUZZ_EXAMPLES ?= 5000
fuzz: install
	CNNEXT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTHON) -m pytest -p no:cacheprovider \
		--hypothesis-show-statistics tests/test_fuzz_conv2d.py tests/test_fuzz_pool2d.py $(PYTEST_ARGS)

# make test-asan: the conv and pooling tests against an AddressSanitizer+UBSan build. The
# sanitized extension is built in a copy of the tree (build/asan), so the normal build and
# install are untouched; pytest runs from the copy, whose cnnext comes first on sys.path.
# CPU only: CUDA is not built there and hidden from torch (compute-sanitizer checks CUDA).
ASAN_DIR := build/asan
ASAN_TESTS ?= tests/test_smoke.py tests/test_threads.py tests/test_errors.py tests/test_large.py \
	tests/test_gemm.py tests/test_winograd.py tests/test_fuse.py tests/test_depthwise.py \
	tests/test_error_inputs.py tests/test_weight_cache.py tests/test_autograd_kernels.py $(sort $(wildcard tests/test_*conv*.py tests/test_*pool*.py))
# libstdc++ preloaded too: python does not link it, and without it ASan's __cxa_throw
# interceptor finds no real __cxa_throw and aborts on torch's first C++ exception.
ASAN_ENV = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	CUDA_VISIBLE_DEVICES= \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-asan: deps
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	tar -c --exclude=./build --exclude=./.git --exclude='*.so' --exclude=__pycache__ \
		--exclude=./.hypothesis --exclude='*.egg-info' --exclude=./bench-out . | tar -x -C $(ASAN_DIR)
	cd $(ASAN_DIR) && CNNEXT_SANITIZE=1 CNNEXT_NO_CUDA=1 $(PYTHON) setup.py -q build_ext --inplace
	cd $(ASAN_DIR) && $(ASAN_ENV) $(PYTHON) -c "import cnnext, os; \
		assert os.path.abspath('cnnext') in cnnext.__file__, cnnext.__file__"
	cd $(ASAN_DIR) && $(ASAN_ENV) $(PYTHON) -m pytest -p no:cacheprovider -m "not large" \
		$(ASAN_TESTS) $(PYTEST_ARGS)

# Compiles every csrc/cuda source for sm_80 and sm_90 without a GPU (also run by `make test`
# through tests/test_cuda_compile.py). Needs nvcc; no install.
cuda-check:
	$(PYTHON) tools/cuda_compile_check.py
