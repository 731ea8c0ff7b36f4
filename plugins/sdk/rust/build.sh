#!/usr/bin/env bash
# Builds this plugin into dist/{{name}}.wasm, a WebAssembly component of
# wit/plugin.wit (world `classifier`). Needs the wasm32-unknown-unknown target
# (`rustup target add wasm32-unknown-unknown`) and wasm-tools
# (`cargo install --locked wasm-tools`), which this script installs when
# missing. wasm32-unknown-unknown, not wasip2: the engine gives plugins no WASI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
name="{{name}}"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
command -v wasm-tools >/dev/null || cargo install --locked wasm-tools
cargo build --release --target wasm32-unknown-unknown
mkdir -p dist
wasm-tools component new "target/wasm32-unknown-unknown/release/${name//-/_}.wasm" -o "dist/$name.wasm.tmp"
mv -f "dist/$name.wasm.tmp" "dist/$name.wasm"
echo "build.sh: built dist/$name.wasm" >&2
