# The two commands of the README: `make quickstart` and `make test`. Both work on a fresh machine
# with Python >= 3.11 and pip: they create .venv and install everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
EXTRAS ?= dev,ray
OUT ?= runs/quickstart

.PHONY: install quickstart test test-unit lint gpu-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch goes in first: on a CPU machine `torch==X` resolves to the local CPU build; installing the
# project first would let pip pull a multi-GB CUDA build as a dependency.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/solrl quickstart --out $(OUT)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q -m "not gpu" tests

test-unit: install
	$(BIN)/pytest -q -m "not gpu" tests/unit

gpu-test: install
	$(BIN)/pytest -q -m gpu tests/gpu

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
