//! Privacy settings applied by the sink before a row is encoded (so neither
//! the spool nor ClickHouse ever sees what they remove):
//!
//! * **metrics only**: the columns holding message content are emptied; every
//!   count, token figure, cost, flag and hash computed from the content by the
//!   rules is kept (the rules run before the sink, on the full entry).
//! * **anonymisation**: the listed columns (in every table that has them) are
//!   replaced by HMAC-SHA256(key, value), truncated to 16 hex digits. Keyed,
//!   so nobody without the key can test guesses ("is this /home/ann/secret?"),
//!   and deterministic, so keys, joins and dedup still work on the hashes.

use crate::row::Columns;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::path::Path;

/// Env variable holding the anonymisation key (when no `privacy.key_file`).
pub const KEY_ENV: &str = "CLAUDE_INGEST_ANONYMIZE_KEY";

/// Hex digits kept of each HMAC: 64 bits, so a collision among a million
/// distinct values has a probability of about 3e-8.
const HASH_HEX_DIGITS: usize = 16;

/// Shortest accepted key (bytes): a short key could be brute-forced from a
/// known value and its hash.
const MIN_KEY_BYTES: usize = 16;

/// Columns holding message content, per built-in table: what metrics-only
/// mode empties. Counts (content_length, tool_use_count ...), flags and
/// content_hash are derived by the rules and stay.
pub const CONTENT_COLUMNS: &[(&str, &[&str])] = &[
    ("claude_messages", &["content", "content_preview"]),
    (
        "claude_tool_usage",
        &[
            "command",
            "query",
            "parameters",
            "result_preview",
            "error_message",
        ],
    ),
    ("claude_summaries", &["summary"]),
    ("claude_dead_letters", &["raw_line", "raw_base64"]),
    ("claude_thinking", &["thinking"]),
];

const DEAD_LETTERS: &str = "claude_dead_letters";

#[derive(Clone, Default)]
pub struct Privacy {
    pub metrics_only: bool,
    anonymize: Vec<String>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Privacy {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("metrics_only", &self.metrics_only)
            .field("anonymize", &self.anonymize)
            .finish_non_exhaustive()
    }
}

/// Anonymised column names must be plain identifiers.
pub fn validate_columns(columns: &[String]) -> Result<()> {
    for c in columns {
        let ok = !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            && !c.starts_with(|ch: char| ch.is_ascii_digit());
        if !ok {
            bail!("privacy.anonymize: `{c}` is not a column name");
        }
    }
    Ok(())
}

impl Privacy {
    /// From the config; the key is read from `key_file`, else `KEY_ENV`,
    /// and required only when something is to be anonymised.
    pub fn from_config(section: &crate::config::PrivacySection) -> Result<Privacy> {
        validate_columns(&section.anonymize)?;
        let key = if section.anonymize.is_empty() {
            Vec::new()
        } else {
            load_key(section.key_file.as_deref())?
        };
        Ok(Privacy {
            metrics_only: section.metrics_only,
            anonymize: section.anonymize.clone(),
            key,
        })
    }

    pub fn new(metrics_only: bool, anonymize: Vec<String>, key: &[u8]) -> Result<Privacy> {
        validate_columns(&anonymize)?;
        if !anonymize.is_empty() && key.len() < MIN_KEY_BYTES {
            bail!("the anonymisation key must be at least {MIN_KEY_BYTES} bytes");
        }
        Ok(Privacy {
            metrics_only,
            anonymize,
            key: key.to_vec(),
        })
    }

    /// Whether [`Self::apply`] can change anything (the writer skips it otherwise).
    pub fn is_active(&self) -> bool {
        self.metrics_only || !self.anonymize.is_empty()
    }

    /// Apply both settings to one row of `table`.
    pub fn apply(&self, table: &str, columns: &mut Columns) {
        // A dead letter's raw line cannot be anonymised column by column: with
        // anonymisation on it is dropped too (the reason and position stay).
        let drop_content =
            self.metrics_only || (!self.anonymize.is_empty() && table == DEAD_LETTERS);
        if drop_content {
            let content = CONTENT_COLUMNS
                .iter()
                .find(|(t, _)| *t == table)
                .map_or(&[][..], |(_, c)| *c);
            for c in content {
                if let Some(v) = columns.get_mut(c) {
                    *v = empty_like(v);
                }
            }
        }
        let mut originals = Vec::new();
        for c in &self.anonymize {
            if let Some(v) = columns.get_mut(c.as_str()) {
                if let Value::String(s) = v {
                    originals.push(s.clone());
                }
                self.hash_value(v);
            }
        }
        self.hash_derived(columns, &originals);
    }

    /// Values built from an anonymised one would carry it in clear: ids
    /// (`$entry_id` is `<source_file>:<offset>`, the uuid / request id of
    /// entries without one) and paths under an anonymised directory
    /// (`file_path` under `project_path`). Any other string column starting
    /// with an anonymised value followed by `:` or `/` is hashed whole
    /// (deterministic, so keys and joins still work). Free text (content,
    /// a tool call's parameters) is not searched: that is `metrics_only`.
    fn hash_derived(&self, columns: &mut Columns, originals: &[String]) {
        let derived = |s: &str| {
            originals.iter().any(|o| {
                o.len() > 1
                    && s.len() > o.len()
                    && s.starts_with(o.as_str())
                    && matches!(s.as_bytes()[o.len()], b':' | b'/')
            })
        };
        for v in columns.values_mut() {
            if let Value::String(s) = v {
                if derived(s) {
                    *s = self.hash(s);
                }
            }
        }
    }

    /// Strings (and strings inside arrays) become their keyed hash; empty
    /// strings stay empty ("unknown" must not turn into a hash of nothing).
    fn hash_value(&self, v: &mut Value) {
        match v {
            Value::String(s) if !s.is_empty() => *s = self.hash(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.hash_value(i)),
            _ => {}
        }
    }

    /// HMAC-SHA256(key, value), first 16 hex digits.
    pub fn hash(&self, value: &str) -> String {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(value.as_bytes());
        let mut out = hex::encode(mac.finalize().into_bytes());
        out.truncate(HASH_HEX_DIGITS);
        out
    }
}

fn empty_like(v: &Value) -> Value {
    match v {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(_) => Value::Object(Default::default()),
        Value::Null => Value::Null,
        _ => Value::String(String::new()),
    }
}

fn load_key(file: Option<&Path>) -> Result<Vec<u8>> {
    let key = match file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read privacy.key_file {}", p.display()))?,
        None => std::env::var(KEY_ENV).with_context(|| {
            format!("privacy.anonymize needs a key: set privacy.key_file or {KEY_ENV}")
        })?,
    };
    let key = key.trim().as_bytes().to_vec();
    if key.len() < MIN_KEY_BYTES {
        bail!("the anonymisation key must be at least {MIN_KEY_BYTES} bytes");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Columns {
        let mut c = Columns::new();
        for (k, v) in v.as_object().unwrap() {
            c.insert(k.as_str(), v.clone());
        }
        c
    }

    #[test]
    fn metrics_only_empties_content_and_keeps_counts() {
        let p = Privacy::new(true, vec![], b"").unwrap();
        let mut c = row(
            json!({"content": "secret plan", "content_preview": "secret",
                               "content_length": 11, "tool_use_count": 2, "project": "p"}),
        );
        p.apply("claude_messages", &mut c);
        assert_eq!(c["content"], "");
        assert_eq!(c["content_preview"], "");
        assert_eq!(c["content_length"], 11);
        assert_eq!(c["tool_use_count"], 2);
        assert_eq!(c["project"], "p");
        let mut c = row(json!({"content": "kept: not a content column here"}));
        p.apply("some_plugin_table", &mut c);
        assert_eq!(c["content"], "kept: not a content column here");
    }

    #[test]
    fn anonymisation_is_keyed_deterministic_and_keeps_empties() {
        let a = Privacy::new(false, vec!["project".into(), "labels".into()], &[7; 32]).unwrap();
        let b = Privacy::new(false, vec!["project".into()], &[8; 32]).unwrap();
        let mut c1 = row(json!({"project": "/home/ann/app", "labels": ["x", ""], "n": 1}));
        let mut c2 = c1.clone();
        let mut c3 = c1.clone();
        a.apply("t", &mut c1);
        a.apply("t", &mut c2);
        b.apply("t", &mut c3);
        let h = c1["project"].as_str().unwrap();
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(c1, c2, "same key, same hash");
        assert_ne!(c1["project"], c3["project"], "another key, another hash");
        assert_eq!(c1["labels"][1], "");
        assert_ne!(c1["labels"][0], "x");
        assert_eq!(c1["n"], 1);
        let mut ids = row(
            json!({"project": "/p", "request_id": "/p:42", "file_path": "/p/src/a.rs", "other": "/px:1"}),
        );
        a.apply("claude_requests", &mut ids);
        assert_eq!(
            ids["request_id"],
            a.hash("/p:42"),
            "an id built from it goes too"
        );
        assert_eq!(
            ids["file_path"],
            a.hash("/p/src/a.rs"),
            "and a path under it"
        );
        assert_eq!(ids["other"], "/px:1");
        let mut dl = row(json!({"raw_line": "{\"cwd\":\"/home/ann/app\"}", "stage": "parse"}));
        a.apply("claude_dead_letters", &mut dl);
        assert_eq!(
            dl["raw_line"], "",
            "raw lines cannot be anonymised, so they go"
        );
    }

    #[test]
    fn a_key_is_required_and_long_enough() {
        assert!(Privacy::new(false, vec!["project".into()], b"short").is_err());
        assert!(Privacy::new(false, vec!["bad name".into()], &[1; 32]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        let section = crate::config::PrivacySection {
            metrics_only: false,
            anonymize: vec!["cwd".into()],
            key_file: Some(f),
        };
        let p = Privacy::from_config(&section).unwrap();
        assert_eq!(p.key, b"0123456789abcdef0123");
        assert!(
            !format!("{p:?}").contains("0123"),
            "the key is never printed"
        );
    }
}
