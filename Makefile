# tunescope: `make demo` runs the default study, `make test` the test suite, `make bench` the benchmarks.
# Every target bootstraps .venv from a fresh clone first (idempotent: re-installs only when
# pyproject.toml changes). torch is pinned to the CPU wheel in the same pip command.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TUNESCOPE_CACHE ?= $(CURDIR)/.cache
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench soak lint browser clean gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

# Headless Chromium renders the report in the tests (Debian package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Two stages at a time, one torch thread each (on 2 cores ~1.5x the throughput of one stage on two
# threads; a fixed thread count keeps resumed stages bit-identical). JOBS=1 TUNESCOPE_THREADS=2 runs
# one stage at a time.
demo: $(STAMP)
	TUNESCOPE_THREADS=$${TUNESCOPE_THREADS:-1} $(BIN)/tunescope run --out runs/demo --jobs $${JOBS:-2}

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

test: $(STAMP) browser lint
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python -m bench

# the CUDA paths against their CPU / HF twins, timed (bench/gpu_check.py); one line and exit 0 without a GPU
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

# SIGKILL the smoke study at every stage kind, rerun, compare with a clean run bit for bit (~15 min)
soak: $(STAMP)
	$(BIN)/python tests/soak.py

clean:
	rm -rf $(VENV) .cache runs bench_out
