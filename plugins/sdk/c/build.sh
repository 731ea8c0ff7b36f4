#!/usr/bin/env bash
# Builds this plugin into dist/{{name}}.wasm, a core WebAssembly module of the
# JSON ABI (plugin.h). Needs a clang that targets wasm32 plus wasm-ld
# (Debian: apt-get install clang lld), or set WASM_CC (e.g. "zig cc -target
# wasm32-freestanding"); without either it installs the `ziglang` PyPI package
# into a venv under ${CLAUDE_INGEST_HOME:-~/.local/share/claude-ingest}/sdk/c.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
name="{{name}}"
venv="${CLAUDE_INGEST_HOME:-$HOME/.local/share/claude-ingest}/sdk/c"
if [[ -n "${WASM_CC:-}" ]]; then
    # shellcheck disable=SC2206 # a command line, split on purpose
    cc=($WASM_CC -nostdlib -Wl,--no-entry)
elif command -v clang >/dev/null && echo 'int x;' | clang --target=wasm32 -nostdlib -Wl,--no-entry -x c -o /dev/null - 2>/dev/null; then
    cc=(clang --target=wasm32 -nostdlib -Wl,--no-entry)
else
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ziglang
    fi
    cc=("$venv/bin/python" -m ziglang cc -target wasm32-freestanding -nostdlib -Wl,--no-entry)
fi
mkdir -p dist
"${cc[@]}" -O2 -Wall -Wextra -Werror -Wl,-z,stack-size=65536 -Wl,--strip-all -o "dist/$name.wasm.tmp" app.c
mv -f "dist/$name.wasm.tmp" "dist/$name.wasm"
echo "build.sh: built dist/$name.wasm" >&2
