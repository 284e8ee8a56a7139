# Scripts to rule them all: every target creates the virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RESULTS ?= results/latest
PYTEST_ARGS ?=
# `make bench MODEL=path/to/model.skops` (or a pickle with MODEL_SHA256=HEX) runs the matrix on your own model.
MODEL ?=
MODEL_SHA256 ?=
MODEL_ARGS := $(if $(MODEL),--model $(MODEL))$(if $(MODEL_SHA256), --model-sha256 $(MODEL_SHA256))

.PHONY: install check lint format test test-fast test-busy bench bench-quick bench-rigorous bench-ci baseline report lock clean

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

bench: $(STAMP)  ## the default plan: local processes, default models, no Docker (< 15 min on 2 cores); MODEL=PATH
	$(BIN)/servingbench run $(MODEL_ARGS)

bench-quick: $(STAMP)  ## a smoke run of the default plan (< 2 min); MODEL=PATH for your own model
	$(BIN)/servingbench run --quick $(MODEL_ARGS)

bench-rigorous: $(STAMP)
	$(BIN)/servingbench run --rigorous $(MODEL_ARGS)

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

bench-ci: $(STAMP)  ## CI gate: short CI plan, then check against the committed baseline (< 3 min on 2 cores)
	$(BIN)/servingbench run --plan $(CI_PLAN) --out $(CI_RESULTS) --no-report
	$(BIN)/servingbench check --baseline $(CI_BASELINE) $(CI_RESULTS)/latest --out $(CI_RESULTS)/check

baseline: $(STAMP)  ## refresh the committed CI baseline on purpose (3 A/A runs), then commit baselines/ci
	$(BIN)/servingbench calibrate --plan $(CI_PLAN) --runs 3 --out results/calibrate --baseline $(CI_BASELINE)
