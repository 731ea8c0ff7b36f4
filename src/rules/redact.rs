//! Secret redaction: regex patterns from the rule pack (and literal strings
//! from redactor plugins) replaced in every string of an entry, before any
//! row, derived value or dead letter is built from it.
//!
//! A pattern may name the secret part of its match with a capture group whose
//! name starts with `secret` (`(?P<secret>...)`, `(?P<secret_q>...)`): only that
//! span is replaced, the key or flag around it stays readable. Its `keep`
//! regex spares candidates that are not secrets (placeholders, `$VAR`
//! references, function calls, type names, noreply addresses); the regex
//! crate has no look-around, so this is how exceptions are written. A `key`
//! regex also replaces the whole string value of every JSON object key it
//! matches (`{"client_secret": "..."}` in a tool input), whatever its text.

mod memo;

use memo::{Memo, Table};
use regex::{Captures, Regex, RegexSet};
use serde::Deserialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// One `redact:` item of a rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactSpec {
    pub name: String,
    pub pattern: String,
    /// Replacement for the whole match (`${1}` etc.); default: the `secret`
    /// group (or the whole match) becomes `[REDACTED:<name>]`.
    #[serde(default)]
    pub replace: Option<String>,
    /// Candidates (the `secret` group, else the whole match) any of these
    /// regexes matches are left alone (one regex or a list).
    #[serde(default)]
    pub keep: Option<OneOrMany>,
    /// JSON object keys whose string value is replaced whole.
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// One regex matching what any of the regexes matches.
    fn joined(&self) -> String {
        match self {
            OneOrMany::One(s) => s.clone(),
            OneOrMany::Many(v) => {
                let parts: Vec<String> = v.iter().map(|r| format!("(?:{r})")).collect();
                parts.join("|")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: String,
    pub regex: Regex,
    /// `None`: replace the secret group (or the whole match) with `marker`.
    pub replace: Option<String>,
    pub keep: Option<Regex>,
    pub key: Option<Regex>,
    /// Indices of the capture groups named `secret*`, in order.
    secret_groups: Vec<usize>,
    marker: String,
}

impl Pattern {
    pub fn compile(spec: &RedactSpec) -> Result<Pattern, String> {
        let re = |what: &str, src: &str| {
            Regex::new(src).map_err(|e| format!("redact `{}`: bad {what} regex: {e}", spec.name))
        };
        let regex = re("pattern", &spec.pattern)?;
        let secret_groups = regex
            .capture_names()
            .enumerate()
            .filter(|(_, n)| n.is_some_and(|n| n.starts_with("secret")))
            .map(|(i, _)| i)
            .collect();
        Ok(Pattern {
            name: spec.name.clone(),
            keep: spec
                .keep
                .as_ref()
                .map(|k| re("keep", &k.joined()))
                .transpose()?,
            key: spec.key.as_deref().map(|k| re("key", k)).transpose()?,
            regex,
            replace: spec.replace.clone(),
            secret_groups,
            marker: format!("[REDACTED:{}]", spec.name),
        })
    }

    /// A simple pattern (no keep, no key), for tests and built-in uses.
    pub fn new(name: &str, regex: &str) -> Result<Pattern, String> {
        Pattern::compile(&RedactSpec {
            name: name.to_string(),
            pattern: regex.to_string(),
            replace: None,
            keep: None,
            key: None,
        })
    }

    /// Is `candidate` something to leave as it is? Markers from an earlier
    /// pattern are never redacted twice.
    fn spares(&self, candidate: &str) -> bool {
        candidate.is_empty()
            || candidate.starts_with("[REDACTED")
            || self.keep.as_ref().is_some_and(|k| k.is_match(candidate))
    }

    /// The text one match is replaced by, or `None` when it is spared.
    fn replacement(&self, caps: &Captures<'_>) -> Option<String> {
        let whole = caps.get(0)?;
        let secret = self.secret_groups.iter().find_map(|&i| caps.get(i));
        let candidate = secret.unwrap_or(whole);
        if self.spares(candidate.as_str()) {
            return None;
        }
        if let Some(rep) = &self.replace {
            let mut out = String::new();
            caps.expand(rep, &mut out);
            return Some(out);
        }
        let s = whole.as_str();
        let (a, b) = (
            candidate.start() - whole.start(),
            candidate.end() - whole.start(),
        );
        Some(format!("{}{}{}", &s[..a], self.marker, &s[b..]))
    }

    /// Replace every unspared match in `text`; returns the count.
    fn apply(&self, text: &str) -> (String, usize) {
        let mut n = 0;
        let out =
            self.regex
                .replace_all(text, |caps: &Captures<'_>| match self.replacement(caps) {
                    Some(r) => {
                        n += 1;
                        r
                    }
                    None => caps[0].to_string(),
                });
        (out.into_owned(), n)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<Pattern>,
    /// Fast pre-check: most strings contain no secret at all.
    set: Option<RegexSet>,
    /// Every `key` regex at once: most object keys name no secret field, and
    /// one set test per key is cheaper than one regex per pattern.
    keys: Option<RegexSet>,
    /// Names this redactor in the per-thread memory of judged strings.
    id: u64,
}

/// Redactor ids: 0 is the empty default one, which never scans.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Redactor {
    pub fn new(patterns: Vec<Pattern>) -> Result<Redactor, regex::Error> {
        let set = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))?)
        };
        let key_regexes: Vec<&str> = patterns
            .iter()
            .filter_map(|p| p.key.as_ref().map(Regex::as_str))
            .collect();
        let keys = if key_regexes.is_empty() {
            None
        } else {
            Some(RegexSet::new(key_regexes)?)
        };
        Ok(Redactor {
            patterns,
            set,
            keys,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Redact one string; returns the new text (if anything was replaced) and
    /// pushes the names of the patterns that fired, once per replacement.
    pub fn redact_str(&self, s: &str, hits: &mut Vec<String>) -> Option<String> {
        memo::with(self.id, |memo| self.redact_str_in(s, hits, memo))
    }

    fn redact_str_in(&self, s: &str, hits: &mut Vec<String>, memo: &mut Memo) -> Option<String> {
        let set = self.set.as_ref()?;
        if memo.recall(Table::Clean, s).is_some() {
            return None;
        }
        // `is_match` stops at the first hit and needs no overlapping search:
        // the common case (no secret) costs one scan instead of the slower
        // all-patterns one.
        if !set.is_match(s) {
            memo.remember(Table::Clean, s, 0);
            return None;
        }
        let matched = set.matches(s);
        if !matched.matched_any() {
            return None;
        }
        let mut text: Option<String> = None;
        for idx in matched.iter() {
            let p = &self.patterns[idx];
            let (new, n) = p.apply(text.as_deref().unwrap_or(s));
            if n > 0 {
                hits.extend(std::iter::repeat_n(p.name.clone(), n));
                text = Some(new);
            }
        }
        text
    }

    /// The key pattern whose `key` regex names `key` as a secret field, if any.
    /// Object keys repeat from line to line: the answer is remembered.
    fn secret_key(&self, key: &str, memo: &mut Memo) -> Option<&Pattern> {
        let index = match memo.recall(Table::Keys, key) {
            Some(answer) => usize::from(answer).checked_sub(1),
            None => {
                let index = self.key_pattern(key);
                // an index past what a byte holds is simply not remembered
                if let Ok(answer) = u8::try_from(index.map_or(0, |i| i + 1)) {
                    memo.remember(Table::Keys, key, answer);
                }
                index
            }
        };
        index.and_then(|i| self.patterns.get(i))
    }

    /// The index of the first pattern whose `key` regex matches `key`.
    fn key_pattern(&self, key: &str) -> Option<usize> {
        if !self.keys.as_ref().is_some_and(|k| k.is_match(key)) {
            return None;
        }
        self.patterns
            .iter()
            .position(|p| p.key.as_ref().is_some_and(|k| k.is_match(key)))
    }

    /// Redact every string in `doc` in place. Object keys are left alone
    /// (they are field names, not data), but a string under a key that a
    /// pattern's `key` regex matches is replaced whole.
    pub fn redact_value(&self, doc: &mut Value, hits: &mut Vec<String>) {
        if self.set.is_none() {
            return;
        }
        memo::with(self.id, |memo| self.redact_in(doc, hits, memo));
    }

    fn redact_in(&self, doc: &mut Value, hits: &mut Vec<String>, memo: &mut Memo) {
        match doc {
            Value::String(s) => {
                if let Some(new) = self.redact_str_in(s, hits, memo) {
                    *s = new;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.redact_in(v, hits, memo)),
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if let (Value::String(s), Some(p)) = (&*v, self.secret_key(k, memo)) {
                        if !p.spares(s) {
                            hits.push(p.name.clone());
                            *v = Value::String(p.marker.clone());
                            continue;
                        }
                    }
                    self.redact_in(v, hits, memo);
                }
            }
            _ => {}
        }
    }

    /// Which patterns fire on `s`, with the text each replaces, in the order
    /// `redact_str` applies them (for the redaction report: a human judges
    /// every hit).
    pub fn explain(&self, s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(set) = &self.set else { return out };
        let mut text = s.to_string();
        for idx in set.matches(s).iter() {
            let p = &self.patterns[idx];
            for caps in p.regex.captures_iter(&text) {
                if p.replacement(&caps).is_some() {
                    let secret = p.secret_groups.iter().find_map(|&i| caps.get(i));
                    let m = secret.or_else(|| caps.get(0));
                    out.push((p.name.clone(), m.map_or("", |m| m.as_str()).to_string()));
                }
            }
            text = p.apply(&text).0;
        }
        out
    }

    /// The pattern that would replace the string value of object key `key`
    /// (`None` when the key is not a secret field or the value is spared).
    pub fn explain_key(&self, key: &str, value: &str) -> Option<String> {
        memo::with(self.id, |memo| self.secret_key(key, memo))
            .filter(|p| !p.spares(value))
            .map(|p| p.name.clone())
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
mod tests;
