# The whole set-up on a fresh machine is `make demo` or `make test`.
# TORCH_SPEC picks the torch build: the default is the CPU wheel; GPU users can run
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
# or install torch into .venv themselves first (an installed torch satisfying it is kept).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.contrastkit-installed

.PHONY: install demo test lint format results clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	# Peer libraries used as second references in tests/test_peers.py; --no-deps because
	# their packages pull torchvision, and the tests load only their torch-only loss files.
	$(PY) -m pip install --quiet --no-deps lightly==1.6.0 open_clip_torch==3.3.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/contrastkit compare --config configs/demo.yaml

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install lint
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

results: install
	$(PY) scripts/make_results.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
