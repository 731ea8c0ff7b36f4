#!/usr/bin/env bash
# Installs the embedded ClickHouse engine (PyPI `chdb-core`, a current ClickHouse
# as a library) into a private virtualenv. Idempotent; needs python3 + pip and
# access to the Python package registry only.
#
#   CLAUDE_INGEST_HOME  where the venv lives (default ~/.local/share/claude-ingest)
#   CHDB_CORE_VERSION   pinned engine version (default below)
set -euo pipefail
HOME_DIR="${CLAUDE_INGEST_HOME:-$HOME/.local/share/claude-ingest}"
VENV="$HOME_DIR/chdb-venv"
VERSION="${CHDB_CORE_VERSION:-26.9.0}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import chdb, sys; sys.exit(0 if chdb.__version__ == '$VERSION' else 1)" 2>/dev/null; then
  echo "chdb-core $VERSION already installed in $VENV"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required (apt-get install -y python3 python3-venv)" >&2; exit 1; }
mkdir -p "$HOME_DIR"
if ! python3 -m venv "$VENV" 2>/dev/null; then
  echo "python3 -m venv failed; installing python3-venv" >&2
  if command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  else
    exit 1
  fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "chdb-core==$VERSION"
"$VENV/bin/python" -c "import chdb; print('installed chdb-core', chdb.__version__, 'engine', chdb.engine_version)"
