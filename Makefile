# Scripts to rule them all: every target creates the virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RESULTS ?= results/latest
PYTEST_ARGS ?=

.PHONY: install check lint format test test-fast test-busy bench bench-quick bench-rigorous bench-ci bench-ab bench-ci-baseline baseline report lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv from the lock file

check: $(STAMP)  ## lint, format check, strict type check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

test: $(STAMP)  ## the whole suite: unit, contract, integration, end-to-end (slow ones included)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## unit and contract tests only
	$(BIN)/pytest -m "not slow and not browser" $(PYTEST_ARGS)

test-busy: $(STAMP)  ## the whole suite with a CPU-bound process pinned to every core (a busy CI machine)
	$(BIN)/pytest --busy $(PYTEST_ARGS)

bench: $(STAMP)  ## the default plan: local processes, default models, no Docker (< 15 min on 2 cores)
	$(BIN)/servingbench run

bench-quick: $(STAMP)  ## a smoke run of the default plan (< 2 min)
	$(BIN)/servingbench run --quick

bench-rigorous: $(STAMP)
	$(BIN)/servingbench run --rigorous

report: $(STAMP)  ## re-render the HTML report of a results bundle (RESULTS=dir)
	$(BIN)/servingbench report $(RESULTS)

lock: $(STAMP)  ## refresh requirements.lock on purpose
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

# --- containers (docs/containers.md) ---
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
LOAD_WORKERS ?= 2
COMPOSE_BENCH_ARGS ?=

.PHONY: compose-config compose-bench

compose-config:  ## validate docker-compose.yml (no Docker engine needed)
	$(COMPOSE) config -q

compose-bench: $(STAMP)  ## both servers, a Locust master and LOAD_WORKERS workers in containers; results in ./results
	$(BIN)/servingbench train
	mkdir -p results
	SB_UID=$$(id -u) SB_GID=$$(id -g) SB_REMOTE_LOAD_WORKERS=$(LOAD_WORKERS) SB_BENCH_ARGS="$(COMPOSE_BENCH_ARGS)" \
		$(COMPOSE) up --build --scale locust-worker=$(LOAD_WORKERS) --exit-code-from locust-master; \
		status=$$?; $(COMPOSE) down --remove-orphans; exit $$status

# --- the CI performance gate (docs/bench-ci.md) ---
CI_PLAN     := src/servingbench/harness/ci_plan.toml
CI_RESULTS  := results/ci
CI_BASELINE := baselines/ci
CALIBRATION_RUNS ?= 5
CHECK_ARGS ?=
# The commit to compare with: the merge base with origin/main when that ref exists, else HEAD (an A/A check).
BASE ?= $(shell git rev-parse -q --verify origin/main >/dev/null 2>&1 && git merge-base origin/main HEAD 2>/dev/null || echo HEAD)

bench-ci: $(STAMP)  ## CI gate: BASE (default: merge base with origin/main) vs this checkout, interleaved in one run (< 3 min)
	$(BIN)/servingbench check --base $(BASE) --plan $(CI_PLAN) --out $(CI_RESULTS) --no-report $(CHECK_ARGS)

bench-ab: bench-ci  ## the same gate under the name the workflow calls: make bench-ab BASE=<sha>

bench-ci-baseline: $(STAMP)  ## the committed-baseline check: only on the machine that made baselines/ci
	$(BIN)/servingbench check --baseline $(CI_BASELINE) --plan $(CI_PLAN) --out $(CI_RESULTS) --no-report $(CHECK_ARGS)

baseline: $(STAMP)  ## refresh the committed baseline on purpose: CALIBRATION_RUNS (>= 5) A/A runs -> baselines/ci/noise.json
	$(BIN)/servingbench calibrate --plan $(CI_PLAN) --runs $(CALIBRATION_RUNS) --out results/calibrate --baseline $(CI_BASELINE)
