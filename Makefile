# fastlif: `make demo` (the tutorial end to end) and `make test` (the whole suite, offline)
# both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch is pinned to the release the dev machines cache; any torch >= 2.5 works.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench bench-sim bench-gpu check clean

$(STAMP): setup.py pyproject.toml csrc/*.cpp csrc/*.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "numpy<2.4" $(TORCH) pybind11 setuptools wheel
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	$(PY) -c "import fastlif.backends as b; print('fastlif backends:', b.describe())"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

demo: $(STAMP)
	$(PY) -m fastlif demo $(DEMO_ARGS)

check: $(STAMP)
	$(PY) -m fastlif check

# glibc hands freed blocks over 128 KiB-32 MiB back to the OS, so every call of every
# provider page-faults its outputs afresh; these keep freed memory for reuse (what jemalloc
# or tcmalloc do), the same for all providers. The README reports both settings.
BENCH_MALLOC := MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912

bench: $(STAMP)
	$(BENCH_MALLOC) $(PY) -m bench.bench_cpu $(BENCH_ARGS)

bench-sim: $(STAMP)
	$(PY) -m bench.bench_sim $(BENCH_ARGS)

bench-gpu: $(STAMP)
	bash bench/gpu_check.sh

clean:
	rm -rf build *.egg-info fastlif/_C*.so
