# lmjax: `make demo` trains the tiny GPT on the embedded corpus; `make test` runs the test suite.
# Both create the virtual environment when it is missing and install lmjax into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/demo
PYTEST_ARGS ?=

CORE_STAMP := $(VENV)/.lmjax-core
TEST_STAMP := $(VENV)/.lmjax-test

.PHONY: demo test venv clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(CORE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Test-only references (torch CPU build, transformers) and the notebook runner.
$(TEST_STAMP): pyproject.toml $(CORE_STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(CORE_STAMP)

demo: $(CORE_STAMP)
	$(BIN)/python -m lmjax train --config experiments/gpt/demo.py --workdir $(WORKDIR)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS) tests

clean-runs:
	rm -rf runs
