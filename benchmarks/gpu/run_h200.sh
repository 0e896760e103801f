#!/usr/bin/env bash
# One device call: build cnnext with CUDA (sm_90), run the whole test suite, compute-sanitizer
# memcheck + racecheck on a small driver, the ptxas resource report, and the benchmark suite
# with --device cuda. Everything lands in $OUT (default ./gpu-out): logs, summary.txt, env.txt.
#
#   bash benchmarks/gpu/run_h200.sh                 # all stages: at most ~9.7 min (limits sum)
#   STAGES="build test" bash benchmarks/gpu/run_h200.sh
#
# Each stage has its own time limit (seconds; override by environment) so the total stays
# under the 10-minute device-call limit: BUILD_S PTXAS_S TEST_S MEMCHECK_S RACECHECK_S BENCH_S.
# A failing stage is recorded in summary.txt and the next stage still runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
STAGES="${STAGES:-env build ptxas test memcheck racecheck bench}"
BUILD_S="${BUILD_S:-150}" PTXAS_S="${PTXAS_S:-40}" TEST_S="${TEST_S:-150}"
MEMCHECK_S="${MEMCHECK_S:-60}" RACECHECK_S="${RACECHECK_S:-60}" BENCH_S="${BENCH_S:-90}"
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
START=$(date +%s)

# stage NAME LIMIT COMMAND...: runs COMMAND with a time limit, output to $OUT/NAME.log.
stage() {
  local name=$1 limit=$2
  shift 2
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc  $(( $(date +%s) - t0 ))s  (log: $name.log)" | tee -a "$SUMMARY"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
  return 0
}

env_report() {
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: bash benchmarks/gpu/run_h200.sh (STAGES=$STAGES)"
  echo "git: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  nvidia-smi -L
  nvcc --version | tail -n 2
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('device', torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
  which compute-sanitizer || echo "compute-sanitizer: not found"
  nproc
}
stage env 30 env_report

build() {
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  "$PY" -m pip install --no-build-isolation --no-deps -v -e . \
    || "$PY" setup.py build_ext --inplace  # a pip without network or an old setuptools
  "$PY" -c "import torch, cnnext; assert torch._C._dispatch_has_kernel_for_dispatch_key('cnnext::conv2d', 'CUDA'), 'no CUDA kernels built'; print('cnnext', cnnext.__file__, 'with CUDA kernels')"
}
stage build "$BUILD_S" build

demangle() { if command -v c++filt > /dev/null; then c++filt; else cat; fi; }

# Registers, shared memory, spills per kernel for sm_90 (the files need no torch headers).
ptxas_report() {
  local f
  for f in csrc/cuda/*.cu; do
    echo "### $f"
    nvcc -c "$f" -o /dev/null -std=c++17 -O3 --expt-relaxed-constexpr \
      -gencode=arch=compute_90,code=sm_90 -Xptxas -v 2>&1 | demangle
  done
}
stage ptxas "$PTXAS_S" ptxas_report

stage test "$TEST_S" "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml" \
  --durations=15

# No caching allocator under the sanitizer, so out-of-bounds accesses are not hidden in slabs.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
stage memcheck "$MEMCHECK_S" compute-sanitizer --tool memcheck --leak-check no \
  --error-exitcode 3 "$PY" benchmarks/gpu/sanitize_driver.py
stage racecheck "$RACECHECK_S" compute-sanitizer --tool racecheck --racecheck-report all \
  --error-exitcode 3 "$PY" benchmarks/gpu/sanitize_driver.py
unset PYTORCH_NO_CUDA_MEMORY_CACHING

stage bench "$BENCH_S" "$PY" -m benchmarks --device cuda --full --out "$OUT/bench"

echo "total: $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
