# Two commands do everything on a fresh machine:  make quickstart   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (no multi-GB CUDA download); override for a GPU, e.g. make TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
# Exact versions CI tested; compatible ranges live in pyproject.toml.
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-all bench mutation constraints clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "installing into $(VENV) (torch: $(TORCH_SPEC); pinned by $(CONSTRAINTS))" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1" >&2
	@$(BIN)/python -m pip install --quiet $(TORCH_SPEC) >&2
	@$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]' >&2
	@touch $(STAMP)

install: $(STAMP)

## quickstart: install, then run the main job on the embedded sample data (no network)
quickstart: install
	$(BIN)/factorgym quickstart

## test: install, then run the default (not slow) tests; no test reaches the internet
test: install
	$(BIN)/python -m pytest -m "not slow" -q

## test-all: every test, the slow ones too
test-all: install
	$(BIN)/python -m pytest -q

## bench: every speed/memory benchmark, one JSON line per figure
bench: install
	@for f in benchmarks/ingest.py benchmarks/data_io.py benchmarks/factors.py benchmarks/env_speed.py; do \
		test -f $$f && $(BIN)/python $$f || exit $$?; \
	done

## mutation: plant bugs one at a time (cosmic-ray) in the engine, custom factors, normalisation and the
## store's merge, and run the tests that guard each; not part of `make test` (hours in full: pass
## MUTATION_ARGS="--sample 100" for a random sample per group, or name groups: "factors store engine")
mutation: install
	$(BIN)/python scripts/mutation.py $(MUTATION_ARGS)

## constraints: re-pin constraints.txt to what the venv has now (after a deliberate upgrade)
constraints: install
	{ echo '# Exact versions CI tested (pip freeze of the venv, torch excluded so TORCH_SPEC can choose the build).'; \
	  echo '# Regenerate with `make constraints` after changing dependencies in pyproject.toml.'; \
	  $(BIN)/python -m pip freeze | grep -viE '^(torch|nvidia|triton|factorgym|-e |pip==|setuptools==)'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
