# traindeck: one command to set up and run the demo, one to set up and run the tests.
#   make demo   - create .venv, install, run the cpu profile headless (about a minute)
#   make test   - create .venv, install with test extras, run the whole pytest suite on two
#                 workers, then the console tests with the clock a year ahead
# GPU boxes: install your CUDA build of torch into .venv first (see README), then the same.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0; a GPU box that already has CUDA torch in .venv keeps it.
TORCH_SPEC ?= torch==2.13.0

# pytest-xdist workers: two, handing out tests one at a time (worksteal), so the waits of one
# test (grace periods, heartbeats, a stalled rank) overlap another's work. Three were quicker on
# an idle box (574 s against 662 s) but not reliable: a fresh-clone run on three failed two tests
# (a 40 s deadline for two DDP runs at once, an SVG snapshot taken before the screen settled).
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-n 0,-n $(TEST_WORKERS) --dist worksteal)

.PHONY: setup demo test test-fast test-faketime lint bench gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(PY) run.py --profile cpu --headless

test: setup
	$(PY) -m pytest -q $(XDIST)
	@$(MAKE) --no-print-directory test-faketime

test-fast: setup
	$(PY) -m pytest -q $(XDIST) -m "not slow"

# No test may depend on the date: the console and headless tests (marked ui) run again with the
# clock a year ahead (libfaketime, Debian package faketime). The slow ui tests start real torch
# processes, which libfaketime preloaded into them stalls at shutdown: they compare real times
# with real times and run in `make test` today.
test-faketime: setup
	@if command -v faketime >/dev/null; then \
		faketime -f '+365d' $(PY) -m pytest -q $(XDIST) -m "ui and not slow" -p no:cacheprovider; \
	else \
		echo "test-faketime skipped: faketime is not installed (apt-get install faketime)"; \
	fi

lint: setup
	$(PY) -m pip install -q ruff && $(PY) -m ruff check .

bench: setup
	$(PY) -m benchmarks

# Prove the CUDA paths on this box's GPUs (README "On a GPU box"). No setup step: it must run on a
# box without network, with whatever Python already has torch (the venv's, else python3). A box
# without an NVIDIA GPU gets one line and exit 0 (the check itself exits 77: skipped).
GPU_CHECK_PY = $(shell test -x $(PY) && echo $(PY) || echo python3)
gpu-check:
	@$(GPU_CHECK_PY) run.py --gpu-check; rc=$$?; if [ $$rc -eq 77 ]; then exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) runs .pytest_cache
