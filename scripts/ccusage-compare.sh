#!/usr/bin/env bash
# Compares `claude-ingest report daily --json` with ccusage 20.0.24
# (`daily --json --offline`) on real Claude Code logs, per day (UTC):
# input, output, cache-creation and cache-read tokens must be equal, total
# cost within 0.5 %. Exits non-zero on a mismatch.
#
# ccusage 20.0.24 silently skips lines that are not compact JSON (for example
# `"type": "assistant"` with a space; Claude Code itself writes compact JSON,
# only hand-made fixtures do not). So the exact comparison runs on a copy of
# the tree re-serialised as compact JSON; the comparison on the raw tree is
# printed too, and its difference must be exactly the usage of the lines
# ccusage skipped.
#
# Usage: scripts/ccusage-compare.sh [LOGS_DIR]   (a dir holding projects/;
#        default ../shared/real-logs relative to the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CCUSAGE_VERSION=20.0.24
LOGS=${1:-${CCUSAGE_COMPARE_LOGS:-$REPO/../shared/real-logs}}
if [ ! -d "$LOGS/projects" ]; then
    echo "ccusage-compare: no $LOGS/projects (real logs expected beside the clone: shared/real-logs)" >&2
    exit 2
fi
LOGS=$(cd "$LOGS" && pwd)

# ccusage, pinned, in a private prefix (no global install).
PREFIX=$REPO/target/ccusage-$CCUSAGE_VERSION
CCUSAGE=$PREFIX/node_modules/.bin/ccusage
if [ ! -x "$CCUSAGE" ]; then
    echo "== installing ccusage $CCUSAGE_VERSION into $PREFIX"
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --loglevel=error \
        "ccusage@$CCUSAGE_VERSION" >/dev/null
fi

BIN=${CLAUDE_INGEST_BIN:-$REPO/target/debug/claude-ingest}
if [ -z "${CLAUDE_INGEST_BIN:-}" ]; then
    cargo build --locked --quiet
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TZ=UTC
# The engine's log (dead letters of the hand-made fixtures, ...) is not the point here.
export RUST_LOG=${RUST_LOG:-error}

# The same tree with every JSON line re-serialised compactly (lines that are
# not JSON are kept as they are).
python3 - "$LOGS/projects" "$WORK/compact/projects" <<'EOF'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
for dirpath, _, files in os.walk(src):
    out_dir = os.path.join(dst, os.path.relpath(dirpath, src))
    os.makedirs(out_dir, exist_ok=True)
    for name in files:
        with open(os.path.join(dirpath, name), "rb") as f:
            data = f.read()
        if name.endswith(".jsonl"):
            lines = []
            for raw in data.split(b"\n"):
                try:
                    lines.append(json.dumps(json.loads(raw), ensure_ascii=False,
                                            separators=(",", ":")).encode())
                except ValueError:
                    lines.append(raw)
            data = b"\n".join(lines)
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
EOF

echo "== ccusage $CCUSAGE_VERSION daily --json --offline (raw tree, then compact copy)"
CLAUDE_CONFIG_DIR=$LOGS "$CCUSAGE" daily --json --offline --timezone UTC >"$WORK/ccusage-raw.json"
CLAUDE_CONFIG_DIR=$WORK/compact "$CCUSAGE" daily --json --offline --timezone UTC >"$WORK/ccusage-compact.json"

echo "== claude-ingest backfill (embedded engine, fresh state) + report daily --json --timezone UTC"
# The embedded engine on a throw-away state dir, whatever the environment says.
env -u CLICKHOUSE_URL -u CLAUDE_INGEST_CONFIG -u CLAUDE_INGEST_DATABASE "$BIN" \
    --root "$LOGS/projects" --state-dir "$WORK/state" --rules "$REPO/rules" \
    --plugins "$REPO/plugins/dist" backfill --quiet
env -u CLICKHOUSE_URL -u CLAUDE_INGEST_CONFIG -u CLAUDE_INGEST_DATABASE "$BIN" \
    --root "$LOGS/projects" --state-dir "$WORK/state" --rules "$REPO/rules" \
    --plugins "$REPO/plugins/dist" report daily --json --timezone UTC >"$WORK/engine.json"

python3 - "$WORK" "$LOGS/projects" <<'EOF'
import json, os, sys
work, projects = sys.argv[1], sys.argv[2]
FIELDS = [("inputTokens", "input"), ("outputTokens", "output"),
          ("cacheCreationTokens", "cache create"), ("cacheReadTokens", "cache read")]
COST_TOLERANCE = 0.005

def days(path):
    with open(path) as f:
        doc = json.load(f)
    return {d["period"]: d for d in doc["daily"]}, doc

def usage_of(u):
    return {"inputTokens": int(u.get("input_tokens") or 0),
            "outputTokens": int(u.get("output_tokens") or 0),
            "cacheCreationTokens": int(u.get("cache_creation_input_tokens") or 0),
            "cacheReadTokens": int(u.get("cache_read_input_tokens") or 0)}

def skipped_by_ccusage():
    """Usage per UTC day of the assistant lines that are valid JSON but not
    compact (ccusage 20.0.24 skips them): one figure per request, its final
    (largest output) snapshot, like the engine."""
    requests, lines = {}, 0
    for dirpath, _, files in os.walk(projects):
        for name in sorted(files):
            if not name.endswith(".jsonl"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                for offset, raw in enumerate(f):
                    try:
                        e = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(e, dict) or e.get("type") != "assistant" or b'"type":"assistant"' in raw:
                        continue
                    msg = e.get("message") or {}
                    if not isinstance(msg.get("usage"), dict):
                        continue
                    lines += 1
                    key = (msg.get("id"), e.get("requestId")) if msg.get("id") else (path, offset)
                    u = usage_of(msg["usage"])
                    prev = requests.get(key)
                    if prev is None or u["outputTokens"] > prev[1]["outputTokens"]:
                        requests[key] = ((e.get("timestamp") or "")[:10], u, msg.get("model", ""))
    per_day, models = {}, set()
    for day, u, model in requests.values():
        d = per_day.setdefault(day, {k: 0 for k, _ in FIELDS})
        for k, _ in FIELDS:
            d[k] += u[k]
        models.add(model)
    return per_day, lines, len(requests), sorted(models)

def compare(title, engine, ccusage, expected_extra):
    """Prints one line per day; returns the number of token mismatches."""
    print(f"\n{title}")
    print(f"{'day':<12}" + "".join(f"{label:>24}" for _, label in FIELDS)
          + f"{'cost engine':>14}{'cost ccusage':>14}{'Δ cost':>9}")
    bad = 0
    for day in sorted(set(engine) | set(ccusage)):
        e, c = engine.get(day, {}), ccusage.get(day, {})
        extra = expected_extra.get(day, {})
        row = f"{day:<12}"
        for k, _ in FIELDS:
            ev, cv = e.get(k, 0), c.get(k, 0) + extra.get(k, 0)
            if ev == cv:
                cell = f"{ev:,} =" if not extra.get(k) else f"{ev:,} = {c.get(k, 0):,}+{extra[k]:,}"
            else:
                cell = f"{ev:,}≠{c.get(k, 0):,}"
                bad += 1
            row += f"{cell:>24}"
        ec, cc = e.get("totalCost", 0.0), c.get("totalCost", 0.0)
        delta = (ec - cc) / cc * 100 if cc else 0.0
        row += f"{'$%.4f' % ec:>14}{'$%.4f' % cc:>14}{'%+.2f%%' % delta:>9}"
        print(row)
    return bad

engine, engine_doc = days(f"{work}/engine.json")
compact, compact_doc = days(f"{work}/ccusage-compact.json")
raw, raw_doc = days(f"{work}/ccusage-raw.json")
failures = []

bad = compare("engine vs ccusage on the compact copy (must be equal)", engine, compact, {})
e_cost, c_cost = engine_doc["totals"]["totalCost"], compact_doc["totals"]["totalCost"]
cost_delta = abs(e_cost - c_cost) / c_cost if c_cost else 0.0
print(f"total cost: engine ${e_cost:.4f}, ccusage ${c_cost:.4f} ({cost_delta * 100:.3f} %, tolerance 0.5 %)")
if engine_doc.get("unpricedModels"):
    print(f"models the engine has no price for: {', '.join(engine_doc['unpricedModels'])}")
if bad:
    failures.append(f"{bad} per-day token figures differ from ccusage on the compact copy")
if cost_delta > COST_TOLERANCE:
    failures.append(f"total cost differs by {cost_delta * 100:.3f} % (> 0.5 %)")

skipped, n_lines, n_requests, models = skipped_by_ccusage()
bad_raw = compare("engine vs ccusage on the raw tree (engine = ccusage + lines ccusage skipped)",
                  engine, raw, skipped)
print(f"ccusage skipped {n_lines} non-compact assistant lines with usage ({n_requests} requests, "
      f"models: {', '.join(models) or '-'}); the engine counts them")
if bad_raw:
    failures.append(f"{bad_raw} per-day token figures on the raw tree are not explained by the skipped lines")

if failures:
    print("\nFAIL: " + "; ".join(failures))
    sys.exit(1)
print("\nOK: per-day tokens equal, total cost within 0.5 %")
EOF
