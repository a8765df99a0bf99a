# Two commands do everything: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck bench help

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## Run the whole system end to end on embedded defaults (SQLite MLflow, local Feast)
	$(BIN)/fraudlab demo

test: $(STAMP)  ## Run the test suite (production-mode tests use PostgreSQL and Redis on localhost)
	$(BIN)/python -m pytest -n 2 --durations=15

lint: $(STAMP)  ## ruff check, format check and mypy
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(MAKE) --no-print-directory typecheck

typecheck: $(STAMP)  ## mypy on the packages (configured in pyproject.toml)
	$(BIN)/mypy

bench: $(STAMP)  ## Run the benchmarks (several minutes; pit_join's file store needs ~16 GB)
	$(BIN)/python benchmarks/pit_join.py
	$(BIN)/python benchmarks/online_lookup.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/monitor.py
	$(BIN)/python benchmarks/startup.py
