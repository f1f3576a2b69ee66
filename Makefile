# The two commands a newcomer needs (see README.md):
#   make demo   set up and run a demo bubble on loopback (state in ./demo-state)
#   make test   set up and run the checks and the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo-state

.PHONY: demo test lint typecheck unit bench system-packages clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sealgate demo --dir $(DEMO_DIR)

system-packages:
	scripts/system-packages

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: system-packages lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DEMO_DIR) .mypy_cache .ruff_cache .pytest_cache .hypothesis
