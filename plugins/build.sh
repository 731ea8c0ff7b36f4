#!/usr/bin/env bash
# Build the example plugins into plugins/dist/ (the engine's default plugins dir).
#
#   plugins/build.sh            build every example
#   OUT=/some/dir plugins/build.sh
#
# C examples need clang with the wasm32 target plus wasm-ld. If they are
# missing this script installs them: Debian's clang + lld when run as root
# (apt-get), otherwise the `ziglang` PyPI package (which bundles clang) in a
# venv under ${CLAUDE_INGEST_HOME:-$HOME/.local/share/claude-ingest}.
# WAT examples need nothing: the engine compiles .wat text itself.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/examples"
out="${OUT:-$here/dist}"
data_home="${CLAUDE_INGEST_HOME:-$HOME/.local/share/claude-ingest}"
venv="$data_home/venv-ziglang"

log() { printf 'build.sh: %s\n' "$*" >&2; }

# Can `$@` compile and link a freestanding wasm32 module?
works() {
    local probe
    probe="$(mktemp -d)"
    printf '__attribute__((export_name("f"))) int f(void) { return 1; }\n' >"$probe/p.c"
    if "$@" -o "$probe/p.wasm" "$probe/p.c" >/dev/null 2>&1; then
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    return 1
}

# Sets CC (an array) to a working wasm32 C compiler, installing one if needed.
find_cc() {
    local clang_flags=(--target=wasm32 -nostdlib -Wl,--no-entry)
    local zig_flags=(-target wasm32-freestanding -nostdlib -Wl,--no-entry)
    local c
    if [[ -n "${WASM_CC:-}" ]]; then
        # shellcheck disable=SC2206 # user-supplied command line, split on purpose
        CC=($WASM_CC)
        return 0
    fi
    for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
        if command -v "$c" >/dev/null && works "$c" "${clang_flags[@]}"; then
            CC=("$c" "${clang_flags[@]}")
            return 0
        fi
    done
    if [[ -x "$venv/bin/python" ]] && works "$venv/bin/python" -m ziglang cc "${zig_flags[@]}"; then
        CC=("$venv/bin/python" -m ziglang cc "${zig_flags[@]}")
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        log "installing clang and lld with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        if apt-get install -y -qq clang lld >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq clang lld >/dev/null; }; then
            if works clang "${clang_flags[@]}"; then
                CC=(clang "${clang_flags[@]}")
                return 0
            fi
        fi
        log "apt-get did not give a working wasm32 clang, trying ziglang"
    fi
    log "installing ziglang into $venv"
    mkdir -p "$data_home"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ziglang
    if works "$venv/bin/python" -m ziglang cc "${zig_flags[@]}"; then
        CC=("$venv/bin/python" -m ziglang cc "${zig_flags[@]}")
        return 0
    fi
    log "no working wasm32 C compiler; set WASM_CC to one"
    return 1
}

mkdir -p "$out"

# WAT examples: copied as-is (only when changed, so a running engine's
# watcher does not see a rewrite; copy + rename so it never sees half a file).
for wat in "$src"/*/*.wat; do
    [[ -e "$wat" ]] || continue
    target="$out/$(basename "$wat")"
    if cmp -s "$wat" "$target"; then
        log "$(basename "$wat") is up to date"
        continue
    fi
    cp "$wat" "$target.tmp"
    mv -f "$target.tmp" "$target"
    log "copied $(basename "$wat")"
done

# C examples: examples/<name>/<name>.c -> dist/<name>.wasm. Skips up-to-date outputs.
c_sources=()
for c in "$src"/*/*.c; do
    [[ -e "$c" ]] && c_sources+=("$c")
done
if ((${#c_sources[@]})); then
    CC=()
    for csrc in "${c_sources[@]}"; do
        name="$(basename "$csrc" .c)"
        target="$out/$name.wasm"
        if [[ -f "$target" && "$target" -nt "$csrc" && -z "$(find "$src/common" -newer "$target" -print -quit)" ]]; then
            log "$name.wasm is up to date"
            continue
        fi
        ((${#CC[@]})) || find_cc
        # -O2 for speed; a 64 KiB stack is plenty for the JSON parser's depth cap.
        "${CC[@]}" -O2 -Wall -Wextra -Werror -Wl,-z,stack-size=65536 -Wl,--strip-all \
            -o "$target.tmp" "$csrc"
        # Rename so the engine's watcher never sees a half-written module.
        mv -f "$target.tmp" "$target"
        log "built $name.wasm"
    done
fi
# Tables a plugin writes: examples/<name>/table.sql -> dist/<name>.sql (the engine
# applies every *.sql of the plugins dir on start, CREATE ... IF NOT EXISTS).
for sql in "$src"/*/table.sql; do
    [[ -e "$sql" ]] || continue
    name="$(basename "$(dirname "$sql")")"
    cmp -s "$sql" "$out/$name.sql" || { cp "$sql" "$out/$name.sql.tmp" && mv -f "$out/$name.sql.tmp" "$out/$name.sql"; }
done
log "plugins in $out: $(cd "$out" && ls -- *.wasm *.wat 2>/dev/null | tr '\n' ' ')"
