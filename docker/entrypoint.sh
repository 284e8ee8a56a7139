#!/usr/bin/env bash
# The servingbench image's entrypoint: one image, every role. It runs the same way outside Docker (the tests do).
#
#   serve        one adapter under one server kind, in the foreground (exec: the server is this process)
#                SB_FRAMEWORK (fastapi|flask)  SB_SERVER  SB_WORKERS  SB_THREADS  SB_ROUTE  SB_HOST  SB_PORT
#                SB_MODEL (fast|heavy|PATH|synthetic:...)  SB_MODELS_DIR  SB_BLAS_THREADS
#   train        train the default models into SB_MODELS_DIR (the image does this at build time)
#   healthcheck  exit 0 when GET http://127.0.0.1:SB_PORT/healthz answers 200 (the image's HEALTHCHECK)
#   bench        the Locust master side: `servingbench run` against SB_TARGETS (space-separated URLs), with
#                SB_LOAD_WORKERS local and SB_REMOTE_LOAD_WORKERS remote Locust workers; SB_MASTER_BIND,
#                SB_MASTER_PORT; SB_BENCH_ARGS holds extra options (e.g. --quick). It first waits up to
#                SB_TARGET_WAIT_S seconds (default 180, 0: no wait) for every target's /healthz to answer 200,
#                so it needs no health condition from the container engine (podman 4.3 ignores them)
#   load-worker  Locust workers joining the master at SB_MASTER:SB_MASTER_PORT, run after run (= servingbench
#                load-worker); SB_PROCESSES workers per run, SB_LOAD_WORKER_ONCE=1 to stop after one run
#   (other)      executed as given, e.g. `servingbench --help` or `bash`
#
# Arguments after the role go to the servingbench command and win over the variables. SB_DRY_RUN=1 prints the
# command instead of running it.
set -euo pipefail

readonly DEFAULT_PORT=8000
readonly DEFAULT_MASTER_PORT=5557
readonly HEALTH_TIMEOUT_S=2
readonly DEFAULT_TARGET_WAIT_S=180
readonly HEALTH_PROBE='
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
try:
    with opener.open(sys.argv[1], timeout=float(sys.argv[2])) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:
    print(f"unhealthy: {sys.argv[1]}: {error}", file=sys.stderr)
    sys.exit(1)
'
# Polls each URL's /healthz (argv: deadline in seconds, then base URLs) until all answer 200; a servers' cold start in
# a container (imports, model load) can take longer than the harness's own readiness wait of a few seconds.
readonly TARGETS_WAIT='
import sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
deadline = time.monotonic() + float(sys.argv[1])
for base in sys.argv[2:]:
    url = base.rstrip("/") + "/healthz"
    while True:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    break
                error = f"HTTP {response.status}"
        except Exception as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            sys.exit(f"sb-entrypoint bench: {url} not ready after {sys.argv[1]} s: {error}")
        time.sleep(0.5)
'

run() {
    if [[ "${SB_DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "$@"
        printf '\n'
        exit 0
    fi
    exec "$@"
}

serve() {
    local args=(serve "${SB_FRAMEWORK:-fastapi}" --host "${SB_HOST:-127.0.0.1}" --port "${SB_PORT:-$DEFAULT_PORT}")
    args+=(--workers "${SB_WORKERS:-1}" --model "${SB_MODEL:-fast}" --blas-threads "${SB_BLAS_THREADS:-1}")
    if [[ -n "${SB_SERVER:-}" ]]; then args+=(--server "$SB_SERVER"); fi
    if [[ -n "${SB_THREADS:-}" ]]; then args+=(--threads "$SB_THREADS"); fi
    if [[ -n "${SB_ROUTE:-}" ]]; then args+=(--route "$SB_ROUTE"); fi
    if [[ -n "${SB_MODELS_DIR:-}" ]]; then args+=(--models-dir "$SB_MODELS_DIR"); fi
    run servingbench "${args[@]}" "$@"
}

train() {
    local args=(train)
    if [[ -n "${SB_MODELS_DIR:-}" ]]; then args+=(--models-dir "$SB_MODELS_DIR"); fi
    run servingbench "${args[@]}" "$@"
}

healthcheck() {
    run python -c "$HEALTH_PROBE" "http://127.0.0.1:${SB_PORT:-$DEFAULT_PORT}/healthz" "$HEALTH_TIMEOUT_S"
}

bench() {
    local args=(run) target extra=()
    for target in ${SB_TARGETS:-}; do args+=(--target "$target"); done
    if [[ -n "${SB_LOAD_WORKERS:-}" ]]; then args+=(--load-workers "$SB_LOAD_WORKERS"); fi
    if [[ "${SB_REMOTE_LOAD_WORKERS:-0}" != 0 ]]; then
        args+=(--remote-load-workers "$SB_REMOTE_LOAD_WORKERS")
        # The master listens beyond loopback only when told to (compose sets SB_MASTER_BIND=0.0.0.0).
        args+=(--master-bind "${SB_MASTER_BIND:-127.0.0.1}" --master-port "${SB_MASTER_PORT:-$DEFAULT_MASTER_PORT}")
    fi
    read -r -a extra <<< "${SB_BENCH_ARGS:-}"
    local wait_s="${SB_TARGET_WAIT_S:-$DEFAULT_TARGET_WAIT_S}" targets=()
    read -r -a targets <<< "${SB_TARGETS:-}"
    if [[ "${SB_DRY_RUN:-0}" != 1 && "$wait_s" != 0 && ${#targets[@]} -gt 0 ]]; then
        python -c "$TARGETS_WAIT" "$wait_s" "${targets[@]}"
    fi
    run servingbench "${args[@]}" "${extra[@]}" "$@"
}

load_worker() {
    local args=(--master "${SB_MASTER:-127.0.0.1}" --master-port "${SB_MASTER_PORT:-$DEFAULT_MASTER_PORT}")
    args+=(--processes "${SB_PROCESSES:-1}")
    if [[ "${SB_LOAD_WORKER_ONCE:-0}" == 1 ]]; then args+=(--once); fi
    run python -m servingbench.harness.distributed "${args[@]}" "$@"
}

role="${1:-serve}"
if [[ $# -gt 0 ]]; then shift; fi
case "$role" in
    serve) serve "$@" ;;
    train) train "$@" ;;
    healthcheck) healthcheck ;;
    bench | locust-master) bench "$@" ;;
    load-worker | locust-worker) load_worker "$@" ;;
    *) run "$role" "$@" ;;
esac
