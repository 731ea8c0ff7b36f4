//! The functions of the expression language, grouped by what they work on.
//! Arity and literal arguments were checked when the expression compiled.

use super::eval::{as_text, eval, loose_eq, num, num_value_f, truthy, NULL};
use super::{Ctx, FieldTest, Func, Node};
use crate::rules::pricing::Usage;
use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

type Out<'a> = Cow<'a, Value>;

/// The arguments of one call, evaluated on demand (`if` and `coalesce`
/// evaluate only what they need).
struct Args<'a, 'c> {
    nodes: &'a [Node],
    ctx: &'c Ctx<'a>,
}

impl<'a> Args<'a, '_> {
    fn get(&self, i: usize) -> Out<'a> {
        match self.nodes.get(i) {
            Some(n) => eval(n, self.ctx),
            None => Cow::Borrowed(&NULL),
        }
    }
    fn text(&self, i: usize, f: impl FnOnce(&str) -> String) -> Out<'a> {
        let v = self.get(i);
        string(f(&as_text(&v)))
    }
    fn num(&self, i: usize) -> Option<f64> {
        num(&self.get(i))
    }
}

fn string<'a>(s: String) -> Out<'a> {
    Cow::Owned(Value::String(s))
}

fn boolean<'a>(b: bool) -> Out<'a> {
    Cow::Owned(Value::Bool(b))
}

pub(super) fn call<'a>(f: &'a Func, nodes: &'a [Node], ctx: &Ctx<'a>) -> Out<'a> {
    let args = Args { nodes, ctx };
    match f {
        Func::Coalesce | Func::If | Func::Exists | Func::Bool | Func::HasLabel => logic(f, &args),
        Func::Text | Func::AllText | Func::Preview | Func::Sha256 | Func::Json | Func::Str => {
            text(f, &args)
        }
        Func::Lower | Func::Upper | Func::Trim | Func::Concat | Func::Len | Func::Size => {
            strings(f, &args)
        }
        Func::Basename | Func::Dirname | Func::Extension | Func::FirstWord => paths(f, &args),
        Func::Matches(_)
        | Func::Glob(_)
        | Func::InGlobs(_)
        | Func::Lookup(_)
        | Func::AnyField(_) => matching(f, &args),
        Func::Contains | Func::StartsWith | Func::EndsWith | Func::CountType | Func::Union => {
            collections(f, &args)
        }
        Func::Int | Func::Float | Func::Round | Func::IsoTime => numbers(f, &args),
        Func::Cost | Func::Priced | Func::ContextWindow => pricing(f, &args),
    }
}

fn logic<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    match f {
        Func::Coalesce => (0..args.nodes.len())
            .map(|i| args.get(i))
            .find(|v| !v.is_null())
            .unwrap_or(Cow::Borrowed(&NULL)),
        Func::If => {
            if truthy(&args.get(0)) {
                args.get(1)
            } else {
                args.get(2)
            }
        }
        Func::Exists => boolean(!args.get(0).is_null()),
        Func::Bool => boolean(truthy(&args.get(0))),
        _ => {
            let v = args.get(0);
            let l = as_text(&v);
            boolean(args.ctx.labels.iter().any(|x| *x == l))
        }
    }
}

fn text<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    match f {
        Func::Text => content_text(args.get(0)),
        Func::AllText => {
            let mut out = String::new();
            all_strings(&args.get(0), &mut out);
            string(out)
        }
        Func::Preview => {
            let n = args.num(1).unwrap_or(0.0).max(0.0) as usize;
            // The first n characters as one slice (not collected char by char).
            args.text(0, |t| match t.char_indices().nth(n) {
                Some((end, _)) => t[..end].to_string(),
                None => t.to_string(),
            })
        }
        Func::Sha256 => args.text(0, |t| {
            // Into a fixed buffer: `hex::encode` builds its String char by char.
            let mut hex = [0u8; 64];
            match hex::encode_to_slice(Sha256::digest(t.as_bytes()), &mut hex) {
                Ok(()) => String::from_utf8_lossy(&hex).into_owned(),
                Err(_) => String::new(),
            }
        }),
        Func::Json => {
            let v = args.get(0);
            // `to_string` (not `Display`): the same compact text, without the
            // formatter adapter in between.
            string(if v.is_null() {
                String::new()
            } else {
                serde_json::to_string(v.as_ref()).unwrap_or_default()
            })
        }
        _ => args.text(0, str::to_string),
    }
}

fn strings<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    match f {
        Func::Lower => args.text(0, str::to_lowercase),
        Func::Upper => args.text(0, str::to_uppercase),
        Func::Trim => args.text(0, |t| t.trim().to_string()),
        Func::Concat => {
            let mut out = String::new();
            for i in 0..args.nodes.len() {
                out.push_str(&as_text(&args.get(i)));
            }
            string(out)
        }
        Func::Len => Cow::Owned(Value::from(match args.get(0).as_ref() {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            Value::Null => 0,
            other => other.to_string().len(),
        })),
        _ => Cow::Owned(Value::from(match args.get(0).as_ref() {
            Value::String(s) => s.len(),
            Value::Null => 0,
            other => other.to_string().len(),
        })),
    }
}

fn paths<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    match f {
        Func::Basename => args.text(0, |t| t.rsplit('/').next().unwrap_or("").to_string()),
        Func::Dirname => args.text(0, |t| match t.rfind('/') {
            Some(0) => "/".to_string(),
            Some(i) => t[..i].to_string(),
            None => String::new(),
        }),
        Func::Extension => args.text(0, |t| {
            let base = t.rsplit('/').next().unwrap_or("");
            match base.rfind('.') {
                Some(i) if i > 0 && i + 1 < base.len() => base[i + 1..].to_lowercase(),
                _ => String::new(),
            }
        }),
        _ => args.text(0, |t| {
            // Skip leading `VAR=value` assignments and `sudo`, so `FOO=1 sudo rm -rf` → `rm`.
            let word = t
                .split_whitespace()
                .find(|w| (w.starts_with('-') || !w.contains('=')) && *w != "sudo")
                .unwrap_or("");
            word.rsplit('/').next().unwrap_or("").to_string()
        }),
    }
}

fn matching<'a>(f: &'a Func, args: &Args<'a, '_>) -> Out<'a> {
    let v = args.get(if matches!(f, Func::Lookup(_)) { 1 } else { 0 });
    match f {
        Func::Matches(re) => boolean(!v.is_null() && re.is_match(&as_text(&v))),
        Func::Glob(m) => boolean(v.as_str().is_some_and(|p| m.is_match(p))),
        Func::InGlobs(set) => boolean(v.as_str().is_some_and(|p| set.is_match(p))),
        Func::Lookup(map) => match map.get(as_text(&v).as_ref()) {
            Some(found) => Cow::Borrowed(found),
            None => args.get(2),
        },
        Func::AnyField(test) => boolean(any_field(&v, test)),
        _ => Cow::Borrowed(&NULL),
    }
}

/// Some object at any depth of `v` has one of the keys with a scalar value
/// the regex matches (a string as it is, other scalars as JSON text: `true`).
/// It reads the structure in place: the default rules used to serialise every
/// entry's content to JSON and run regexes over that text (3.5 % of the
/// instructions of applying the rules, and inexact: a key written inside a
/// string matched too).
fn any_field(v: &Value, test: &FieldTest) -> bool {
    match v {
        Value::Object(fields) => fields.iter().any(|(k, x)| {
            (test.keys.iter().any(|key| key == k) && scalar_matches(x, &test.re))
                || any_field(x, test)
        }),
        Value::Array(items) => items.iter().any(|x| any_field(x, test)),
        _ => false,
    }
}

fn scalar_matches(v: &Value, re: &Regex) -> bool {
    match v {
        Value::String(s) => re.is_match(s),
        Value::Object(_) | Value::Array(_) => false,
        other => re.is_match(&other.to_string()),
    }
}

fn collections<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    if let Func::Union = f {
        return union(args);
    }
    let (a, b) = (args.get(0), args.get(1));
    match f {
        Func::Contains => boolean(match a.as_ref() {
            Value::String(h) => h.contains(as_text(&b).as_ref()),
            Value::Array(items) => items.iter().any(|x| loose_eq(x, &b)),
            _ => false,
        }),
        Func::StartsWith => boolean(a.as_str().is_some_and(|x| x.starts_with(&*as_text(&b)))),
        Func::EndsWith => boolean(a.as_str().is_some_and(|x| x.ends_with(&*as_text(&b)))),
        _ => Cow::Owned(Value::from(match a.as_ref() {
            Value::Array(items) => items
                .iter()
                .filter(|it| it.get("type").is_some_and(|t| loose_eq(t, &b)))
                .count(),
            _ => 0,
        })),
    }
}

/// Arrays merged in order without duplicates; scalars count as one element.
fn union<'a>(args: &Args<'a, '_>) -> Out<'a> {
    let mut out: Vec<Value> = Vec::new();
    let mut add = |v: Value| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    for i in 0..args.nodes.len() {
        match args.get(i).into_owned() {
            Value::Array(a) => a.into_iter().for_each(&mut add),
            Value::Null => {}
            v => add(v),
        }
    }
    Cow::Owned(Value::Array(out))
}

fn numbers<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    match f {
        Func::Int => Cow::Owned(match args.num(0) {
            Some(f) if f >= 0.0 => Value::from(f as u64),
            Some(f) => Value::from(f as i64),
            None => Value::from(0),
        }),
        Func::Float => Cow::Owned(num_value_f(args.num(0).unwrap_or(0.0))),
        Func::Round => {
            let x = args.num(0).unwrap_or(0.0);
            let d = args.num(1).unwrap_or(0.0).clamp(0.0, 12.0) as i32;
            let m = 10f64.powi(d);
            Cow::Owned(num_value_f((x * m).round() / m))
        }
        _ => iso_time(&args.get(0)),
    }
}

/// Normalise a timestamp (RFC 3339 string or epoch milliseconds) to RFC 3339
/// UTC with milliseconds; anything else becomes null.
fn iso_time<'a>(v: &Value) -> Out<'a> {
    if let Value::String(t) = v {
        if is_canonical_time(t) {
            return string(t.clone());
        }
    }
    let parsed = match v {
        Value::String(t) => chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| d.with_timezone(&chrono::Utc)),
        Value::Number(n) => n
            .as_i64()
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis),
        _ => None,
    };
    match parsed {
        Some(d) => string(d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        None => Cow::Borrowed(&NULL),
    }
}

/// Already `YYYY-MM-DDTHH:MM:SS.mmmZ` with in-range fields (what Claude Code
/// writes): normalising would give the same text back, so skip chrono's
/// parse and format (the single largest cost among the derived variables).
/// Anything else, including a leap second, takes the general path.
fn is_canonical_time(t: &str) -> bool {
    let b = t.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return false;
    }
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let shaped = b.iter().zip(shape).all(|(c, s)| match s {
        b'd' => c.is_ascii_digit(),
        _ => c == s,
    });
    let field = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    shaped
        && (1..=12).contains(&field(5))
        && (1..=days_in_month(field(0) * 100 + field(2), field(5))).contains(&field(8))
        && field(11) < 24
        && field(14) < 60
        && field(17) < 60
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn pricing<'a>(f: &Func, args: &Args<'a, '_>) -> Out<'a> {
    let model = args.get(0);
    let price = model.as_str().and_then(|m| args.ctx.env.pricing.get(m));
    match f {
        Func::Priced => boolean(price.is_some()),
        Func::ContextWindow => Cow::Owned(
            price
                .and_then(|p| p.context_window)
                .map_or(Value::Null, Value::from),
        ),
        _ => {
            let Some(p) = price else {
                return Cow::Borrowed(&NULL);
            };
            let t = |i: usize| args.num(i).unwrap_or(0.0);
            let usage = Usage {
                input: t(1),
                output: t(2),
                cache_write: t(3),
                cache_read: t(4),
                cache_write_1h: t(5),
            };
            Cow::Owned(p.cost(usage).map_or(Value::Null, num_value_f))
        }
    }
}

/// The conversational text of a content value: a string, the `text` of a
/// block, or the text pieces of an array of blocks (tool results included),
/// one per line. One piece (a prompt, a tool result, a reply's one text
/// block) is borrowed, not copied: most calls have exactly one.
fn content_text(v: Out<'_>) -> Out<'_> {
    if let Cow::Borrowed(v) = v {
        let mut pieces = 0;
        let mut first = None;
        text_pieces(v, &mut |p| {
            pieces += 1;
            first.get_or_insert(p);
        });
        if let (1, Some(piece)) = (pieces, first) {
            return Cow::Borrowed(piece);
        }
    }
    let mut out = String::new();
    text_pieces(&v, &mut |p| {
        push_line(&mut out, p.as_str().unwrap_or_default())
    });
    string(out)
}

/// Calls `f` with each text piece (a `Value::String`) of a content value.
fn text_pieces<'v>(v: &'v Value, f: &mut impl FnMut(&'v Value)) {
    match v {
        Value::String(_) => f(v),
        Value::Array(items) => items.iter().for_each(|it| block_text(it, f)),
        Value::Object(m) => {
            if let Some(t) = m.get("text").filter(|t| t.is_string()) {
                f(t)
            }
        }
        _ => {}
    }
}

fn block_text<'v>(it: &'v Value, f: &mut impl FnMut(&'v Value)) {
    match it.get("type").and_then(Value::as_str) {
        Some("text") => {
            if let Some(t) = it.get("text").filter(|t| t.is_string()) {
                f(t)
            }
        }
        Some("tool_result") => {
            if let Some(c) = it.get("content") {
                text_pieces(c, f)
            }
        }
        None if it.is_string() => f(it),
        _ => {}
    }
}

fn push_line(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

/// Every string inside `v` (keys excluded), newline-joined.
fn all_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => push_line(out, s),
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| all_strings(x, out)),
        _ => {}
    }
}
