#!/usr/bin/env bash
# Dashboard test in a real headless browser: installs Debian chromium and
# playwright-core if missing (idempotent), backfills the example corpus into
# the embedded ClickHouse, serves the dashboard, and drives it with Chromium.
# Screenshots: target/dashboard.png, target/replay.png, target/search.png.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  else
    sudo apt-get install -y -qq chromium
  fi
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm install --no-audit --no-fund --silent)
fi

cargo build --locked --quiet
bin="$repo/target/debug/claude-ingest"
state="$(mktemp -d)"
trap 'kill "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$state"' EXIT
"$bin" --root examples/claude-projects --state-dir "$state" --plugins plugins/dist backfill --quiet
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin" --root examples/claude-projects --state-dir "$state" --plugins plugins/dist serve --listen "127.0.0.1:$port" &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
mkdir -p target
node "$here/dashboard.mjs" "http://127.0.0.1:$port/" "$repo/target/dashboard.png" "$repo/examples/EXPECTED.json"
