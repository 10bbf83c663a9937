# Parlour — the two set-up commands are `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
ARGS   ?=
# The optional native fast lane of the proxy (built in place by `pip install -e`).
FASTLANE_SO   := src/parlour/proxy/_fastlane.*.so
FASTLANE_DEPS := setup.py $(wildcard src/parlour/proxy/_fastlane/*.c src/parlour/proxy/_fastlane/*.h)
FASTLANE_NOTE := $(PY) -c 'from parlour.proxy._fastlane import Engine' 2>/dev/null || \
	echo 'note: parlour.proxy._fastlane was not built (no C compiler or a build error):' \
	'the proxy runs its Python relay only; see `$(PY) -m pip install -v -e .`'

.PHONY: serve test test-only lint fmt bench clean venv venv-test cluster

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(FASTLANE_DEPS) | $(BIN)/activate
	rm -f $(FASTLANE_SO)
	$(PY) -m pip install -q -e .
	@$(FASTLANE_NOTE)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(FASTLANE_DEPS) | $(BIN)/activate
	rm -f $(FASTLANE_SO)
	$(PY) -m pip install -q -e '.[test]'
	@$(FASTLANE_NOTE)
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test

## make serve: create .venv, install Parlour, start the chat server (SQLite in ./data)
serve: venv
	$(BIN)/parlour serve --data-dir data $(ARGS)

## make cluster: 3 chat nodes on the local PostgreSQL and Redis behind parlour proxy
## (chat 127.0.0.1:7878, web http://127.0.0.1:8080/; NODES=5, ARGS go to every node)
NODES ?= 3
cluster: venv-test
	$(BIN)/parlour cluster --nodes $(NODES) -- $(ARGS)

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build $(FASTLANE_SO)
