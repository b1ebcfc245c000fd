# fastlif: `make demo` (the tutorial end to end) and `make test` (the whole suite, offline)
# both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch is pinned to the release the dev machines cache; any torch >= 2.5 works.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
TRITON_OLD       := 3.6.0
TRITON_OLD_DIR   := .triton-3.6
TRITON_OLD_STAMP := $(TRITON_OLD_DIR)/.installed

.PHONY: install test demo bench bench-tuned bench-busy bench-sim bench-gpu check clean sanitize
.PHONY: compat-install test-compat triton-3.6 test-snntorch-0.9.4

$(STAMP): setup.py pyproject.toml csrc/*.cpp csrc/*.h csrc/families/*.cpp
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "numpy<2.4" $(TORCH) pybind11 setuptools wheel
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	$(PY) -c "import fastlif.backends as b; print('fastlif backends:', b.describe())"
	touch $(STAMP)

install: $(STAMP)

# The PTX checks (tests/test_ptx.py) also run under the oldest supported Triton, from .triton-3.6
test: $(STAMP) $(TRITON_OLD_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

# The C++ kernels under AddressSanitizer + UBSan + LeakSanitizer (a separate build; see .ci/sanitize)
sanitize: $(STAMP)
	bash .ci/sanitize

demo: $(STAMP)
	$(PY) -m fastlif demo $(DEMO_ARGS)

check: $(STAMP)
	$(PY) -m fastlif check

# `make bench` measures what a user gets: glibc's default allocator settings, torch's default
# threads. `make bench-tuned` adds the tuned-allocator rows (glibc keeps freed blocks for reuse,
# as jemalloc or tcmalloc do; case names end in _tuned_malloc), `make bench-busy` the
# busy-machine rows (beside 1, then 2 spinning processes; bench/results/cpu_busy.csv).
BENCH_MALLOC := MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912

bench: $(STAMP)
	$(PY) -m bench.bench_cpu $(BENCH_ARGS)

bench-tuned: $(STAMP)
	$(BENCH_MALLOC) $(PY) -m bench.bench_cpu --families leaky --no-compile --no-sweep --case-suffix _tuned_malloc $(BENCH_ARGS)

bench-busy: $(STAMP)
	$(PY) -m bench.bench_cpu --busy $(BENCH_ARGS)

bench-sim: $(STAMP)
	$(PY) -m bench.bench_sim $(BENCH_ARGS)

bench-gpu: $(STAMP)
	bash bench/gpu_check.sh

clean:
	rm -rf build build-sanitize *.egg-info fastlif/_C*.so

# --- the GPU machine's versions ------------------------------------------------------------
# `make test-compat`: the whole CPU suite in .venv-compat (git-ignored) with the versions the
# GPU machine has: Python 3.12, torch 2.11, Triton 3.6 (the one torch 2.11 pins), and the
# dev extras as pip resolves them for 3.12 (brian2 2.10 there). tests/compat_versions.txt
# pins them as pip constraints, so resolving the extras cannot move torch. PyPI's torch for
# linux x86_64 is the CUDA build with its nvidia-* wheels; the suite uses its CPU. Building
# it from scratch downloads about 2.2 GB (2 minutes here) and takes 5.4 GB of disk.
COMPAT_PYTHON ?= /root/.pyenv/versions/3.12.1/bin/python3.12
COMPAT_VENV   := .venv-compat
COMPAT_PY     := $(COMPAT_VENV)/bin/python
COMPAT_PIP    := $(COMPAT_VENV)/bin/pip
COMPAT_PINS   := tests/compat_versions.txt
COMPAT_STAMP  := $(COMPAT_VENV)/.installed

$(COMPAT_STAMP): setup.py pyproject.toml csrc/*.cpp csrc/*.h csrc/families/*.cpp $(COMPAT_PINS)
	test -x $(COMPAT_PY) || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PIP) install -q --upgrade pip
	$(COMPAT_PIP) install -q -c $(COMPAT_PINS) torch torchvision pybind11 setuptools wheel
	$(COMPAT_PIP) install -q -c $(COMPAT_PINS) --no-build-isolation -e ".[dev]"
	$(COMPAT_PY) -c "import sys, torch, triton; print('compat: python', sys.version.split()[0], \
	    'torch', torch.__version__, 'triton', triton.__version__); \
	    assert sys.version_info[:2] == (3, 12) and torch.__version__.startswith('2.11.') \
	    and triton.__version__.startswith('3.6.'), 'not the GPU machine versions'"
	$(COMPAT_PY) -c "import fastlif.backends as b; print('fastlif backends:', b.describe())"
	touch $(COMPAT_STAMP)

compat-install: $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP)
	$(COMPAT_PY) -m pytest -q -n 2 --dist loadgroup tests

# The oldest supported Triton (3.6, the GPU machine's) beside the main venv's torch, for the
# sm_90 PTX checks only (they compile with Triton alone, no GPU and no torch.compile);
# tests/test_ptx.py runs them in a child process with PYTHONPATH=.triton-3.6.
# .triton-3.6 is git-ignored; `make triton-3.6` fills it once (the stamp): a 188 MB wheel,
# 641 MB unpacked.

$(TRITON_OLD_STAMP): | $(STAMP)
	rm -rf $(TRITON_OLD_DIR)
	$(PIP) install -q --no-deps --target $(TRITON_OLD_DIR) triton==$(TRITON_OLD)
	PYTHONPATH=$(TRITON_OLD_DIR) $(PY) -c "import triton; \
	    assert triton.__version__ == '$(TRITON_OLD)', triton.__file__; print('triton', triton.__version__)"
	touch $(TRITON_OLD_STAMP)

triton-3.6: $(TRITON_OLD_STAMP)

# snnTorch 0.9.4 (the tutorial's pin) beside the venv's current release, for the snnTorch
# equivalence and interop tests: a pure-Python package, so a --target folder on PYTHONPATH
# serves as the second environment (no second torch).
SNN_OLD_DIR   := .snntorch-0.9.4
SNN_OLD_STAMP := $(SNN_OLD_DIR)/.installed
SNN_TESTS     := tests/test_snntorch.py tests/test_interop.py tests/test_losses.py

$(SNN_OLD_STAMP): | $(STAMP)
	rm -rf $(SNN_OLD_DIR)
	$(PIP) install -q --no-deps --target $(SNN_OLD_DIR) snntorch==0.9.4
	PYTHONPATH=$(SNN_OLD_DIR) $(PY) -c "import snntorch; assert snntorch.__version__ == '0.9.4', snntorch.__file__"
	touch $(SNN_OLD_STAMP)

test-snntorch-0.9.4: $(STAMP) $(SNN_OLD_STAMP)
	PYTHONPATH=$(SNN_OLD_DIR) $(PY) -m pytest -q -n 2 $(SNN_TESTS)
