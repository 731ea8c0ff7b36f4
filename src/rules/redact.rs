//! Secret redaction: regex patterns from the rule pack (and literal strings
//! from redactor plugins) replaced in every string of an entry, before any
//! row, derived value or dead letter is built from it.

use regex::{Regex, RegexSet};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: String,
    pub regex: Regex,
    pub replace: String,
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<Pattern>,
    /// Fast pre-check: most strings contain no secret at all.
    set: Option<RegexSet>,
}

impl Redactor {
    pub fn new(patterns: Vec<Pattern>) -> Result<Redactor, regex::Error> {
        let set = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))?)
        };
        Ok(Redactor { patterns, set })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Redact one string; returns the new text (if anything matched) and the
    /// names of the patterns that fired, once per replacement.
    pub fn redact_str(&self, s: &str, hits: &mut Vec<String>) -> Option<String> {
        let set = self.set.as_ref()?;
        let matched = set.matches(s);
        if !matched.matched_any() {
            return None;
        }
        let mut text = s.to_string();
        for idx in matched.iter() {
            let p = &self.patterns[idx];
            let n = p.regex.find_iter(&text).count();
            if n == 0 {
                continue; // an earlier pattern already replaced it
            }
            text = p.regex.replace_all(&text, p.replace.as_str()).into_owned();
            hits.extend(std::iter::repeat_n(p.name.clone(), n));
        }
        Some(text)
    }

    /// Redact every string in `doc` in place (object keys are left alone: they
    /// are field names, not data).
    pub fn redact_value(&self, doc: &mut Value, hits: &mut Vec<String>) {
        if self.set.is_none() {
            return;
        }
        match doc {
            Value::String(s) => {
                if let Some(new) = self.redact_str(s, hits) {
                    *s = new;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.redact_value(v, hits)),
            Value::Object(m) => m.values_mut().for_each(|v| self.redact_value(v, hits)),
            _ => {}
        }
    }
}

/// Replace every occurrence of the literal `needles` in all strings of `doc`;
/// returns how many replacements were made.
pub fn mask_literals(doc: &mut Value, needles: &[String], replacement: &str) -> usize {
    let needles: Vec<&String> = needles.iter().filter(|n| !n.is_empty()).collect();
    if needles.is_empty() {
        return 0;
    }
    fn walk(v: &mut Value, needles: &[&String], rep: &str) -> usize {
        match v {
            Value::String(s) => {
                let mut n = 0;
                for needle in needles {
                    let c = s.matches(needle.as_str()).count();
                    if c > 0 {
                        *s = s.replace(needle.as_str(), rep);
                        n += c;
                    }
                }
                n
            }
            Value::Array(a) => a.iter_mut().map(|x| walk(x, needles, rep)).sum(),
            Value::Object(m) => m.values_mut().map(|x| walk(x, needles, rep)).sum(),
            _ => 0,
        }
    }
    walk(doc, &needles, replacement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn red() -> Redactor {
        Redactor::new(vec![
            Pattern {
                name: "aws".into(),
                regex: Regex::new(r"AKIA[0-9A-Z]{16}").unwrap(),
                replace: "[REDACTED:aws]".into(),
            },
            Pattern {
                name: "password".into(),
                regex: Regex::new(r"(?i)(password=)\S+").unwrap(),
                replace: "${1}[REDACTED]".into(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn redacts_nested_strings_and_counts() {
        let mut doc = json!({"a": ["key AKIAABCDEFGHIJKLMNOP and AKIAABCDEFGHIJKLMNOQ"], "b": {"c": "PASSWORD=hunter2 ok"}, "AKIAABCDEFGHIJKLMNOP": 1});
        let mut hits = vec![];
        red().redact_value(&mut doc, &mut hits);
        assert_eq!(doc["a"][0], "key [REDACTED:aws] and [REDACTED:aws]");
        assert_eq!(doc["b"]["c"], "PASSWORD=[REDACTED] ok");
        assert_eq!(hits.len(), 3);
        assert!(doc.get("AKIAABCDEFGHIJKLMNOP").is_some(), "keys untouched");
    }

    #[test]
    fn literal_masking() {
        let mut doc = json!({"t": "mail bob@x.io or bob@x.io", "u": ["bob@x.io"]});
        let n = mask_literals(&mut doc, &["bob@x.io".into(), String::new()], "[M]");
        assert_eq!(n, 3);
        assert_eq!(doc["t"], "mail [M] or [M]");
    }
}
