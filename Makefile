# Every target creates .venv with what it needs when missing; repeated runs only re-install optkit itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=
# The project's real data files live in ../shared/data beside a checkout; use them unless a data home is set.
ifeq ($(origin OPTKIT_DATA), undefined)
ifneq ($(wildcard ../shared/data/libsvm),)
export OPTKIT_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: demo test test-all bench docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# Dependencies are re-resolved only when setup.cfg changes (one stamp per extras set).
$(VENV)/.deps-%: setup.cfg | $(BIN)/python
	$(PIP) install ".[$*]"
	touch $@

$(VENV)/.deps-base: setup.cfg | $(BIN)/python
	$(PIP) install .
	touch $@

# The tests run against the installed package, never the source tree.
install: $(VENV)/.deps-base
	$(PIP) install --no-deps --no-build-isolation --force-reinstall .

demo: $(VENV)/.deps-base install
	$(BIN)/optkit demo

test: $(VENV)/.deps-dev install
	$(BIN)/pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: $(VENV)/.deps-dev install
	$(BIN)/pytest -m "not gpu" $(PYTEST_ARGS)

bench: $(VENV)/.deps-bench install
	@for f in benchmarks/[a-z]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

docs: $(VENV)/.deps-docs install
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf build *.egg-info docs/_build optkit-results
