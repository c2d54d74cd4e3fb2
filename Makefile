# beast-mode. `make test` and `make demo` build .venv from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck check bench clean demo venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check engine console tests

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m pytest tests/bench -p no:randomly -s -q --no-header -o addopts= -o testpaths=tests/bench

# The demo workspace: generated data, three trained versions, production and an A/B test.
# The console that opens on it (`beast console --demo`) is issue 5; until then this prints status.
demo: $(STAMP)
	@test -f demo/.beast-mode/beast.db || $(BIN)/beast --workspace demo/.beast-mode init --demo
	@$(BIN)/beast --workspace demo/.beast-mode status
	@$(BIN)/beast --workspace demo/.beast-mode history

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
