#!/usr/bin/env bash
# Property-based HTTP fuzzing: schemathesis generates requests from the
# server's own /openapi.json and sends them to the real binary (SQLite, a
# platform key from `tenant add`), bounded in time. Fails on any 5xx, on a
# 4xx/5xx that is not problem JSON or echoes a request value
# (.ci/schemathesis_hooks.py), and on a panic in the server log.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_TIME="${SCHEMATHESIS_MAX_TIME:-180}"
VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi

cargo build --quiet --bin carbon-ledger
BIN=target/debug/carbon-ledger
WORK=$(mktemp -d "$PWD/target/schemathesis.XXXXXX")
for var in $(env | grep -o '^CARBON_LEDGER_[A-Z_]*' || true); do unset "$var"; done
export CARBON_LEDGER_DATA_DIR="$WORK/data"

KEY=$("$BIN" tenant add --name fuzz --role platform 2>/dev/null | tail -n 1)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" --sweep-interval-secs 0 >"$WORK/server.log" 2>&1 &
SERVER=$!
stop() {
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done

# One person with data, the id the document's examples use, so the
# examples phase reaches past 404.
BASE="http://127.0.0.1:$PORT"
for purpose in accounting rewards; do
    curl -fsS -X PUT -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d '{"notice_version": 1}' "$BASE/v1/subjects/u-1/consents/$purpose" >/dev/null
done
curl -fsS -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d "{\"event_id\": \"seed-1\", \"subject\": \"u-1\", \"kind\": \"clean_plate\", \"occurred_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" \
    "$BASE/v1/events" >/dev/null

started=$(date +%s)
status=0
# Run from the scratch directory: schemathesis keeps its cache in the
# working directory, which must not be the repository. One worker: with two
# threads, CPython 3.11's `ast` module can fail inside Hypothesis ("AST
# constructor recursion depth mismatch"), a runtime error of the tool's own
# that fails the step without any finding about the API.
ROOT=$PWD
(cd "$WORK" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$ROOT/.ci" "$ROOT/$VENV/bin/schemathesis" run \
    "http://127.0.0.1:$PORT/openapi.json" \
    --header "Authorization: Bearer $KEY" \
    --checks not_a_server_error,problem_json \
    --phases examples,coverage,fuzzing \
    --max-time "$MAX_TIME" \
    --workers 1 \
    --generation-database none \
    --no-color \
    --request-timeout 30) || status=$?
echo "schemathesis took $(( $(date +%s) - started )) s"
stop
trap - EXIT
if grep -q "panicked" "$WORK/server.log"; then
    echo "the server panicked during fuzzing:" >&2
    grep -n "panicked" "$WORK/server.log" >&2
    status=1
fi
if [ "$status" -eq 0 ]; then rm -rf "$WORK"; else echo "server log kept in $WORK/server.log" >&2; fi
exit "$status"
