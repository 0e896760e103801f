#!/usr/bin/env bash
# One device call (H100 or H200): build cnnext with CUDA (sm_90), then, side by side, the GPU
# tests, compute-sanitizer memcheck + racecheck on a small driver, the ptxas resource report and
# a probe of torch's own CUDA behaviour; then the benchmark suite alone on the GPU (float16 on
# tensor cores, float32 exact). $OUT gets summary.txt and logs.tgz (all logs, pytest.xml, the
# bench tables), refreshed after every stage, so a call cut short still returns what ran.
#
#   OUT=$OUT bash benchmarks/gpu/run_h200.sh          # all stages: about 6-8 minutes
#   STAGES="build test" bash benchmarks/gpu/run_h200.sh
#
# Limits (seconds, environment): BUILD_S TEST_S SAN_S BENCH_S. TESTS overrides the pytest
# selection (default: every test with a CUDA variant). A failing stage does not stop the next.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"
LOGS="${LOGS:-/tmp/cnnext-gpu-logs}"
mkdir -p "$OUT" "$LOGS"
STAGES="${STAGES:-env build test memcheck racecheck ptxas probe bench16 bench32}"
BUILD_S="${BUILD_S:-220}" TEST_S="${TEST_S:-160}" SAN_S="${SAN_S:-150}" BENCH_S="${BENCH_S:-60}"
TESTS="${TESTS:-tests/test_cuda.py tests/test_conv2d.py tests/test_pool2d.py tests/test_models.py -k cuda}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # build_ext --inplace: cnnext from the tree
SUMMARY="$LOGS/summary.txt"
export PY STAGES TESTS LOGS
: > "$SUMMARY"
START=$(date +%s)

pack() {  # everything so far into $OUT (at most 8 files come back: two)
  cp "$SUMMARY" "$OUT/summary.txt"
  local tmp="$OUT/logs.$BASHPID.tmp"
  tar -czf "$tmp" -C "$LOGS" . 2>/dev/null && mv -f "$tmp" "$OUT/logs.tgz"
}

want() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }

# stage NAME LIMIT COMMAND...: COMMAND with a time limit, output to $LOGS/NAME.log.
stage() {
  local name=$1 limit=$2
  shift 2
  want "$name" || return 0
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s, at $(( t0 - START ))s): $*" | tee -a "$SUMMARY"
  # bash -c: timeout runs programs, not shell functions (those are exported with export -f)
  timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "   $name rc=$rc  $(( $(date +%s) - t0 ))s" | tee -a "$SUMMARY"
  tail -n 4 "$LOGS/$name.log" | cut -c1-300 | sed 's/^/   | /' | tee -a "$SUMMARY"
  pack
  return 0
}

env_report() {
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: OUT=\$OUT bash benchmarks/gpu/run_h200.sh (STAGES=$STAGES)"
  echo "tests: $TESTS"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  nvcc --version | tail -n 2
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('device', torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
  "$PY" -m pytest --version
  which compute-sanitizer || echo "compute-sanitizer: not found"
  echo "cpus: $(nproc)"
}
export -f env_report
stage env 40 env_report

build() {
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
  # The device image sets CC/CXX to /opt/gcc/bin/{gcc,g++}, a wrapper that links libstdc++
  # statically: the extension then carries its own std::ostream, and formatting any number
  # into a TORCH_CHECK message segfaults (every error path). The system GCC links it shared.
  if [ -x /usr/bin/g++ ] && [ -z "${CNNEXT_KEEP_CXX:-}" ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
  echo "CC=${CC:-} CXX=${CXX:-}"
  "$PY" setup.py build_ext --inplace || return 1
  ldd cnnext/_C*.so | grep -q 'libstdc++' || echo "WARNING: cnnext._C does not link libstdc++.so (static libstdc++: error messages will crash)"
  "$PY" -c "import torch, cnnext; assert torch._C._dispatch_has_kernel_for_dispatch_key('cnnext::conv2d', 'CUDA'), 'no CUDA kernels built'; print('cnnext', cnnext.__file__, 'with CUDA kernels')"
}
export -f build
stage build "$BUILD_S" build

demangle() { if command -v c++filt > /dev/null; then c++filt; else cat; fi; }
export -f demangle
ptxas_report() {  # registers, shared memory, spills per kernel (sm_90); files need no torch
  local f
  for f in csrc/cuda/*.cu; do
    ( nvcc -c "$f" -o /dev/null -std=c++17 -O3 --expt-relaxed-constexpr \
        -gencode=arch=compute_90,code=sm_90 -Xptxas -v > "$LOGS/ptxas_$(basename "$f").txt" 2>&1 ) &
  done
  wait
  for f in csrc/cuda/*.cu; do echo "### $f"; demangle < "$LOGS/ptxas_$(basename "$f").txt"; done
  rm -f "$LOGS"/ptxas_*.txt
}

export -f ptxas_report
# Tests, sanitizers, ptxas and the probe together (correctness only: the GPU is shared);
# the benchmark runs afterwards with the GPU to itself.
(
  stage probe 60 "$PY" benchmarks/gpu/probe_torch_cuda.py
  stage ptxas 90 ptxas_report
) &
(
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # no caching allocator: out-of-bounds not hidden in slabs
  stage memcheck "$SAN_S" compute-sanitizer --tool memcheck --leak-check no \
    --error-exitcode 3 "$PY" benchmarks/gpu/sanitize_driver.py
) &
(
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1
  stage racecheck "$SAN_S" compute-sanitizer --tool racecheck --racecheck-report all \
    --error-exitcode 3 "$PY" benchmarks/gpu/sanitize_driver.py
) &
# shellcheck disable=SC2086
stage test "$TEST_S" "$PY" -m pytest $TESTS -q -rfE --tb=short -p no:cacheprovider -n 6 \
  --timeout 120 --junitxml="$LOGS/pytest.xml" --durations=10
wait

stage bench16 "$BENCH_S" "$PY" benchmarks/gpu/bench_cuda.py float16 "$LOGS/bench-float16" 0.2
stage bench32 "$BENCH_S" "$PY" benchmarks/gpu/bench_cuda.py float32 "$LOGS/bench-float32" 0.2

echo "total: $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
pack
# The reply shows the end of stdout (last ~12k chars): bench tables first, failures last.
for d in float16 float32; do echo "######## bench $d"; cut -c1-150 "$LOGS/bench-$d/table.txt" 2>/dev/null | head -40; done
echo "######## probe"; cut -c1-200 "$LOGS/probe.log" | head -30
echo "######## sanitizers"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race reported|sanitize_driver:" "$LOGS/memcheck.log" "$LOGS/racecheck.log" | cut -c1-200 | head -20
echo "######## summary"; cat "$SUMMARY"
echo "######## failures"; grep -E "^(FAILED|ERROR) " "$LOGS/test.log" | cut -c1-300 | head -60
tail -n 2 "$LOGS/test.log"
