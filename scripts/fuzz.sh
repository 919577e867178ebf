#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 60) on its checked-in seed corpus, with
# cargo-fuzz on the nightly toolchain; a crash (or a leak, an out-of-memory, a timeout) fails. What
# is missing is installed first: cargo-fuzz into ~/.cargo/bin (from crates.io, once).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   New inputs found go to a scratch corpus under target/fuzz-corpus/ (emptied first), never into
#   the checked-in seeds; a crash's input is kept under fuzz/artifacts/<target>/ to become a
#   regression test. libFuzzer's seed is FUZZ_SEED (default 1): with the same seed and seeds, a
#   shorter run executes a prefix of a longer one, so CI's 60 s repeat the start of the 10-minute
#   runs recorded in the issue and a red CI reproduces; set FUZZ_SEED to explore further.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(gguf_bytes model_gguf model_hf mechanism_json remote_responses)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# No sanitizer: the targets' code is safe Rust (the unsafe kernels are not on these paths), and
# without ASan both the build and each execution are several times faster.
FLAGS=(--sanitizer none --release --debug-assertions)
for t in "${TARGETS[@]}"; do
    echo "== fuzz $t for ${SECONDS_EACH}s"
    scratch="target/fuzz-corpus/$t"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    log="target/fuzz-$t.log"
    rc=0
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -seed="${FUZZ_SEED:-1}" -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss|INFO: seed corpus)' "$log" |
        cut -c1-200 || true
    if [ "$rc" -ne 0 ]; then
        grep -A3 -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" | cut -c1-300 | head -n 20 >&2
        echo "fuzz.sh: $t failed (exit $rc); the input is under fuzz/artifacts/$t/, the log in $log" >&2
        exit 1
    fi
done
