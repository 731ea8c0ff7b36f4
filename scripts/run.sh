#!/usr/bin/env bash
# One command from a fresh clone to a running engine on the embedded default:
# builds the example plugins and the engine (which embeds them and the default
# rule pack), installs the embedded ClickHouse engine (`claude-ingest setup`),
# then runs `claude-ingest ingest` (backfill + follow + dashboard on
# http://127.0.0.1:8787). Extra arguments go to `ingest`.
# Tails ~/.claude/projects when it exists, else the bundled example corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugins/build.sh
cargo build --release --locked
./target/release/claude-ingest setup
root_args=()
if [[ " $* " != *" --root "* && -z "${CLAUDE_INGEST_ROOT:-}" ]]; then
  if [ -d "$HOME/.claude/projects" ]; then
    root_args=(--root "$HOME/.claude/projects")
  else
    echo "note: $HOME/.claude/projects does not exist; ingesting the example corpus instead" >&2
    root_args=(--root examples/claude-projects)
  fi
fi
exec ./target/release/claude-ingest "${root_args[@]}" ingest "$@"
