# Parlour — the two set-up commands are `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
ARGS   ?=

.PHONY: serve test test-only lint fmt bench clean venv venv-test

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test

## make serve: create .venv, install Parlour, start the chat server (SQLite in ./data)
serve: venv
	$(BIN)/parlour serve --data-dir data $(ARGS)

## make test: create .venv, install test dependencies, lint, run the whole suite
test: venv-test lint test-only

test-only: venv-test
	$(PY) -m pytest $(ARGS)

lint: venv-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: venv-test
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: venv-test
	$(PY) bench/fanout.py
	$(PY) bench/packets.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
