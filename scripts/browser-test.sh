#!/usr/bin/env bash
# Browser test of the web playground (`llm-auction serve`, GET /).
#
# Installs what is missing (Debian's chromium, playwright-core from npm into a
# cache dir outside the repo), then runs the ignored Rust test that starts the
# server on a loopback port and drives scripts/playground.test.mjs against it.
#
#   bash scripts/browser-test.sh            # install if needed, then run the test
#   bash scripts/browser-test.sh install    # only install
set -euo pipefail

PLAYWRIGHT_VERSION=1.64.1
NODE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/llm-auction-peers/node"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "browser-test: installing chromium (Debian package)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "browser-test: installing nodejs and npm (Debian packages)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

if [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
  echo "browser-test: installing playwright-core@$PLAYWRIGHT_VERSION into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund \
    "playwright-core@$PLAYWRIGHT_VERSION"
fi

export NODE_PATH="$NODE_DIR/node_modules"
export CHROMIUM=/usr/bin/chromium

if [ "${1:-}" = "install" ]; then
  echo "browser-test: chromium and playwright-core are installed (NODE_PATH=$NODE_PATH)"
  exit 0
fi

cd "$ROOT"
cargo test -p llm-auction-cli --test playground -- --ignored --nocapture
