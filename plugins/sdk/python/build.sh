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
# One installer at a time: plugins built in parallel share the SDK. flock
# where there is one (Linux: released even if this build is killed), else a
# lock directory.
install_lock() {
    mkdir -p "$(dirname "$1")"
    if command -v flock >/dev/null; then
        exec 9>"$1.lock"
        flock 9
        return
    fi
    local waited=0
    until mkdir "$1.lockdir" 2>/dev/null; do
        sleep 1
        waited=$((waited + 1))
        if ((waited > 900)); then
            echo "build.sh: $1.lockdir held for 15 min: remove it if no build is running" >&2
            exit 1
        fi
    done
    trap "rmdir '$1.lockdir'" EXIT
}
installed() { "$venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $version"; }
if ! installed; then
    install_lock "$venv"
    if ! installed; then
        echo "build.sh: installing componentize-py $version into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$version"
    fi
fi
mkdir -p dist
# --stub-wasi: the engine gives plugins no WASI (no files, network, clock).
"$venv/bin/componentize-py" -q -d wit -w classifier componentize app -o "dist/$name.wasm.tmp" --stub-wasi
mv -f "dist/$name.wasm.tmp" "dist/$name.wasm"
echo "build.sh: built dist/$name.wasm" >&2
