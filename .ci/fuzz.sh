#!/usr/bin/env bash
# Fuzzes each cargo-fuzz target in fuzz/ for a short while, coverage-guided
# (libFuzzer): FUZZ_SECONDS each, 30 by default. Installs cargo-fuzz if it
# is missing. dicts/<target>.dict, where there is one, gives libFuzzer the
# tokens of the input format. Runs on the stable toolchain: `-s none` builds without a
# sanitizer (the sanitizers need nightly); the crate forbids unsafe code, so
# what a sanitizer would add is little, and every panic is still a crash.
# A crash fails the script and leaves its input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH="${FUZZ_SECONDS:-30}"
CARGO_FUZZ_VERSION=0.13.2
# Many codegen units: a build about twice as fast, for slightly slower runs.
FLAGS=(-s none --codegen-units 16)

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# libfuzzer-sys builds libFuzzer from C++ source.
if ! command -v c++ >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

start=$(date +%s)
cargo fuzz build "${FLAGS[@]}"
echo "fuzz targets built in $(( $(date +%s) - start )) s"

for target in $(cargo fuzz list); do
    # The corpus grows in corpus/<target> (kept between runs on one
    # checkout); seeds/<target> holds the committed starting inputs.
    mkdir -p "corpus/$target"
    dict=()
    [ -f "dicts/$target.dict" ] && dict=(-dict="dicts/$target.dict")
    log="$(mktemp)"
    if ! cargo fuzz run "${FLAGS[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        grep -m 1 -A 2 "panicked at" "$log" || true
        tail -n 25 "$log"
        echo "fuzz target $target failed: the input is under fuzz/artifacts/$target/" >&2
        rm -f "$log"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    units=$(find "corpus/$target" -type f | wc -l)
    echo "$target: ${runs:-?} runs in ${SECONDS_EACH} s (${rate:-?} exec/s), ${cov:-cov: ?}, corpus ${units} inputs, no crash"
    rm -f "$log"
done
