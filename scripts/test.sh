#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine (embedded
# ClickHouse engine, wasm toolchain for the example plugins, Chromium +
# playwright-core for the dashboard test), then runs lints, the whole Rust test
# suite (unit, property and integration tests against the real engine) and
# the headless-browser dashboard test. The plugin SDK test (tests/sdk_e2e.rs)
# builds Python and JavaScript plugins with their scaffolded build.sh, which
# installs pinned componentize-py (pip) and componentize-js (npm) once under
# $CLAUDE_INGEST_HOME/sdk (keep that dir between CI runs to skip the installs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
bash plugins/build.sh
# The engine's own `setup` installs the embedded ClickHouse (idempotent).
cargo build --locked --bin claude-ingest
./target/debug/claude-ingest setup
echo "== cargo fmt --check"; cargo fmt --all -- --check
echo "== cargo clippy";      cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test";        cargo test --locked --lib --bins --tests -- --test-threads=2
echo "== dashboard in headless chromium"; bash tests/browser/run.sh
echo "== report daily vs ccusage 20.0.24 on ../shared/real-logs"; bash scripts/ccusage-compare.sh
echo "== all tests passed"
