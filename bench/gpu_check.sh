#!/usr/bin/env bash
# The GPU check: install fastlif, run the CUDA and Triton tests, run the GPU benchmarks.
#
#   bash bench/gpu_check.sh                   # on a machine with a CUDA GPU (no registry needed)
#   bash bench/gpu_check.sh --download-wheels # beforehand, where pip can reach its registry
#   bash bench/gpu_check.sh --smoke           # a dry run of every step here, without a GPU
#
# Time: the whole run stays within GPU_CHECK_BUDGET_S (default 330 s; a step cut at its limit
# gets GRACE_S more to write its results), so that a 15-minute device allowance leaves room
# for a rerun. Install (building the C++ extension) up to 90 s, the tests up to
# GPU_CHECK_TEST_S (200 s), the benchmark whatever is left.
#
# Cut-offs lose nothing: pytest and the benchmark run under `timeout -s INT -k GRACE_S`, and
# SIGINT (or a SIGTERM from outside) becomes KeyboardInterrupt in Python, so pytest still
# writes its summary and JUnit XML and the benchmark appends the rows it measured; SIGKILL
# follows only after the grace. Every step writes to bench/results and copies what exists to
# $OUT/results (at every step and on EXIT); logs are also written to $OUT/results as they
# grow. The remote runner brings back at most 8 files from $OUT, at most 2 folders down, named
# in letters, digits and ._- only: this script writes the 7 below and nothing else there.
#   gpu_check.log     this script's own timeline: each step, its limit, exit status and time
#   gpu_env.txt       gcc --version, nvidia-smi (full and the query line), Python, torch,
#                     Triton, pybind11 and other versions, the extension's file, the Triton cache
#   gpu_install.log   pip install -e . (rebuilds fastlif/_C*.so there) and the wheels installed
#   gpu_pytest.log    pytest tests/test_cuda.py tests/test_triton.py (compiled kernels, no
#                     TRITON_INTERPRET; FASTLIF_AUTOTUNE=0 so each kernel variant compiles once)
#   gpu_pytest.xml    the same as JUnit XML
#   gpu_bench.log     python -m bench.bench_gpu (autotuned kernels): its table with the ratios
#   gpu.csv           the benchmark rows (appended)
#
# The GPU machine has torch, Triton, numpy, numba, pytest and pybind11 but no registry:
# snnTorch and SpikingJelly (and loguru, which SpikingJelly imports) come from pure-Python
# wheels in ./wheels (git-ignored: name it in the runner's `carry`), each installed only if
# missing. --download-wheels fills that folder for Python 3.12 (pure-Python wheels only).
#
# Environment: PYTHON (the interpreter; default python3, else python; --smoke: .venv/bin/python),
# GPU_CHECK_BUDGET_S, GPU_CHECK_TEST_S, GPU_CHECK_MIN_STEP_S (10), BENCH_SECTIONS (default copy,lif,sj,tinysnn,lowmem;
# add ",compile" for torch.compile of the reference loop, minutes of compiling),
# TRITON_CACHE_DIR (default /tmp/fastlif-triton-cache); --smoke only: GPU_CHECK_SMOKE_DIR (the
# copy it runs in, default /tmp/fastlif-gpu-check-smoke), GPU_CHECK_SMOKE_TREE (copy this
# commit, e.g. HEAD, instead of the working tree), GPU_CHECK_SMOKE_TESTS (pytest arguments).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

SMOKE=0
case "${1:-}" in
    --smoke) SMOKE=1 ;;
    --download-wheels) ;;
    "") ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (--smoke, --download-wheels, --help)" >&2; exit 2 ;;
esac

if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ $SMOKE == 1 && -x "$ROOT/.venv/bin/python" ]]; then
    PY=$ROOT/.venv/bin/python
else
    PY=$(command -v python3 || command -v python)   # the GPU machine's python3 holds torch
fi

# Pure-Python wheels for the GPU machine's Python 3.12 (--no-deps: its other needs, numpy,
# matplotlib, packaging, ..., are there already). Checked on a bare Python 3.12 with only
# torch 2.11: snntorch, snntorch.functional/surrogate, spikingjelly.activation_based.{neuron,
# surrogate,functional} and pytest import with these alone and numpy (which torch does not
# pull in, and the GPU machine has).
WHEELS=(snntorch==1.0.0 spikingjelly==2.0.0 loguru pytest pluggy iniconfig packaging pygments)
if [[ "${1:-}" == "--download-wheels" ]]; then
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation py --abi none --platform any -d wheels "${WHEELS[@]}"
fi

if [[ $SMOKE == 1 ]]; then
    BUDGET_S=${GPU_CHECK_BUDGET_S:-120}
    TEST_S=${GPU_CHECK_TEST_S:-60}
else
    BUDGET_S=${GPU_CHECK_BUDGET_S:-330}
    TEST_S=${GPU_CHECK_TEST_S:-200}
fi
GRACE_S=15          # after SIGINT, the time a step gets to write its results before SIGKILL
INSTALL_MAX_S=90    # pip install -e . (the C++ extension compiles in ~30 s on 16 cores)
BENCH_MIN_S=30      # what the benchmark is promised even after a long test step
MIN_STEP_S=${GPU_CHECK_MIN_STEP_S:-10}  # the least a step gets, even past the budget
START=$(date +%s)

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
clamp() { local v=$1 lo=$2 hi=$3; (( v < lo )) && v=$lo; (( v > hi )) && v=$hi; echo "$v"; }

# --- where it runs --------------------------------------------------------------------------
if [[ $SMOKE == 1 ]]; then
    # A dry run here must not touch the checkout it is run from (another engineer's build, the
    # main venv's editable install): it runs on a copy of the working tree (tracked and
    # untracked-not-ignored files, so no _C*.so), builds the extension there in place instead
    # of re-pointing the venv's editable install, and its $OUT is inside that copy unless set.
    SMOKE_DIR=${GPU_CHECK_SMOKE_DIR:-/tmp/fastlif-gpu-check-smoke}
    if [[ -e "$SMOKE_DIR" && ! -e "$SMOKE_DIR/.gpu_check_smoke" ]]; then
        echo "gpu_check.sh: $SMOKE_DIR exists and is not a smoke copy; not replacing it" >&2
        exit 2
    fi
    rm -rf "$SMOKE_DIR" && mkdir -p "$SMOKE_DIR" && touch "$SMOKE_DIR/.gpu_check_smoke"
    if [[ -n "${GPU_CHECK_SMOKE_TREE:-}" ]]; then
        # a committed tree instead (e.g. HEAD while the working tree is mid-change), with
        # this script as it is now
        git archive "$GPU_CHECK_SMOKE_TREE" | tar -xf - -C "$SMOKE_DIR" || exit 2
        cp -f bench/gpu_check.sh "$SMOKE_DIR/bench/gpu_check.sh"
    else
        git ls-files -z -co --exclude-standard \
            | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$SMOKE_DIR"
    fi
    [[ -d wheels ]] && cp -r wheels "$SMOKE_DIR/"
    cd "$SMOKE_DIR" || exit 1
    ROOT=$SMOKE_DIR
    # Hide the main venv's editable install of the checkout: its finder would otherwise
    # resolve fastlif.kernels and a missing fastlif._C to the checkout's files.
    mkdir -p .smoke_site
    cat >.smoke_site/sitecustomize.py <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable___fastlif")]
PY
    export PYTHONPATH="$SMOKE_DIR/.smoke_site:$SMOKE_DIR${PYTHONPATH:+:$PYTHONPATH}"
    export OUT=${OUT:-$SMOKE_DIR/out}
fi

RESULTS=bench/results
mkdir -p "$RESULTS"
OUTDIR=""
if [[ -n "${OUT:-}" ]]; then
    OUTDIR=$OUT/results
    mkdir -p "$OUTDIR"
fi
RESULT_FILES=(gpu_check.log gpu_env.txt gpu_install.log gpu_pytest.log gpu_pytest.xml gpu_bench.log gpu.csv)
# This run's files start empty (gpu.csv keeps its rows: the benchmark appends).
for f in "${RESULT_FILES[@]}"; do
    [[ $f == gpu.csv ]] || rm -f "$RESULTS/$f"
done

log() {
    local line
    line="[gpu_check $(elapsed)s] $*"
    echo "$line"
    echo "$line" >>"$RESULTS/gpu_check.log"
}

export_results() {
    [[ -n "$OUTDIR" ]] || return 0
    mkdir -p "$OUTDIR"
    local f
    for f in "${RESULT_FILES[@]}"; do
        [[ -f "$RESULTS/$f" ]] && cp -f "$RESULTS/$f" "$OUTDIR/$f"
    done
    return 0
}

SHIM=""
STOPPED=""
STEP=setup
PYTEST_RC=""
BENCH_RC=""
# shellcheck disable=SC2317  # (trap handlers)
on_exit() {
    local rc=$?
    [[ -n "$SHIM" ]] && rm -f "$SHIM"
    log "done in $(elapsed) s (budget ${BUDGET_S} s): pytest ${PYTEST_RC:-not run}," \
        "bench ${BENCH_RC:-not run}${STOPPED:+, stopped by SIG$STOPPED during $STEP}; exit $rc"
    export_results
}
trap on_exit EXIT
# A signal from outside (the runner cutting the command) reaches the running step too, which
# handles it and ends; then the results are exported and the script stops.
# shellcheck disable=SC2317
on_signal() { STOPPED=$1; log "SIG$1: stopping after the current step"; exit 130; }
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# The steps' `timeout --foreground` keeps them in this script's process group, so a signal the
# runner sends to the whole command reaches pytest and the benchmark directly (without
# --foreground, timeout would move them to a group of their own).
# Runs "$@" with output to the log $1 (in bench/results, and in $OUT/results as it grows).
# tee ignores INT/TERM/HUP so that it keeps the output a step writes as it is interrupted.
run_logged() {
    local name=$1; shift
    "$@" 2>&1 | (trap '' INT TERM HUP; exec tee -a "$RESULTS/$name" ${OUTDIR:+"$OUTDIR/$name"})
    return "${PIPESTATUS[0]}"
}

# Python with SIGINT and SIGTERM as KeyboardInterrupt (even where the caller started this
# script with SIGINT ignored, which Python would inherit), then the module as `python -m`.
PYMOD='import runpy, signal, sys
def _interrupt(signum, frame):  # the first signal only: the next ones must not cut the summary
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)
signal.signal(signal.SIGINT, _interrupt)
signal.signal(signal.SIGTERM, _interrupt)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)'

# The benchmark likewise; interrupted, it appends the rows of the section it was in and
# prints its table before exiting (bench_gpu itself flushes only after whole sections).
BENCH='import signal, sys
def _interrupt(signum, frame):  # the first signal only: the next ones must not cut the summary
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)
signal.signal(signal.SIGINT, _interrupt)
signal.signal(signal.SIGTERM, _interrupt)
sys.argv = ["bench_gpu"] + sys.argv[1:]
import bench.bench_gpu as b
try:
    b.main(sys.argv[1:])
except KeyboardInterrupt as err:
    print(f"\nbench_gpu: interrupted ({err}): keeping the rows measured so far", flush=True)
    for name in ("flush", "print_table"):
        if hasattr(b, name):
            getattr(b, name)()
    sys.exit(130)'

log "mode $([[ $SMOKE == 1 ]] && echo "smoke (no GPU, in $ROOT)" || echo gpu), python $PY," \
    "budget ${BUDGET_S} s, tests up to ${TEST_S} s, OUT=${OUT:-unset}"

# The Triton cache lives in a fixed folder outside the working tree, so a second call on the
# same (warm) machine finds the kernels compiled by the first. $OUT cannot hold it: the
# runner empties $OUT before each command. A fresh machine starts with it empty.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/fastlif-triton-cache}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/fastlif-inductor-cache}
mkdir -p "$TRITON_CACHE_DIR"
cache_kernels() { find "$TRITON_CACHE_DIR" -name '*.cubin' 2>/dev/null | wc -l; }
log "TRITON_CACHE_DIR=$TRITON_CACHE_DIR holds $(cache_kernels) compiled kernels" \
    "($(du -sh "$TRITON_CACHE_DIR" 2>/dev/null | cut -f1))"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

# --- install ------------------------------------------------------------------------------
# Never use a _C*.so built elsewhere (this one builds with -march=native): remove it first, so
# the extension there is the one compiled on this machine, or none (the reference backend).
STEP=install
rm -f fastlif/_C*.so
STEP_S=$(clamp $(( $(left) - TEST_S - BENCH_MIN_S )) 30 $INSTALL_MAX_S)
if [[ $SMOKE == 1 ]]; then
    STEP_S=$(clamp $(( $(left) - 2 * MIN_STEP_S )) "$MIN_STEP_S" $INSTALL_MAX_S)
    # the same build as pip's, in the copy, leaving the main venv's install alone
    log "building the C++ extension in place (smoke: no pip install; limit ${STEP_S} s)"
    run_logged gpu_install.log timeout -k 5 "$STEP_S" "$PY" setup.py build_ext --inplace
    INSTALL_RC=$?
else
    log "pip install --no-build-isolation --no-deps -e . (limit ${STEP_S} s)"
    run_logged gpu_install.log timeout -k 5 "$STEP_S" \
        "$PY" -m pip install --no-build-isolation --no-deps -e .
    INSTALL_RC=$?
fi
log "install exit status $INSTALL_RC"
# (--smoke always: the main venv's editable install would map fastlif.kernels to the
# checkout's kernels/, not the copy's)
if [[ $SMOKE == 1 ]] || ! "$PY" -c "import fastlif.kernels.lif" >/dev/null 2>&1; then
    # without the install, kernels/ is not mapped to fastlif.kernels: link it for this run
    log "running from the source tree (kernels/ linked as fastlif/kernels$( ((SMOKE)) || echo \
        ": fastlif.kernels does not import"))"
    ln -sfn ../kernels fastlif/kernels && SHIM="$ROOT/fastlif/kernels"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if compgen -G "wheels/*.whl" >/dev/null; then
    present=0
    for whl in wheels/*.whl; do
        dist=$(basename "$whl" | cut -d- -f1)
        if "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null; then
            present=$(( present + 1 ))
        elif "$PY" -m pip install -q --no-index --no-deps "$whl" >>"$RESULTS/gpu_install.log" 2>&1; then
            log "installed $(basename "$whl")"
        else
            log "could not install $(basename "$whl") (see gpu_install.log)"
        fi
    done
    log "wheels/: $present already installed"
else
    log "no wheels/ folder: snnTorch/SpikingJelly comparisons need them installed already"
fi
export_results
STEP=environment

# --- environment --------------------------------------------------------------------------
{
    echo "date: $(date -u +"%Y-%m-%dT%H:%M:%SZ")  host: $(hostname)  mode: $([[ $SMOKE == 1 ]] && echo smoke || echo gpu)"
    echo "== gcc --version"
    gcc --version 2>&1 | sed '/^$/d'
    echo "== nvidia-smi --query-gpu"
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit \
        --format=csv 2>&1
    echo "== nvidia-smi"
    timeout 20 nvidia-smi 2>&1
    echo "== python"
    echo "TRITON_CACHE_DIR=$TRITON_CACHE_DIR ($(cache_kernels) compiled kernels before the tests)"
    timeout 60 "$PY" - "$START" <<'EOF'
import importlib, importlib.metadata as md, os, platform, sys
start = int(sys.argv[1])
print("python", platform.python_version(), sys.executable)
for name in ("torch", "triton", "pybind11", "numpy", "numba", "setuptools", "snntorch",
             "spikingjelly", "pytest", "fastlif"):
    try:
        print(name, md.version(name))
    except Exception as err:  # noqa: BLE001
        print(name, "unavailable:", type(err).__name__, err)
try:
    import torch
    print("torch cuda", torch.version.cuda, "device",
          torch.cuda.get_device_name() if torch.cuda.is_available() else None)
except Exception as err:  # noqa: BLE001
    print("torch import failed:", err)
try:
    import fastlif._C as C
    mtime = os.path.getmtime(C.__file__)
    print("extension", C.__file__, "built in this run" if mtime >= start else
          "NOT built in this run (stale?)")
except Exception as err:  # noqa: BLE001
    print("extension unavailable:", err)
try:
    import fastlif.backends as b
    print("backends:", b.describe())
except Exception as err:  # noqa: BLE001
    print("fastlif.backends failed:", type(err).__name__, err)
EOF
} >"$RESULTS/gpu_env.txt" 2>&1
cat "$RESULTS/gpu_env.txt"
export_results

# --- tests --------------------------------------------------------------------------------
if [[ $SMOKE == 1 && -n "${GPU_CHECK_SMOKE_TESTS:-}" ]]; then
    read -r -a TESTS <<<"$GPU_CHECK_SMOKE_TESTS"
elif [[ $SMOKE == 1 && -f tests/test_ptx.py ]]; then
    # No GPU here: the CUDA tests would all skip; some sm_90 PTX checks and one quick CPU file.
    TESTS=(tests/test_ptx.py tests/test_errors.py -k "test_errors or problems_are_found or fwd-fp32-fp32-r0i-b1024w8p or bwd-fp32-fp32-r0i-sg0-b1024w8p")
elif [[ $SMOKE == 1 ]]; then
    TESTS=(tests/test_triton.py::test_kernels_compile_for_sm90_without_fma tests/test_errors.py)
else
    TESTS=(tests/test_cuda.py tests/test_triton.py)
fi
STEP=pytest
STEP_S=$(clamp $(( $(left) - GRACE_S - BENCH_MIN_S - GRACE_S )) "$MIN_STEP_S" "$TEST_S")
log "pytest ${TESTS[*]} (limit ${STEP_S} s + ${GRACE_S} s grace)"
FASTLIF_AUTOTUNE=0 run_logged gpu_pytest.log timeout --foreground -s INT -k "$GRACE_S" "$STEP_S" \
    "$PY" -c "$PYMOD" pytest -q -rs -p no:cacheprovider --durations=10 \
    --junitxml "$RESULTS/gpu_pytest.xml" "${TESTS[@]}"
PYTEST_RC=$?
log "pytest exit status $PYTEST_RC$( ((PYTEST_RC == 124)) && echo " (cut at its limit)");" \
    "JUnit XML $([[ -s "$RESULTS/gpu_pytest.xml" ]] && echo written || echo missing)"
log "TRITON_CACHE_DIR now holds $(cache_kernels) compiled kernels"
export_results

# --- benchmarks ---------------------------------------------------------------------------
SECTIONS=${BENCH_SECTIONS:-copy,lif,sj,tinysnn,lowmem}
BENCH_ARGS=(--sections "$SECTIONS")
[[ $SMOKE == 1 ]] && BENCH_ARGS+=(--smoke)
STEP=bench
STEP_S=$(clamp $(( $(left) - GRACE_S - 3 )) "$MIN_STEP_S" 100000)
log "python -m bench.bench_gpu ${BENCH_ARGS[*]} (limit ${STEP_S} s + ${GRACE_S} s grace)"
run_logged gpu_bench.log timeout --foreground -s INT -k "$GRACE_S" "$STEP_S" "$PY" -c "$BENCH" "${BENCH_ARGS[@]}"
BENCH_RC=$?
log "bench exit status $BENCH_RC$( ((BENCH_RC == 124)) && echo " (cut at its limit; rows measured so far kept)")"
export_results
exit $(( PYTEST_RC != 0 ? PYTEST_RC : BENCH_RC ))
