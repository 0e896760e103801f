#!/usr/bin/env bash
# Second device call of 2026-11-25: rebuild, find why C++ exceptions thrown from cnnext._C kill
# the process on the device image, settle the accuracy questions, rerun the GPU tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"; L=/tmp/fl; mkdir -p "$OUT" $L
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
t0=$(date +%s)
{ echo "CC=${CC:-} CXX=${CXX:-}"; /opt/gcc/bin/g++ --version | head -1; ls /usr/bin/g++* /usr/bin/gcc* 2>&1 | tr '\n' ' '; echo; } > $L/compilers.txt 2>&1
TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 timeout 150 python3 setup.py build_ext --inplace > $L/build.log 2>&1; echo "build rc=$? $(( $(date +%s) - t0 ))s"
ldd cnnext/_C*.so | grep -E "gcc_s|stdc|gomp|unwind" >> $L/compilers.txt
THROW='import torch, cnnext; torch.ops.cnnext.max_pool2d(torch.randn(1,1,4,4), [0,0], [1,1], [0,0], [1,1], False)'
( timeout 20 python3 -c "$THROW" > $L/throw_plain.txt 2>&1; echo "rc=$?" >> $L/throw_plain.txt
  TORCH_SHOW_CPP_STACKTRACES=0 TORCH_DISABLE_ADDR2LINE=1 timeout 20 python3 -c "$THROW" > $L/throw_nost.txt 2>&1; echo "rc=$?" >> $L/throw_nost.txt
  timeout 150 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args python3 -c "$THROW" > $L/throw_gdb.txt 2>&1 ) &
( cat > /tmp/tiny.py <<'PY'
import torch, torch.utils.cpp_extension as ce
src = """
#include <torch/extension.h>
at::Tensor f(at::Tensor x) { TORCH_CHECK(x.dim() == 99, "tiny: expected 99 dims"); return x; }
"""
for flags in (["-O3", "-std=c++17"], ["-O3", "-std=c++17", "-fopenmp"]):
    m = ce.load_inline(name="tiny" + str(len(flags)), cpp_sources=[src], functions=["f"],
                       extra_cflags=flags, extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [],
                       build_directory=None, verbose=False)
    try:
        m.f(torch.zeros(1))
    except RuntimeError as e:
        print(flags, "caught:", str(e).splitlines()[0])
PY
  timeout 150 python3 /tmp/tiny.py > $L/tiny.txt 2>&1; echo "rc=$?" >> $L/tiny.txt ) &
( if [ -x /usr/bin/g++ ]; then  # the same tree built with the system compiler: does it throw cleanly?
    mkdir -p /tmp/alt && git ls-files -co --exclude-standard 2>/dev/null | tar -cf - -T - | tar -xf - -C /tmp/alt 2>/dev/null \
      || cp -r csrc cnnext setup.py pyproject.toml /tmp/alt/
    cd /tmp/alt && CC=/usr/bin/gcc CXX=/usr/bin/g++ TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=8 timeout 170 python3 setup.py build_ext --inplace > $L/alt_build.log 2>&1
    echo "alt build rc=$?" > $L/alt_throw.txt
    PYTHONPATH=/tmp/alt timeout 20 python3 -c "$THROW" >> $L/alt_throw.txt 2>&1; echo "rc=$?" >> $L/alt_throw.txt
  else echo "no /usr/bin/g++" > $L/alt_throw.txt; fi ) &
timeout 60 python3 benchmarks/gpu/accuracy_probe.py > $L/accuracy.txt 2>&1
timeout 130 python3 -m pytest tests/test_cuda.py tests/test_conv2d.py tests/test_pool2d.py tests/test_models.py -k cuda \
  -q -rfE --tb=short -p no:cacheprovider -n 6 --timeout 60 --junitxml=$L/pytest.xml > $L/test.log 2>&1; echo "test rc=$?"
wait
tar -czf $OUT/logs.tgz -C $L .
echo "### compilers"; cat $L/compilers.txt; echo "### throw"; tail -3 $L/throw_plain.txt; tail -3 $L/throw_nost.txt
echo "### gdb"; grep -E "^#|signal|SIGSEGV" $L/throw_gdb.txt | head -40
echo "### tiny"; tail -5 $L/tiny.txt; echo "### alt"; tail -4 $L/alt_throw.txt; echo "### accuracy"; cat $L/accuracy.txt
echo "### tests"; grep -E "^(FAILED|ERROR) " $L/test.log | cut -c1-250 | head -40; tail -2 $L/test.log
echo "total $(( $(date +%s) - t0 ))s"
