#!/usr/bin/env bash
# Builds this plugin into dist/{{name}}.wasm, a WebAssembly component of
# wit/plugin.wit (world `classifier`). The first run installs componentize-py
# (pinned) into a venv under ${CLAUDE_INGEST_HOME:-~/.local/share/claude-ingest}/sdk/python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
name="{{name}}"
version="0.25.1"
venv="${CLAUDE_INGEST_HOME:-$HOME/.local/share/claude-ingest}/sdk/python"
if [[ -f "dist/$name.wasm" && -z "$(find . -name '*.py' -newer "dist/$name.wasm" -not -path './dist/*' -print -quit)" ]]; then
    echo "build.sh: dist/$name.wasm is up to date" >&2
    exit 0
fi
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $version"; then
    echo "build.sh: installing componentize-py $version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$version"
fi
mkdir -p dist
# --stub-wasi: the engine gives plugins no WASI (no files, network, clock).
"$venv/bin/componentize-py" -q -d wit -w classifier componentize app -o "dist/$name.wasm.tmp" --stub-wasi
mv -f "dist/$name.wasm.tmp" "dist/$name.wasm"
echo "build.sh: built dist/$name.wasm" >&2
