#!/usr/bin/env bash
# The Python package (crates/python) built, installed into a virtual environment and tested:
#   1. makes the venv when missing or out of date ($LLM_AUCTION_PYENV, default
#      ~/.cache/llm-auction-python/venv): maturin, numpy and pytest from PyPI, pinned;
#   2. builds the wheel with maturin into target/wheels (abi3, Python >= 3.9) and installs it;
#   3. builds the CLI (the oracle the tests compare against, same profile) and the tiny test model;
#   4. runs pytest on crates/python/tests and the notebook-style example.
# Usage: scripts/python-tests.sh [--release]
#   The default profile is dev (the test build's, optimised dependencies; shares cargo test's
#   artifacts); --release builds the wheel you would ship.
set -euo pipefail
cd "$(dirname "$0")/.."

MATURIN_VERSION=1.16.0
NUMPY_VERSION=2.4.6
PYTEST_VERSION=9.2.0
VENV="${LLM_AUCTION_PYENV:-$HOME/.cache/llm-auction-python/venv}"
PROFILE=dev
BIN=target/debug
if [ "${1:-}" = "--release" ]; then PROFILE=release; BIN=target/release; fi
export LLM_AUCTION_HOME="${LLM_AUCTION_HOME:-$PWD/target/llm-auction-home}"
WORK="$PWD/target/python-tests"
mkdir -p "$WORK"

has_version() { # package version
    "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}
if ! { has_version maturin "$MATURIN_VERSION" && has_version numpy "$NUMPY_VERSION" \
        && has_version pytest "$PYTEST_VERSION"; }; then
    echo "== making the venv $VENV (maturin $MATURIN_VERSION, numpy $NUMPY_VERSION, pytest $PYTEST_VERSION)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "maturin==$MATURIN_VERSION" "numpy==$NUMPY_VERSION" "pytest==$PYTEST_VERSION"
fi

echo "== maturin build --profile $PROFILE"
rm -rf "$WORK/wheels"
start=$(date +%s)
"$VENV/bin/maturin" build -q --profile "$PROFILE" --manifest-path crates/python/Cargo.toml \
    --interpreter "$VENV/bin/python" --out "$WORK/wheels"
wheel=$(ls "$WORK"/wheels/llm_auction-*.whl)
echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) in $(( $(date +%s) - start )) s"
"$VENV/bin/pip" install -q --force-reinstall --no-deps "$wheel"

echo "== the CLI and the tiny model the tests compare against"
if [ "$PROFILE" = dev ]; then
    # As `cargo test --workspace` builds them (same features, examples included), so after it
    # (CI) this is a no-op and the example binary is fresh.
    cargo test --workspace --no-run -q
    target/debug/examples/tiny_model "$WORK/tiny.gguf" 2
else
    cargo build -q --release -p llm-auction-cli
    cargo run -q -p llm-auction-model --example tiny_model -- "$WORK/tiny.gguf" 2
fi

echo "== pytest"
export LLM_AUCTION_CLI="$PWD/$BIN/llm-auction" LLM_AUCTION_TINY="$WORK/tiny.gguf"
# From outside the source tree, so `import llm_auction` is the installed wheel.
(cd "$WORK" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/crates/python/tests")
echo "== example: MOSAIC payments for log-probs computed elsewhere"
(cd "$WORK" && "$VENV/bin/python" "$OLDPWD/crates/python/examples/payments_from_logprobs.py")
