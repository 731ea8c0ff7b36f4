//! What the rules do to one entry, made visible (`claude-ingest try`): the
//! derived variables, the redactions (where and by which pattern or plugin,
//! never the masked text) and the routing result, from the same evaluator
//! the router runs.

use super::expr::slot;
use super::{ApplyError, EntryInput, Routed, RuleSet};
use crate::plugins::api::PluginCaller;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The entry's final document and variables, left by `apply_observed`.
#[derive(Default)]
pub struct Seen {
    pub(super) doc: Value,
    pub(super) vars: Vec<Value>,
}

/// One string of the entry that redaction changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Masked {
    /// Where in the entry: `message.content[0].input.command`.
    pub path: String,
    /// Redact pattern or plugin name → how many spans it masked there.
    pub by: BTreeMap<String, usize>,
}

/// The rules' full effect on one entry.
#[derive(Debug)]
pub struct Trace {
    pub routed: Result<Routed, ApplyError>,
    /// Variables the rules derived (built-in context variables left out), in
    /// slot order, null ones left out.
    pub derived: Vec<(String, Value)>,
    pub masked: Vec<Masked>,
}

impl RuleSet {
    /// Run the pack on one entry like [`RuleSet::apply`] and report what it did.
    pub fn trace(&self, input: EntryInput<'_>, plugins: &dyn PluginCaller) -> Trace {
        let original = input.doc.clone();
        let mut seen = Seen::default();
        let routed = self.apply_observed(input, plugins, Some(&mut seen));
        let names = &self.program.slots;
        let derived = seen
            .vars
            .into_iter()
            .enumerate()
            .skip(slot::BUILTINS.len())
            .filter(|(_, v)| !v.is_null())
            .filter_map(|(i, v)| Some((names.name(i)?.to_string(), v)))
            .collect();
        // A plugin error stops `apply` before the document is kept: nothing to compare.
        let mut masked = Vec::new();
        if routed.is_ok() {
            self.diff(&original, &seen.doc, None, &mut String::new(), &mut masked);
        }
        Trace {
            routed,
            derived,
            masked,
        }
    }

    /// Walk the entry before and after the rules; every string that changed is
    /// a redaction, attributed to the patterns that fire on the original text
    /// (or its key) and to the plugins whose markers appear in the new text.
    fn diff(
        &self,
        before: &Value,
        after: &Value,
        key: Option<&str>,
        path: &mut String,
        out: &mut Vec<Masked>,
    ) {
        match (before, after) {
            (Value::String(a), Value::String(b)) if a != b => {
                let mut by: BTreeMap<String, usize> = BTreeMap::new();
                match key.and_then(|k| self.redactor.explain_key(k, a)) {
                    Some(rule) => *by.entry(rule).or_default() += 1,
                    None => {
                        for (rule, _text) in self.redactor.explain(a) {
                            *by.entry(rule).or_default() += 1;
                        }
                    }
                }
                for name in markers(b) {
                    if !by.contains_key(name) {
                        *by.entry(name.to_string()).or_default() += 1;
                    }
                }
                out.push(Masked {
                    path: path.clone(),
                    by,
                });
            }
            (Value::Array(a), Value::Array(b)) => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.diff(x, y, None, path, out);
                    path.truncate(len);
                }
            }
            (Value::Object(a), Value::Object(b)) => {
                for (k, x) in a {
                    let Some(y) = b.get(k) else { continue };
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    self.diff(x, y, Some(k), path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

/// Names in the `[REDACTED:<name>]` markers of `text`, once per marker.
fn markers(text: &str) -> impl Iterator<Item = &str> {
    text.split("[REDACTED:")
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(name, _)| name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::api::NoPlugins;
    use std::path::PathBuf;

    const RULES: &str = r#"
redact:
  - name: token
    pattern: "tok_(?P<secret>[a-z0-9]{8,})"
  - name: password_field
    pattern: "zzzzzzzzzzzzzzzz"
    key: "^password$"
derive:
  - name: kind
    value: "type"
classify:
  - label: from_user
    when: "type == 'user'"
tables:
  - table: t
    columns:
      text: "message.content"
"#;

    #[test]
    fn trace_names_what_was_masked_and_by_which_rule_without_the_secret() {
        let rs = RuleSet::from_sources(&[(PathBuf::from("r.yaml"), RULES.to_string())])
            .expect("rules load");
        let doc = serde_json::json!({
            "type": "user",
            "message": {"content": "use tok_abcdef123456 and tok_zyxwvu987654"},
            "auth": {"password": "hunter2"},
        });
        let t = rs.trace(
            EntryInput {
                doc,
                project: "p",
                source_file: "/x/s.jsonl",
                ..EntryInput::default()
            },
            &NoPlugins,
        );
        let routed = t.routed.expect("routes");
        // redaction labels in the order the walk met them (object keys in
        // sorted order: `auth` before `message`), then the rule's
        assert_eq!(
            routed.labels,
            ["secret:password_field", "secret:token", "from_user"]
        );
        assert_eq!(t.derived, vec![("kind".to_string(), Value::from("user"))]);
        let by = |p: &str| t.masked.iter().find(|m| m.path == p).map(|m| m.by.clone());
        assert_eq!(
            by("message.content"),
            Some([("token".to_string(), 2)].into())
        );
        assert_eq!(
            by("auth.password"),
            Some([("password_field".to_string(), 1)].into())
        );
        let shown = format!("{:?}", t.masked);
        assert!(
            !shown.contains("abcdef123456") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(
            routed.rows[0].columns["text"],
            "use tok_[REDACTED:token] and tok_[REDACTED:token]"
        );
    }

    #[test]
    fn plugin_markers_count_for_the_plugin() {
        let names: Vec<&str> =
            markers("a [REDACTED:mask] b [REDACTED:mask] [REDACTED:x]").collect();
        assert_eq!(names, ["mask", "mask", "x"]);
    }
}
