# bnexp: `make help` lists the targets. `make test` and `make sweep` set themselves up on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SWEEP   ?= reference
ARGS    ?=
RESULTS ?= results/local
# make test: pytest-xdist workers, each taking whole test files so a module fixture runs once (0: one process)
TEST_JOBS ?= 2
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup data run sweep quick report lint test test-all bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-9s %s\n", $$1, $$2}'
	@echo "  reference sweep: seeds $$(sed -n 's/^seeds: *\(\[[^]]*\]\).*/\1/p' configs/sweep/reference.yaml), $$(grep -cE '^  [a-z0-9_@]+:' configs/sweep/reference.yaml) grids (configs/sweep/reference.yaml)"

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,backends]'  # pins: what decides the numbers
	touch $(STAMP)

setup: $(STAMP) data  ## create .venv, install bnexp with its dependencies and the offline dataset

data:  ## install Debian's dataset-fashion-mnist where apt exists and the files are missing
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

run: setup  ## one run -> results/local/: make run ARGS="scenario=frozen_base seed=1"
	$(BIN)/bnexp run $(ARGS)

sweep: setup  ## the runs of every scenario's reference grid that are not current, then the report -> results/ (SWEEP=frameworks: Keras 3 backends and releases)
	@echo "make sweep: sweep=$(SWEEP) writes to $$( [ "$(SWEEP)" = reference ] && echo 'results/ (the committed report, tables, figures)' || echo 'results/local/ (git-ignored)')"
	$(BIN)/bnexp sweep sweep=$(SWEEP) $(ARGS)

quick: setup  ## the smoke grid (sweep=quick) and its report -> results/local/ (git-ignored)
	$(BIN)/bnexp sweep sweep=quick $(ARGS)

report: setup  ## rebuild the report of the runs in results/local/ (RESULTS=results: the reference runs)
	$(BIN)/bnexp report paths.results_dir=$(RESULTS) $(ARGS)

lint: setup  ## ruff over the whole project (rules: pyproject.toml [tool.ruff])
	$(BIN)/ruff check .

test: setup lint  ## the test suite without slow tests, TEST_JOBS (2) files at a time (< 10 min on 2 cores)
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_JOBS) --dist loadfile $(ARGS)

test-all: setup  ## every test, slow ones included, TEST_JOBS (2) files at a time
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(ARGS)

bench: setup  ## benchmarks: harness vs plain Keras, start-up, sweep throughput -> results/bench.md
	$(BIN)/python -m bnexp.bench $(ARGS)

clean:  ## remove raw runs, your own results, caches and the venv (committed results stay)
	rm -rf results/runs results/local results/.hydra results/.locks $(VENV) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
