# The two commands of the README: `make quickstart` and `make test`. Both work on a fresh machine
# with Python >= 3.11 and pip: they create .venv and install everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
EXTRAS ?= dev,ray,api,aux
OUT ?= runs/quickstart

.PHONY: install quickstart test test-unit lint gpu-test clean postgres
.PHONY: deploy-check

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

# PostgreSQL binaries for the job service's tests (Debian's package; the tests start their own throwaway
# cluster). Skipped when already installed; without apt or root the Postgres tests skip with a reason.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "postgresql could not be installed; the PostgreSQL tests will be skipped"

# Render every kustomization and lint the Dockerfiles with the dev extra's kubectl and hadolint (no Docker
# engine or cluster needed); tests/deploy validates every rendered object against its schema.
deploy-check: install
	@for k in deploy/overlays/dev deploy/overlays/prod deploy/monitoring; do \
	  $(or $(wildcard $(BIN)/kubectl),kubectl) kustomize $$k >/dev/null || exit 1; done
	$(BIN)/hadolint --config docker/.hadolint.yaml docker/Dockerfile.api docker/Dockerfile.gpu docker/Dockerfile.vllm

test: install lint postgres deploy-check
	$(BIN)/pytest -q -m "not gpu" tests

test-unit: install
	$(BIN)/pytest -q -m "not gpu" tests/unit

gpu-test: install
	$(BIN)/pytest -q -m gpu tests/gpu

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
