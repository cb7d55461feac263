#!/usr/bin/env bash
# Fuzzes the HTTP contract: schemathesis generates requests from api/stock_service.yaml
# (its examples, coverage of every constraint, random fuzzing and stateful sequences
# following the OpenAPI links), sends them with the right token per operation, and runs
# every check on each answer (status, content type, headers and body against the
# document; schema-valid requests accepted, invalid ones refused; no 5xx; …).
#
#   api/fuzz.sh            # the Wasmtime test host, built and started here
#   api/fuzz.sh spin       # a real `spin up` (SPIN_BIN, else `spin` on PATH)
#   api/fuzz.sh URL        # a running instance; set STOCK_ADMIN_TOKEN, STOCK_SERVICE_TOKEN
#
# FUZZ_MAX_TIME (seconds, default 120) bounds the run, FUZZ_SEED fixes the generation
# (default: a fixed seed, so a run can be repeated). Needs `pip install schemathesis`
# (4.x). Exits non-zero when schemathesis finds a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-host}
max_time=${FUZZ_MAX_TIME:-120}
seed=${FUZZ_SEED:-14}
command -v st >/dev/null || { echo "fuzz.sh: schemathesis (st) not found: pip install schemathesis" >&2; exit 2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

server=
state=
stop() {
    if [ -n "$server" ]; then
        # `spin up` runs the app in a child (`spin trigger http`): stop that first.
        pkill -P "$server" 2>/dev/null || true
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ -n "$state" ]; then rm -rf "$state"; fi
}
trap stop EXIT

case "$target" in
    host | spin)
        export STOCK_ADMIN_TOKEN=fuzz-admin STOCK_SERVICE_TOKEN=fuzz-service
        cargo build --quiet --target wasm32-wasip2 --release --workspace
        port=$(free_port)
        url=http://127.0.0.1:$port
        if [ "$target" = host ]; then
            cargo build --quiet --release -p stock-test-host
            target/release/stock-test-host --manifest spin.toml --listen "127.0.0.1:$port" \
                --variable admin_token="$STOCK_ADMIN_TOKEN" \
                --variable service_token="$STOCK_SERVICE_TOKEN" &
        else
            spin=${SPIN_BIN:-$(command -v spin)}
            state=$(mktemp -d)
            SPIN_VARIABLE_ADMIN_TOKEN=$STOCK_ADMIN_TOKEN SPIN_VARIABLE_SERVICE_TOKEN=$STOCK_SERVICE_TOKEN \
                "$spin" up --from spin.toml --listen "127.0.0.1:$port" --state-dir "$state" >/dev/null &
        fi
        server=$!
        for _ in $(seq 600); do
            curl -s -o /dev/null "$url/v1/events?limit=1" && break
            kill -0 "$server" 2>/dev/null || { echo "fuzz.sh: the server exited" >&2; exit 1; }
            sleep 0.1
        done
        ;;
    *)
        url=$target
        : "${STOCK_ADMIN_TOKEN:?set STOCK_ADMIN_TOKEN for $url}" "${STOCK_SERVICE_TOKEN:?set STOCK_SERVICE_TOKEN for $url}"
        ;;
esac

st --config-file api/schemathesis.toml run api/stock_service.yaml \
    --url "$url" --checks all --max-time "$max_time" --seed "$seed" --workers 2
