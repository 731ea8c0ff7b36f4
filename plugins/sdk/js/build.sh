#!/usr/bin/env bash
# Builds this plugin into dist/{{name}}.wasm, a WebAssembly component of
# wit/plugin.wit (world `classifier`). The first run installs componentize-js
# (pinned) with npm under ${CLAUDE_INGEST_HOME:-~/.local/share/claude-ingest}/sdk/js.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
name="{{name}}"
cjs_version="0.23.0"
# componentize-js imports this at run time but lists it as a dev dependency.
shim_version="0.17.9"
prefix="${CLAUDE_INGEST_HOME:-$HOME/.local/share/claude-ingest}/sdk/js"
if [[ -f "dist/$name.wasm" && -z "$(find . -name '*.js' -newer "dist/$name.wasm" -not -path './dist/*' -print -quit)" ]]; then
    echo "build.sh: dist/$name.wasm is up to date" >&2
    exit 0
fi
stamp="$prefix/.installed-$cjs_version-$shim_version"
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
if [[ ! -f "$stamp" ]]; then
    install_lock "$prefix"
    if [[ ! -f "$stamp" ]]; then
        echo "build.sh: installing componentize-js $cjs_version into $prefix" >&2
        mkdir -p "$prefix"
        npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
            "@bytecodealliance/componentize-js@$cjs_version" "@bytecodealliance/preview2-shim@$shim_version"
        touch "$stamp"
    fi
fi
mkdir -p dist
# componentize-js's API, from a script next to its node_modules (ESM resolves
# packages from the script's place). No WASI features: the engine gives
# plugins no files, network, clock or randomness.
# Written aside and renamed: a parallel build may be running the old copy.
cat >"$prefix/componentize.mjs.$$" <<'JS'
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
const [source, wit, world, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: world,
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await writeFile(out, component);
JS
mv -f "$prefix/componentize.mjs.$$" "$prefix/componentize.mjs"
node "$prefix/componentize.mjs" app.js wit classifier "dist/$name.wasm.tmp"
mv -f "dist/$name.wasm.tmp" "dist/$name.wasm"
echo "build.sh: built dist/$name.wasm" >&2
