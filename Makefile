# Two commands do everything on a fresh machine:  make quickstart   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (no multi-GB CUDA download); override for a GPU, e.g. make TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
# Exact versions CI tested; compatible ranges live in pyproject.toml.
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-all bench mutation constraints clean evaluate-demo

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "installing into $(VENV) in 3 steps; a few minutes on a fresh machine (versions pinned by $(CONSTRAINTS))" >&2
	@test -x $(BIN)/python || { echo "  creating the virtual environment $(VENV)" >&2; $(PYTHON) -m venv $(VENV); }
	@echo "  [1/3] upgrading pip" >&2
	@$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1" >&2
	@echo "  [2/3] installing $(TORCH_SPEC) (CPU build unless TORCH_SPEC says otherwise; the largest download)" >&2
	@$(BIN)/python -m pip install --quiet $(TORCH_SPEC) >&2
	@echo "  [3/3] installing factorgym and its dependencies (gymnasium, stable-baselines3, ccxt, TA-Lib, pyqlib, ...)" >&2
	@$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]' >&2
	@touch $(STAMP)
	@echo "installed: $(BIN)/factorgym --help lists the commands" >&2

install: $(STAMP)

## quickstart: install, then run the main job on the embedded sample data (no network)
quickstart: install
	$(BIN)/factorgym quickstart

## evaluate-demo: walk-forward (3 folds x 2 seeds, PPO) on the shipped hourly data; report in runs/evaluate/demo
evaluate-demo: install
	$(BIN)/factorgym evaluate --config configs/evaluate/demo.yaml --out runs/evaluate/demo --runs-dir runs

## test: install, then run the default (not slow) tests; no test reaches the internet
test: install
	$(BIN)/python -m pytest -m "not slow" -q

## test-all: every test, the slow ones too
test-all: install
	$(BIN)/python -m pytest -q

## bench: every speed/memory benchmark, one JSON line per figure
bench: install
	@for f in benchmarks/ingest.py benchmarks/data_io.py benchmarks/factors.py benchmarks/env_speed.py benchmarks/scale.py benchmarks/train.py benchmarks/evaluate.py benchmarks/live.py; do \
		test -f $$f && $(BIN)/python $$f || exit $$?; \
	done

## mutation: plant bugs one at a time (cosmic-ray) in the engine, custom factors, normalisation and the
## store's merge, and run the tests that guard each module; not part of `make test` (hours in full: pass
## MUTATION_ARGS="--sample 20" for a seeded random sample per module, or name groups: "engine env factors store")
mutation: install
	nice -n 10 $(BIN)/python scripts/mutation.py $(MUTATION_ARGS)

## constraints: re-pin constraints.txt to what the venv has now (after a deliberate upgrade)
constraints: install
	{ echo '# Exact versions CI tested (pip freeze of the venv, torch excluded so TORCH_SPEC can choose the build).'; \
	  echo '# Regenerate with `make constraints` after changing dependencies in pyproject.toml.'; \
	  $(BIN)/python -m pip freeze | grep -viE '^(torch|nvidia|triton|factorgym|-e |pip==|setuptools==)'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
