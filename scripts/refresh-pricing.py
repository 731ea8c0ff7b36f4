#!/usr/bin/env python3
"""Regenerates rules/05-pricing.yaml from LiteLLM's model price table.

LiteLLM ships its price table inside the `litellm` wheel on PyPI
(litellm/model_prices_and_context_window_backup.json). This script downloads
the pinned wheels with pip, reads the table out of each wheel and writes every
Claude model it can name canonically (the name the Anthropic API reports in
`message.model`) to a rules file. The engine reads that file like any other
rule file and never needs the network.

Why two versions: newer LiteLLM releases drop deprecated direct-Anthropic
entries (claude-sonnet-4-20250514, claude-3-opus-20240229, ...) that old Claude
Code logs still name. The tables of all pinned versions are merged, newest
first; within one version a direct Anthropic entry comes first, then the
same model as sold by Bedrock (global / unprefixed), Vertex AI, Azure AI and
Anthropic-on-Bedrock under its provider-prefixed key (those are list prices;
regional endpoints with surcharges are skipped). Each price field is taken
from the first source that has it, so a newer table wins field by field.

Usage:
  python3 scripts/refresh-pricing.py                   # pinned versions below
  python3 scripts/refresh-pricing.py --versions 1.80.0,1.111.0
  python3 scripts/refresh-pricing.py --json old.json,new.json   # offline, oldest first
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

# Oldest first; the last one is the newest and wins. Bump the last entry to
# pick up new models and prices; keep the first for deprecated models.
PINNED = ["1.80.0", "1.110.2"]

TABLE_IN_WHEEL = "litellm/model_prices_and_context_window_backup.json"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "rules", "05-pricing.yaml")

# Providers that sell Anthropic models at Anthropic's list price under a
# provider-prefixed key. Aggregators (OpenRouter, Vercel, Databricks, ...)
# and regional Bedrock endpoints add margins and are not used.
LIST_PRICE_PROVIDERS = {
    "anthropic": 0,
    "bedrock_converse": 1,
    "bedrock": 1,
    "vertex_ai-anthropic_models": 2,
    "azure_ai": 3,
}
# Key prefixes (before the last `/`) that carry list prices.
LIST_PRICE_PATHS = {"", "vertex_ai", "azure_ai", "bedrock", "bedrock/invoke", "bedrock/claude_platform"}

# LiteLLM field -> our field (USD per token -> USD per million tokens).
FIELDS = [
    ("input_cost_per_token", "input"),
    ("output_cost_per_token", "output"),
    ("cache_creation_input_token_cost", "cache_write"),
    ("cache_creation_input_token_cost_above_1hr", "cache_write_1h"),
    ("cache_read_input_token_cost", "cache_read"),
]
TIER_RE = re.compile(r"^(?P<field>.+)_above_(?P<k>\d+)k_tokens$")

SYNTHETIC = "<synthetic>"
# A dated API name, e.g. claude-3-opus-20240229 (not Vertex's claude-3-5-sonnet-v2@...).
DATED = re.compile(r"claude-(?!.*-v\d+-)[a-z0-9-]+-\d{8}")


def canonical(key):
    """The Anthropic API name of a LiteLLM key, or None.

    `anthropic.claude-3-opus-20240229-v1:0`, `vertex_ai/claude-3-sonnet@20240229`,
    `global.anthropic.claude-sonnet-4-6` -> `claude-3-opus-20240229`, ...
    Mirrors `normalise` in src/rules/expr.rs (which applies it to logged names)."""
    path, _, name = key.lower().rpartition("/")
    if path not in LIST_PRICE_PATHS:
        return None
    regional = re.match(r"^([a-z-]+)\.anthropic\.", name)
    if regional and regional.group(1) != "global":
        return None
    name = re.sub(r"^(global\.)?anthropic\.", "", name)
    name = re.sub(r"-v\d+(:\d+)?$", "", name)
    name = re.sub(r"@(\d{8})$", r"-\1", name)
    name = re.sub(r"@(default|latest)$", "", name)
    if not re.fullmatch(r"claude-[a-z0-9.-]+", name):
        return None
    return name


def per_million(x):
    """USD per token -> USD per million tokens, without float noise."""
    return float(f"{x * 1_000_000:.10g}")


def price_of(entry):
    """Our fields for one LiteLLM entry (only the fields it has)."""
    out = {}
    for src, dst in FIELDS:
        v = entry.get(src)
        if isinstance(v, (int, float)):
            out[dst] = per_million(v)
    tiers = {}
    for k, v in entry.items():
        m = TIER_RE.match(k)
        if not m or not isinstance(v, (int, float)):
            continue
        dst = dict(FIELDS).get(m.group("field"))
        if dst:
            tiers.setdefault(int(m.group("k")) * 1000, {})[dst] = per_million(v)
    if len(tiers) == 1:
        (above, rates), = tiers.items()
        out["tier"] = dict(rates, above_tokens=above)
    elif tiers:
        print(f"warning: several tiers {sorted(tiers)}; tier ignored", file=sys.stderr)
    if isinstance(entry.get("max_input_tokens"), int):
        out["context_window"] = entry["max_input_tokens"]
    return out


def sources(table):
    """canonical name -> [(rank, key, fields)] for one LiteLLM table, best first."""
    found = {}
    for key, entry in table.items():
        if not isinstance(entry, dict) or entry.get("mode", "chat") != "chat":
            continue
        rank = LIST_PRICE_PROVIDERS.get(entry.get("litellm_provider"))
        name = canonical(key)
        if rank is None or name is None:
            continue
        if rank == 0 and key != name:
            continue  # a direct entry is already canonical
        if rank > 0 and not DATED.fullmatch(name):
            # Undated provider keys (vertex_ai/claude-sonnet-4) often lack cache
            # prices; the engine maps an undated name to its dated entry instead.
            continue
        fields = price_of(entry)
        if "input" in fields and "output" in fields:
            found.setdefault(name, []).append((rank, key, fields))
    for cands in found.values():
        cands.sort(key=lambda c: (c[0], c[1]))
    return found


def merge(tables):
    """Merge tables (oldest first) field by field, newest first; report list-price conflicts."""
    merged, origin = {}, {}
    for version, table in reversed(tables):
        for name, cands in sorted(sources(table).items()):
            best = cands[0][2]
            for _, key, fields in cands[1:]:
                if (fields["input"], fields["output"]) != (best["input"], best["output"]):
                    print(f"note: {version} {key} lists {fields['input']}/{fields['output']},"
                          f" {cands[0][1]} {best['input']}/{best['output']}; first kept", file=sys.stderr)
            dst = merged.setdefault(name, {})
            for _, key, fields in cands:
                if (fields["input"], fields["output"]) != (best["input"], best["output"]):
                    continue
                for f, v in fields.items():
                    if f == "tier" and "tier" in dst:
                        for tf, tv in v.items():
                            dst["tier"].setdefault(tf, tv)
                    else:
                        dst.setdefault(f, v)
                origin.setdefault(name, f"{key} ({version})")
    return merged, origin


def check_1h(merged):
    """Drop 1-hour cache-write rates that contradict Anthropic's rule (2x input).

    Some old LiteLLM rows carry a copy-pasted $6/M for every model (claude-3-opus
    would then write a 1h cache for less than a 5-minute one)."""
    dropped = []
    for name, p in sorted(merged.items()):
        for scope in (p, p.get("tier", {})):
            h, i = scope.get("cache_write_1h"), scope.get("input", p["input"])
            if h is not None and abs(h - 2 * i) > 1e-9 * max(1.0, h):
                dropped.append(f"{name} ({h} vs input {i})")
                del scope["cache_write_1h"]
    return dropped


def fmt(v):
    return repr(v) if isinstance(v, float) else str(v)


def line(name, p):
    order = ["input", "output", "cache_write", "cache_write_1h", "cache_read", "context_window"]
    parts = [f"model: {json.dumps(name)}"] + [f"{k}: {fmt(p[k])}" for k in order if k in p]
    if "tier" in p:
        t = p["tier"]
        tparts = [f"above_tokens: {t['above_tokens']}"] + [
            f"{k}: {fmt(t[k])}" for k in order if k in t and k != "context_window"]
        parts.append("tier: { " + ", ".join(tparts) + " }")
    return "  - { " + ", ".join(parts) + " }"


def render(merged, origin, versions, digests, dropped):
    out = [
        "# GENERATED by scripts/refresh-pricing.py - DO NOT EDIT BY HAND.",
        "# Refresh: python3 scripts/refresh-pricing.py  (then review the diff and commit it).",
        "#",
        f"# Source: LiteLLM's model price table ({TABLE_IN_WHEEL}",
        "# inside the `litellm` wheel on PyPI), versions " + ", ".join(versions) + " merged",
        "# newest first, field by field. sha256 of each table:",
    ]
    out += [f"#   litellm {v}: {d}" for v, d in zip(versions, digests)]
    out += [
        "# Canonical names: direct Anthropic keys as they are; models LiteLLM now keeps only",
        "# under provider keys (anthropic.claude-3-opus-20240229-v1:0, vertex_ai/claude-3-sonnet@20240229,",
        "# global.anthropic.*) are named without the provider prefix / version suffix, from",
        "# list-price providers only (Bedrock global/unprefixed, Vertex AI, Azure AI).",
        "#",
        "# USD per million tokens. cache_write is the 5-minute cache write, cache_write_1h the",
        "# 1-hour one; `tier` holds LiteLLM's long-context rates, which apply to every token of",
        "# a request whose prompt (input + cache write + cache read) exceeds above_tokens.",
        "# context_window is LiteLLM's max_input_tokens. See docs/RULES.md (Pricing).",
    ]
    if dropped:
        out.append("# 1-hour cache-write rates dropped as inconsistent with Anthropic's rule (2x the")
        out.append("# input rate); the engine bills those writes at the 5-minute rate instead:")
        out += [f"#   {d}" for d in dropped]
    out += ["", "pricing:"]
    out.append("  # Claude Code's placeholder model for locally generated messages (always 0 tokens); not in LiteLLM.")
    out.append(line(SYNTHETIC, {"input": 0.0, "output": 0.0, "cache_write": 0.0, "cache_write_1h": 0.0,
                                "cache_read": 0.0}))
    for name in sorted(merged):
        out.append(f"  # from {origin[name]}")
        out.append(line(name, merged[name]))
    return "\n".join(out) + "\n"


def download(version, tmp):
    """The price table (bytes) of one litellm release, read from its wheel."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "-q", f"litellm=={version}", "-d", tmp], check=True)
    wheels = [f for f in os.listdir(tmp) if f.startswith(f"litellm-{version}-") and f.endswith(".whl")]
    if not wheels:
        sys.exit(f"no wheel for litellm {version} in {tmp}")
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
        return z.read(TABLE_IN_WHEEL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", default=",".join(PINNED), help="litellm versions, oldest first")
    ap.add_argument("--json", help="comma-separated table files instead of downloading (oldest first)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args()
    versions = a.versions.split(",")
    if a.json:
        raws = [open(p, "rb").read() for p in a.json.split(",")]
        versions = [os.path.basename(p) for p in a.json.split(",")]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            raws = [download(v, tmp) for v in versions]
    tables = [(v, json.loads(r)) for v, r in zip(versions, raws)]
    digests = [hashlib.sha256(r).hexdigest() for r in raws]
    merged, origin = merge(tables)
    dropped = check_1h(merged)
    text = render(merged, origin, versions, digests, dropped)
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {len(merged) + 1} models to {os.path.normpath(a.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
