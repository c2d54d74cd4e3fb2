# beast-mode. `make test` and `make demo` build .venv from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck check bench clean demo demo-reset venv

# One progress line instead of pip's pages: -qq leaves pip its errors only (a machine whose pip
# config names missing indexes would otherwise print a warning per package).
$(STAMP): pyproject.toml constraints.txt
	@echo "building $(VENV) (pip install, 2–5 min)…"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq -c constraints.txt -e ".[dev,mlflow,postgresql,dask]"
	@touch $(STAMP)

venv: $(STAMP)

# worksteal: a worker that runs out of tests takes the other's pending ones (the suite ends on
# a few 40-60 s walkthroughs): 649 s against 663 s with the default split, clean-clone runs.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check engine console tests

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m pytest tests/bench -p no:randomly -s -q --no-header -o addopts= -o testpaths=tests/bench

# The console on the demo workspace, with a live engine and simulated traffic. `--demo` builds
# the workspace first if it is empty (generated data, three trained versions, an A/B test).
demo: $(STAMP)
	$(BIN)/beast --workspace demo/.beast-mode console --demo

# The demo workspace rebuilt from nothing (refused unless it is the demo's: its demo.json).
demo-reset: $(STAMP)
	$(BIN)/beast --workspace demo/.beast-mode init --demo --reset

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
