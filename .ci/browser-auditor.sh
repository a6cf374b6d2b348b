#!/usr/bin/env bash
# Browser test of the auditor console in a real headless Chromium (Debian's
# package), driven by playwright-core, with an axe-core scan. Starts the
# server on SQLite (or on PostgreSQL when BROWSER_DATABASE_URL names a fresh
# database) and runs tests/browser/auditor.spec.mjs with the env contract
# every browser spec shares: BASE_URL, PLATFORM_KEY, DATABASE_URL, DATA_DIR.
# Screenshots go to target/browser-output/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# A font with Chinese glyphs, or the zh-CN screenshots show empty boxes.
if [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei >/dev/null
fi
# Pinned versions, installed outside the source tree.
NODE_DIR=target/browser-node
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ] || [ ! -d "$NODE_DIR/node_modules/axe-core" ]; then
    mkdir -p "$NODE_DIR"
    npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" playwright-core@1.49.1 axe-core@4.10.2
fi
export BROWSER_NODE_MODULES="$PWD/$NODE_DIR/node_modules"

cargo build --quiet --bin carbon-ledger
BIN="$PWD/target/debug/carbon-ledger"
WORK=$(mktemp -d "$PWD/target/browser-auditor.XXXXXX")
for var in $(env | grep -o '^CARBON_LEDGER_[A-Z_]*' || true); do unset "$var"; done
export CARBON_LEDGER_DATA_DIR="$WORK/data"
mkdir -p "$CARBON_LEDGER_DATA_DIR"
if [ -n "${BROWSER_DATABASE_URL:-}" ]; then
    export CARBON_LEDGER_DATABASE_URL="$BROWSER_DATABASE_URL"
    if [ -n "${BROWSER_KEY_STORE_URL:-}" ]; then export CARBON_LEDGER_KEY_STORE_URL="$BROWSER_KEY_STORE_URL"; fi
else
    export CARBON_LEDGER_DATABASE_URL="sqlite://$CARBON_LEDGER_DATA_DIR/ledger.db"
fi

PLATFORM_KEY=$("$BIN" tenant add --name browser --role platform 2>/dev/null | tail -n 1)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" --sweep-interval-secs 0 --checkpoint-interval-secs 0 >"$WORK/server.log" 2>&1 &
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

mkdir -p target/browser-output
status=0
BASE_URL="http://127.0.0.1:$PORT" PLATFORM_KEY="$PLATFORM_KEY" \
    DATABASE_URL="$CARBON_LEDGER_DATABASE_URL" DATA_DIR="$CARBON_LEDGER_DATA_DIR" \
    node tests/browser/auditor.spec.mjs || status=$?
if grep -q "panicked" "$WORK/server.log"; then
    echo "the server panicked:" >&2
    grep -n "panicked" "$WORK/server.log" >&2
    status=1
fi
if [ "$status" -eq 0 ]; then rm -rf "$WORK"; else echo "server log kept in $WORK/server.log" >&2; fi
exit "$status"
