#!/usr/bin/env bash
# Browser tests: the real server, driven by Playwright in Debian's headless
# Chromium, once on SQLite and once on PostgreSQL. Installs what it needs:
# chromium (and a CJK font, for the zh-CN screenshots) from Debian, and the
# pinned npm packages into target/browser-node. Screenshots go to
# target/browser-output/<engine>/.
#
# PostgreSQL: CARBON_LEDGER_TEST_POSTGRES_URL names a server where a fresh
# database is created (and dropped after).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi 'wenquanyi\|noto sans cjk'; then
    log "installing chromium and a CJK font"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null
fi

NODE_DIR=target/browser-node
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ] || [ ! -d "$NODE_DIR/node_modules/@axe-core/playwright" ]; then
    log "installing playwright-core and @axe-core/playwright into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent \
        playwright-core@1.49.1 @axe-core/playwright@4.10.1
fi

log "building the server"
cargo build --quiet
BIN=target/debug/carbon-ledger

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

SERVER_PID=""
WORK=""
PG_DB=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=""
    if [ -n "$PG_DB" ]; then
        psql -w "$CARBON_LEDGER_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    PG_DB=""
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    WORK=""
}
trap cleanup EXIT

# run_engine NAME [DATABASE_URL]
run_engine() {
    local engine=$1 database=${2:-}
    WORK=$(mktemp -d)
    local port; port=$(free_port)
    local args=(--data-dir "$WORK")
    if [ -n "$database" ]; then args+=(--database "$database"); fi
    local key
    key=$("$BIN" tenant add "${args[@]}" --name browser-platform --role platform 2>/dev/null | tail -n 1)
    "$BIN" serve "${args[@]}" --listen "127.0.0.1:$port" >"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$WORK/serve.log" >&2; return 1; }
    local status=0
    for spec in tests/browser/*.spec.mjs; do
        # The auditor's spec alters the database to show a failed check: it
        # gets a server and database of its own (.ci/browser-auditor.sh).
        [ "$spec" = tests/browser/auditor.spec.mjs ] && continue
        log "$spec on $engine"
        BASE_URL="http://127.0.0.1:$port" PLATFORM_KEY="$key" OUT_DIR="target/browser-output/$engine" \
            BROWSER_NODE="$NODE_DIR" node "$spec" || status=1
    done
    # What the server logged must not hold a person's id or a console secret.
    if grep -E 'person-[0-9]+-[0-9]+|/console/open/[A-Za-z0-9_-]{20}|cl_session=' "$WORK/serve.log"; then
        echo "the server log holds an external id, a console token or a session id" >&2
        status=1
    fi
    cleanup
    return $status
}

run_engine sqlite

if [ -n "${CARBON_LEDGER_TEST_POSTGRES_URL:-}" ]; then
    PG_DB="cl_browser_$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
    psql -w "$CARBON_LEDGER_TEST_POSTGRES_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
    url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' \
        "$CARBON_LEDGER_TEST_POSTGRES_URL" "$PG_DB")
    run_engine postgres "$url"
else
    echo "CARBON_LEDGER_TEST_POSTGRES_URL is not set: the PostgreSQL run is skipped" >&2
fi
