# Two commands do everything on a fresh machine:  make quickstart   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (no multi-GB CUDA download); override for a GPU, e.g. make TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
# Exact versions CI tested; compatible ranges live in pyproject.toml.
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-all test-rllib bench suite-time mutation constraints clean evaluate-demo

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
## PYTEST_WORKERS: pytest-xdist processes (default 2, CI's cores), whole files per worker, slowest files first
## (tests/conftest.py); PYTEST_WORKERS=0 runs every test in this one process
PYTEST_WORKERS ?= 2
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install
	$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_XDIST)

## test-all: every test, the slow ones too
test-all: install
	$(BIN)/python -m pytest -q $(PYTEST_XDIST)

## test-rllib: RLlib in its own venv (.venv-rllib): ray[rllib] pins gymnasium==1.2.2, the default stack 1.4;
## not part of `make test`. Builds the venv once (constraints.txt less its gymnasium pin), then runs tests/test_rllib*.py
RLLIB_VENV ?= .venv-rllib
RLLIB_STAMP := $(RLLIB_VENV)/.installed
$(RLLIB_STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "installing the RLlib stack into $(RLLIB_VENV) (gymnasium 1.2.2, ray[rllib])" >&2
	@test -x $(RLLIB_VENV)/bin/python || $(PYTHON) -m venv $(RLLIB_VENV)
	@$(RLLIB_VENV)/bin/python -m pip install --quiet --upgrade "pip>=23.1" >&2
	@$(RLLIB_VENV)/bin/python -m pip install --quiet $(TORCH_SPEC) >&2
	@grep -v '^gymnasium==' $(CONSTRAINTS) > $(RLLIB_VENV)/constraints-rllib.txt
	@$(RLLIB_VENV)/bin/python -m pip install --quiet -c $(RLLIB_VENV)/constraints-rllib.txt -e '.[rllib]' \
		pytest pytest-socket pytest-timeout psutil hypothesis >&2
	@touch $(RLLIB_STAMP)

test-rllib: $(RLLIB_STAMP)
	$(RLLIB_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_rllib_env.py tests/test_rllib.py

## bench: every speed/memory benchmark, one JSON line per figure
bench: install
	@for f in benchmarks/ingest.py benchmarks/data_io.py benchmarks/factors.py benchmarks/env_speed.py benchmarks/kernel_compile.py benchmarks/scale.py benchmarks/train.py benchmarks/evaluate.py benchmarks/live.py benchmarks/tune.py benchmarks/rllib.py; do \
		test -f $$f && $(BIN)/python $$f || exit $$?; \
	done

## suite-time: the default suite's wall and CPU seconds (goal 240 s), one JSON line per figure; minutes, so not in
## `make bench`. SUITE_TIME_ARGS="--cold --reference": empty numba cache, and the one-process run beside it
suite-time: install
	nice -n 10 $(BIN)/python benchmarks/suite_time.py --workers $(PYTEST_WORKERS) $(SUITE_TIME_ARGS)

## mutation: plant bugs one at a time (cosmic-ray) in the engine, custom factors, normalisation and the
## store's merge (in a snapshot of HEAD, runs/mutation/tree), and run against each the default suite's tests that
## run its line (coverage map of the suite, built once per snapshot) and those that guard its module; not part
## of `make test` (days in full: MUTATION_ARGS="--stratified 160 --seed 2026 --stop-at 19:05" for a seeded sample
## spread over the modules by size; "--resume" continues; name groups to narrow: "engine env factors store")
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
