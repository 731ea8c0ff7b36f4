"""{{name}}: a claude-ingest classifier plugin (WIT world `classifier`).

The engine calls `classify` for every entry a rule sends to this plugin
(`plugins: [{plugin: {{name}}}]` in a rules file). `entry.json` is the whole
Claude Code log line as JSON text; the other fields are typed shortcuts.
Return labels, variables (`$name` in later rules) and whether to drop the
entry; raise `Err("message")` to dead-letter it. No files, network or clock:
`log(...)` writes a debug line to the engine's log.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Classification, Entry, Value_Integer


class WitWorld(wit_world.WitWorld):
    def classify(self, entry: Entry) -> Classification:
        try:
            doc = json.loads(entry.json)
        except ValueError as e:
            raise Err(f"entry is not JSON: {e}")
        labels = ["{{name}}:" + entry.kind]
        content = (doc.get("message") or {}).get("content")
        blocks = content if isinstance(content, list) else []
        if isinstance(content, str) and entry.kind == "user":
            labels.append("{{name}}:prompt")
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                labels.append("{{name}}:tool:" + str(block.get("name")))
        return Classification(
            labels=labels,
            set=[("{{name}}_blocks", Value_Integer(len(blocks)))],
            drop=False,
        )
