#!/usr/bin/env bash
# The GPU check: install fastlif, run the CUDA and Triton tests, run the GPU benchmarks.
#
#   bash bench/gpu_check.sh                   # on a machine with a CUDA GPU (no registry needed)
#   bash bench/gpu_check.sh --download-wheels # beforehand, where pip can reach its registry
#
# The GPU machine has torch and Triton but may have no package registry: snnTorch,
# SpikingJelly (and loguru, which it imports) and pytest come from wheels in ./wheels
# (git-ignored), each installed only if missing. --download-wheels fills that folder, i.e.
#   pip download --no-deps snntorch==1.0.0 spikingjelly==2.0.0 loguru pytest pluggy iniconfig packaging pygments -d wheels
#
# Records under bench/results/ (copied to $OUT when that variable is set):
#   gpu_env.txt       GPU, driver, Python/torch/Triton versions
#   gpu_pytest.log    pytest tests/test_cuda.py tests/test_triton.py (compiled kernels, no
#                     TRITON_INTERPRET; FASTLIF_AUTOTUNE=0 so each kernel variant compiles once)
#   gpu_pytest.xml    the same as JUnit XML
#   gpu_bench.log     python -m bench.bench_gpu (autotuned kernels): its table with the ratios
#   gpu.csv           the benchmark rows (appended)
# Whole run: under 8 minutes (each step gets what is left of the budget).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$(command -v python || command -v python3)}
RESULTS=bench/results
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
mkdir -p "$RESULTS"

WHEELS="snntorch==1.0.0 spikingjelly==2.0.0 loguru pytest pluggy iniconfig packaging pygments"
if [[ "${1:-}" == "--download-wheels" ]]; then
    exec "$PY" -m pip download --no-deps $WHEELS -d wheels
fi

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }

export_results() {
    if [[ -n "${OUT:-}" ]]; then
        mkdir -p "$OUT/results"
        cp -f "$RESULTS"/gpu_* "$RESULTS"/gpu.csv "$OUT/results/" 2>/dev/null || true
    fi
}
SHIM=""
cleanup() {
    [[ -n "$SHIM" ]] && rm -f "$SHIM"
    export_results
}
trap cleanup EXIT

# --- install ------------------------------------------------------------------------------
log "installing fastlif (editable, no dependencies fetched)"
if ! "$PY" -m pip install -q --no-build-isolation --no-deps -e . >"$RESULTS/gpu_install.log" 2>&1; then
    log "pip install -e . failed (see $RESULTS/gpu_install.log); running from the source tree"
fi
if ! "$PY" -c "import fastlif.kernels.lif" 2>/dev/null; then
    # without the install, kernels/ is not mapped to fastlif.kernels: link it for this run
    ln -s ../kernels fastlif/kernels && SHIM="$ROOT/fastlif/kernels"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if compgen -G "wheels/*.whl" >/dev/null; then
    for whl in wheels/*.whl; do
        dist=$(basename "$whl" | cut -d- -f1)
        if ! "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null; then
            "$PY" -m pip install -q --no-index --no-deps "$whl" >>"$RESULTS/gpu_install.log" 2>&1 \
                && log "installed $(basename "$whl")"
        fi
    done
else
    log "no wheels/ folder: snnTorch/SpikingJelly comparisons need them installed already"
fi

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
    "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "snntorch", "spikingjelly", "pytest", "fastlif"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as err:  # noqa: BLE001
        print(name, "unavailable:", err)
import torch
print("cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
import fastlif.backends as b
print("backends:", b.describe())
EOF
} >"$RESULTS/gpu_env.txt" 2>&1
cat "$RESULTS/gpu_env.txt"

# --- tests --------------------------------------------------------------------------------
unset TRITON_INTERPRET
log "pytest tests/test_cuda.py tests/test_triton.py"
FASTLIF_AUTOTUNE=0 timeout $(( $(left) - 170 > 60 ? $(left) - 170 : 60 )) \
    "$PY" -m pytest -q -rs -p no:cacheprovider --durations=10 \
    --junitxml "$RESULTS/gpu_pytest.xml" tests/test_cuda.py tests/test_triton.py \
    2>&1 | tee "$RESULTS/gpu_pytest.log"
PYTEST_RC=${PIPESTATUS[0]}
log "pytest exit status $PYTEST_RC"
export_results

# --- benchmarks ---------------------------------------------------------------------------
SECTIONS=${BENCH_SECTIONS:-copy,lif,sj,tinysnn,lowmem,compile}
log "python -m bench.bench_gpu --sections $SECTIONS ($(left) s left)"
timeout $(( $(left) > 30 ? $(left) : 30 )) "$PY" -m bench.bench_gpu --sections "$SECTIONS" \
    2>&1 | tee "$RESULTS/gpu_bench.log"
BENCH_RC=${PIPESTATUS[0]}
log "bench exit status $BENCH_RC (124: cut at the time budget; rows measured so far are kept)"
exit $(( PYTEST_RC != 0 ? PYTEST_RC : BENCH_RC ))
