# The two things a new user does: `make demo` (set up, train a small model on the embedded chat, talk to it)
# and `make test` (set up, lint, run the whole test suite). Both create .venv with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[train,eval,dev]'
	touch $@

demo: setup
	$(BIN)/mimic demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
