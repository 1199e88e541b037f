# The two commands of the README: `make up` runs the demo, `make test` runs the checks and tests.
# Each creates .venv when it is missing and installs the project into it (editable).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

up: $(VENV)/.installed
	$(BIN)/stratrun up

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# The performance suite: stratrun against the raw pyzmq + msgspec floor, in one run
# (several minutes); appends its table to benchmarks/RESULTS.md.
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/suite.py --record

clean:
	rm -rf $(VENV) .stratrun .pytest_cache .mypy_cache .ruff_cache
