//! Evaluating an expression tree against one entry: paths, operators and the
//! value conversions the functions share. Results borrow from the entry, the
//! variables or the expression whenever they can (`Cow::Borrowed`).

use super::{call, BinOp, Ctx, Node, Root, Seg};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

pub(super) static NULL: Value = Value::Null;

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

pub(super) fn eval<'a>(node: &'a Node, ctx: &Ctx<'a>) -> Cow<'a, Value> {
    match node {
        Node::Lit(v) => Cow::Borrowed(v),
        Node::Path(root, segs) => Cow::Borrowed(walk(base(root, ctx), segs)),
        Node::EntryPath(id, segs) => Cow::Borrowed(match ctx.paths.get(*id as usize) {
            Some(v) => v,
            None => walk(ctx.entry, segs),
        }),
        Node::List(items) => Cow::Owned(Value::Array(
            items.iter().map(|n| eval(n, ctx).into_owned()).collect(),
        )),
        Node::Not(n) => Cow::Owned(Value::Bool(!truthy(&eval(n, ctx)))),
        Node::Neg(n) => Cow::Owned(num(&eval(n, ctx)).map_or(Value::Null, |f| num_value(-f))),
        Node::Match(n, re) => {
            let v = eval(n, ctx);
            Cow::Owned(Value::Bool(!v.is_null() && re.is_match(&as_text(&v))))
        }
        Node::Any(items) => any(items, ctx),
        Node::All(items) => Cow::Owned(Value::Bool(items.iter().all(|n| truthy(&eval(n, ctx))))),
        Node::Fold(first, rest) => {
            let mut acc = eval(first, ctx);
            for (op, n) in rest {
                acc = Cow::Owned(binary(*op, &acc, &eval(n, ctx)));
            }
            acc
        }
        Node::Bin(op, l, r) => {
            let lv = eval(l, ctx);
            let rv = eval(r, ctx);
            Cow::Owned(binary(*op, &lv, &rv))
        }
        Node::Call(f, args) => call::call(f, args, ctx),
    }
}

/// The value a path starts from.
fn base<'a>(root: &Root, ctx: &Ctx<'a>) -> &'a Value {
    let var = |slot: usize| ctx.vars.get(slot).unwrap_or(&NULL);
    match root {
        Root::Entry => ctx.entry,
        Root::Item => ctx.item.unwrap_or(&NULL),
        Root::Index(slot) => ctx.index.unwrap_or_else(|| var(*slot)),
        Root::Var(slot) => var(*slot),
    }
}

/// `a || b || ...`: the first truthy operand, else the last one.
fn any<'a>(items: &'a [Node], ctx: &Ctx<'a>) -> Cow<'a, Value> {
    let Some((last, init)) = items.split_last() else {
        return Cow::Borrowed(&NULL);
    };
    for n in init {
        let v = eval(n, ctx);
        if truthy(&v) {
            return v;
        }
    }
    eval(last, ctx)
}

fn walk<'a>(v: &'a Value, segs: &[Seg]) -> &'a Value {
    segs.iter().fold(v, step)
}

/// One step of a path: a key of an object or an element of an array.
pub(super) fn step<'a>(v: &'a Value, s: &Seg) -> &'a Value {
    match (s, v) {
        (Seg::Key(k), Value::Object(m)) => m.get(k).unwrap_or(&NULL),
        (Seg::Index(i), Value::Array(a)) => a.get(*i).unwrap_or(&NULL),
        _ => &NULL,
    }
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Value {
    match op {
        BinOp::Eq => Value::Bool(loose_eq(l, r)),
        BinOp::Ne => Value::Bool(!loose_eq(l, r)),
        BinOp::In => Value::Bool(contained(l, r)),
        BinOp::Lt => Value::Bool(order(l, r).is_some_and(Ordering::is_lt)),
        BinOp::Le => Value::Bool(order(l, r).is_some_and(Ordering::is_le)),
        BinOp::Gt => Value::Bool(order(l, r).is_some_and(Ordering::is_gt)),
        BinOp::Ge => Value::Bool(order(l, r).is_some_and(Ordering::is_ge)),
        BinOp::Add => match (l, r) {
            (Value::String(a), b) => Value::String(format!("{a}{}", as_text(b))),
            (a, Value::String(b)) if !a.is_number() => Value::String(format!("{}{b}", as_text(a))),
            _ => num_value(num(l).unwrap_or(0.0) + num(r).unwrap_or(0.0)),
        },
        BinOp::Sub => num_value(num(l).unwrap_or(0.0) - num(r).unwrap_or(0.0)),
        BinOp::Mul => num_value(num(l).unwrap_or(0.0) * num(r).unwrap_or(0.0)),
        BinOp::Div => {
            let d = num(r).unwrap_or(0.0);
            if d == 0.0 {
                Value::Null
            } else {
                num_value(num(l).unwrap_or(0.0) / d)
            }
        }
    }
}

/// `l in r`: an element of an array, a substring, or a key of an object.
fn contained(l: &Value, r: &Value) -> bool {
    match r {
        Value::Array(a) => a.iter().any(|x| loose_eq(x, l)),
        Value::String(s) => !l.is_null() && s.contains(as_text(l).as_ref()),
        Value::Object(m) => l.as_str().is_some_and(|k| m.contains_key(k)),
        _ => false,
    }
}

/// Strings compare as text, anything else as numbers (when both are numbers).
fn order(l: &Value, r: &Value) -> Option<Ordering> {
    match (l, r) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => match (num(l), num(r)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    }
}

pub(super) fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// Whole results of arithmetic are integers.
fn num_value(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        if f >= 0.0 {
            Value::from(f as u64)
        } else {
            Value::from(f as i64)
        }
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Floats stay floats (a cost of 0 is `0.0`, not an integer).
pub(super) fn num_value_f(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

pub(super) fn as_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

pub(super) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}
