//! {{name}}: a claude-ingest classifier plugin (WIT world `classifier`).
//!
//! The engine calls `classify` for every entry a rule sends to this plugin
//! (`plugins: [{plugin: {{name}}}]` in a rules file). `entry.json` is the
//! whole Claude Code log line as JSON text; the other fields are typed
//! shortcuts. Return labels, variables (`$name` in later rules) and whether to
//! drop the entry; `Err(message)` dead-letters it. No files, network or clock.

wit_bindgen::generate!({ path: "wit", world: "classifier" });

use claude_ingest::plugin::types::{Classification, Entry, Value};
use serde_json::Value as Json;

struct Plugin;

impl Guest for Plugin {
    fn classify(entry: Entry) -> Result<Classification, String> {
        let doc: Json =
            serde_json::from_str(&entry.json).map_err(|e| format!("entry is not JSON: {e}"))?;
        let mut labels = vec![format!("{{name}}:{}", entry.kind)];
        let content = &doc["message"]["content"];
        let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
        if content.is_string() && entry.kind == "user" {
            labels.push("{{name}}:prompt".to_string());
        }
        for block in blocks {
            if block["type"] == "tool_use" {
                labels.push(format!("{{name}}:tool:{}", block["name"].as_str().unwrap_or("")));
            }
        }
        Ok(Classification {
            labels,
            set: vec![("{{name}}_blocks".to_string(), Value::Integer(blocks.len() as i64))],
            drop: false,
        })
    }
}

export!(Plugin);
