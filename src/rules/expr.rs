//! The small expression language of rule files.
//!
//! Expressions are compiled once when a rule file loads (regexes, globs and
//! function names are checked then) and evaluated per entry against the JSON
//! document without copying it. Grammar, loosest binding first:
//!
//! ```text
//! expr   := or
//! or     := and ("||" and)*
//! and    := cmp ("&&" cmp)*
//! cmp    := rel (("==" | "!=" | "in") rel | "=~" STRING)?
//! rel    := add (("<" | "<=" | ">" | ">=") add)?
//! add    := mul (("+" | "-") mul)*
//! mul    := unary (("*" | "/") unary)*
//! unary  := ("!" | "-") unary | primary
//! primary:= literal | path | $var[.path] | func "(" args ")" | "[" list "]" | "(" expr ")"
//! path   := name ("." name | "[" INT "]" | "[" STRING "]")*     (root: the entry; `item` inside for_each)
//! ```

use super::pricing::{PriceTable, Usage};
use regex::Regex;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Named things expressions can refer to, defined by the rule pack.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub pricing: PriceTable,
    pub maps: HashMap<String, Map<String, Value>>,
    pub globs: HashMap<String, globset::GlobSet>,
}

/// Evaluation context for one entry (and one `for_each` item).
pub struct Ctx<'a> {
    pub entry: &'a Value,
    pub item: Option<&'a Value>,
    /// `$index`: the position of `item` in its `for_each` array. Kept out of
    /// `vars` so a row per element does not copy the entry's variables.
    pub index: Option<&'a Value>,
    pub vars: &'a Map<String, Value>,
    pub labels: &'a [String],
    pub env: &'a Env,
}

#[derive(Debug, Clone)]
enum Root {
    Entry,
    Item,
    Var(String),
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Eq,
    Ne,
    In,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Value),
    Path(Root, Vec<Seg>),
    List(Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    /// `a || b || ...`: the first truthy operand, else the last one. Chains are
    /// flat (not nested pairs) so a long chain does not make a deep tree.
    Any(Vec<Node>),
    /// `a && b && ...`: true when every operand is truthy (stops at the first falsy).
    All(Vec<Node>),
    /// `a + b - c ...` or `a * b / c ...`, applied left to right; flat like `Any`.
    Fold(Box<Node>, Vec<(BinOp, Node)>),
    /// Comparisons (they do not chain).
    Bin(BinOp, Box<Node>, Box<Node>),
    Match(Box<Node>, Arc<Regex>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone)]
enum Func {
    Coalesce,
    If,
    Exists,
    Len,
    Size,
    Text,
    AllText,
    Preview,
    Sha256,
    Matches(Arc<Regex>),
    Glob(globset::GlobMatcher),
    InGlobs(String),
    Lookup(String),
    Lower,
    Upper,
    Trim,
    Basename,
    Dirname,
    Extension,
    FirstWord,
    Json,
    Int,
    Float,
    Str,
    Bool,
    CountType,
    Cost,
    Priced,
    ContextWindow,
    Contains,
    StartsWith,
    EndsWith,
    HasLabel,
    Concat,
    Union,
    Round,
    IsoTime,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    node: Node,
    source: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at column {column} of `{}`)", excerpt(.source_text))]
pub struct ExprError {
    pub message: String,
    pub column: usize,
    pub source_text: String,
}

/// The start of a long expression, so an error about a huge one stays one readable line.
fn excerpt(src: &str) -> Cow<'_, str> {
    const SHOWN: usize = 80;
    match src.char_indices().nth(SHOWN) {
        None => Cow::Borrowed(src),
        Some((i, _)) => Cow::Owned(format!("{}… ({} bytes)", &src[..i], src.len())),
    }
}

/// Deepest nesting of brackets, calls and prefix `!` / `-` in one expression.
/// Parsing, evaluating and dropping an expression recurse once per level, so
/// this bounds their stack use (debug build, worst case: ~18 KiB per level to
/// parse, ~12 KiB to evaluate, so under 0.6 MiB of the engine threads' 2 MiB):
/// a hostile rule file is a load error, not a crashed engine. The default
/// rules nest 3 deep.
pub const MAX_DEPTH: usize = 32;
/// Most terms (operands and operators) in one expression; bounds the work per
/// entry. The default rules' largest expression has about 15.
pub const MAX_TERMS: usize = 2000;

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Var(String),
    Str(String),
    Num(f64, bool),
    Op(&'static str),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, (String, usize)> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Name(src[start..i].to_string()), start));
            continue;
        }
        if c == b'$' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if i == start + 1 {
                return Err(("`$` must be followed by a variable name".into(), start));
            }
            out.push((Tok::Var(src[start + 1..i].to_string()), start));
            continue;
        }
        if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut is_int = true;
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                is_int = false;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let n: f64 = src[start..i]
                .parse()
                .map_err(|_| ("bad number".to_string(), start))?;
            out.push((Tok::Num(n, is_int), start));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                if i >= b.len() {
                    return Err(("unterminated string".into(), start));
                }
                let ch = src[i..].chars().next().unwrap_or('\0');
                if b[i] == quote {
                    i += 1;
                    break;
                }
                if b[i] == b'\\' && i + 1 < b.len() {
                    let next = src[i + 1..].chars().next().unwrap_or('\0');
                    // Only quotes and backslashes are escapes: regexes keep their `\d`.
                    if next == quote as char || next == '\\' {
                        s.push(next);
                        i += 1 + next.len_utf8();
                        continue;
                    }
                }
                s.push(ch);
                i += ch.len_utf8();
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        let two = if i + 1 < b.len() { &src[i..i + 2] } else { "" };
        let op2: Option<&'static str> = match two {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            "=~" => Some("=~"),
            _ => None,
        };
        if let Some(op) = op2 {
            out.push((Tok::Op(op), start));
            i += 2;
            continue;
        }
        let tok = match c {
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBrack,
            b']' => Tok::RBrack,
            b',' => Tok::Comma,
            b'.' => Tok::Dot,
            b'<' => Tok::Op("<"),
            b'>' => Tok::Op(">"),
            b'!' => Tok::Op("!"),
            b'+' => Tok::Op("+"),
            b'-' => Tok::Op("-"),
            b'*' => Tok::Op("*"),
            b'/' => Tok::Op("/"),
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err((format!("unexpected character `{ch}`"), start));
            }
        };
        out.push((tok, start));
        i += 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------- parser

struct Parser<'e> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    env: &'e Env,
    /// Current nesting (see MAX_DEPTH) and terms so far (see MAX_TERMS).
    depth: usize,
    terms: usize,
}

type PResult<T> = Result<T, (String, usize)>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, c)| *c)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &Tok, what: &str) -> PResult<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err((format!("expected {what}"), self.col()))
        }
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_name(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(n)) if n == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// One level deeper: call before recursing into a nested construct.
    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((
                format!(
                    "expression nested deeper than {MAX_DEPTH} levels (brackets, calls, `!`, `-`)"
                ),
                self.col(),
            ));
        }
        Ok(())
    }
    fn leave(&mut self) {
        self.depth -= 1;
    }
    /// Count one term (operand or operator).
    fn term(&mut self) -> PResult<()> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err((
                format!(
                    "expression too large: more than {MAX_TERMS} terms (split it into derived fields)"
                ),
                self.col(),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> PResult<Node> {
        let mut items = vec![self.and()?];
        while self.eat_op("||") {
            self.term()?;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Node::Any(items)
        })
    }
    fn and(&mut self) -> PResult<Node> {
        let mut items = vec![self.cmp()?];
        while self.eat_op("&&") {
            self.term()?;
            items.push(self.cmp()?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Node::All(items)
        })
    }
    fn cmp(&mut self) -> PResult<Node> {
        let l = self.rel()?;
        let op = if self.eat_op("==") {
            BinOp::Eq
        } else if self.eat_op("!=") {
            BinOp::Ne
        } else if self.eat_name("in") {
            BinOp::In
        } else if self.eat_op("=~") {
            let col = self.col();
            return match self.next() {
                Some(Tok::Str(pat)) => {
                    let re = Regex::new(&pat).map_err(|e| (format!("bad regex: {e}"), col))?;
                    Ok(Node::Match(Box::new(l), Arc::new(re)))
                }
                _ => Err(("`=~` needs a string literal regex".into(), col)),
            };
        } else {
            return Ok(l);
        };
        let r = self.rel()?;
        Ok(Node::Bin(op, Box::new(l), Box::new(r)))
    }
    fn rel(&mut self) -> PResult<Node> {
        let l = self.add()?;
        for (s, op) in [
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ] {
            if self.eat_op(s) {
                let r = self.add()?;
                return Ok(Node::Bin(op, Box::new(l), Box::new(r)));
            }
        }
        Ok(l)
    }
    /// `operand (op operand)*` for the two arithmetic levels, as one flat `Fold`.
    fn fold(
        &mut self,
        ops: [(&str, BinOp); 2],
        operand: fn(&mut Self) -> PResult<Node>,
    ) -> PResult<Node> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        while let Some(&(_, op)) = ops.iter().find(|(s, _)| self.eat_op(s)) {
            self.term()?;
            rest.push((op, operand(self)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Fold(Box::new(first), rest)
        })
    }
    fn add(&mut self) -> PResult<Node> {
        self.fold([("+", BinOp::Add), ("-", BinOp::Sub)], Self::mul)
    }
    fn mul(&mut self) -> PResult<Node> {
        self.fold([("*", BinOp::Mul), ("/", BinOp::Div)], Self::unary)
    }
    /// Prefix `!` / `-` (a loop, not a recursion: each still counts as a level).
    fn unary(&mut self) -> PResult<Node> {
        let mut wraps: Vec<fn(Box<Node>) -> Node> = Vec::new();
        loop {
            if self.eat_op("!") {
                wraps.push(Node::Not);
            } else if self.eat_op("-") {
                wraps.push(Node::Neg);
            } else {
                break;
            }
            self.term()?;
            self.enter()?;
        }
        let mut node = self.primary()?;
        for wrap in wraps.into_iter().rev() {
            node = wrap(Box::new(node));
            self.leave();
        }
        Ok(node)
    }
    fn segments(&mut self) -> PResult<Vec<Seg>> {
        let mut segs = Vec::new();
        loop {
            if self.eat(&Tok::Dot) {
                let col = self.col();
                match self.next() {
                    Some(Tok::Name(n)) => segs.push(Seg::Key(n)),
                    Some(Tok::Num(n, true)) => segs.push(Seg::Index(n as usize)),
                    _ => return Err(("expected a field name after `.`".into(), col)),
                }
            } else if self.peek() == Some(&Tok::LBrack) {
                self.pos += 1;
                let col = self.col();
                match self.next() {
                    Some(Tok::Num(n, true)) => segs.push(Seg::Index(n as usize)),
                    Some(Tok::Str(s)) => segs.push(Seg::Key(s)),
                    _ => return Err(("expected an index or a quoted key".into(), col)),
                }
                self.expect(&Tok::RBrack, "`]`")?;
            } else {
                return Ok(segs);
            }
        }
    }
    /// Comma-separated expressions up to `close` (the opener is consumed), one level deeper.
    fn items(&mut self, close: &Tok, what: &str) -> PResult<Vec<Node>> {
        self.enter()?;
        let mut items = Vec::new();
        if !self.eat(close) {
            loop {
                items.push(self.or()?);
                if self.eat(close) {
                    break;
                }
                self.expect(&Tok::Comma, what)?;
            }
        }
        self.leave();
        Ok(items)
    }
    fn primary(&mut self) -> PResult<Node> {
        self.term()?;
        let col = self.col();
        match self.next() {
            Some(Tok::Str(s)) => Ok(Node::Lit(Value::String(s))),
            Some(Tok::Num(n, is_int)) => Ok(Node::Lit(if is_int && n <= u64::MAX as f64 {
                Value::from(n as u64)
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            })),
            Some(Tok::LParen) => {
                self.enter()?;
                let e = self.or()?;
                self.expect(&Tok::RParen, "`)`")?;
                self.leave();
                Ok(e)
            }
            Some(Tok::LBrack) => Ok(Node::List(self.items(&Tok::RBrack, "`,` or `]`")?)),
            Some(Tok::Var(v)) => {
                let segs = self.segments()?;
                Ok(Node::Path(Root::Var(v), segs))
            }
            Some(Tok::Name(n)) => {
                match n.as_str() {
                    "true" => return Ok(Node::Lit(Value::Bool(true))),
                    "false" => return Ok(Node::Lit(Value::Bool(false))),
                    "null" => return Ok(Node::Lit(Value::Null)),
                    _ => {}
                }
                if self.eat(&Tok::LParen) {
                    let args = self.items(&Tok::RParen, "`,` or `)`")?;
                    let f = self.func(&n, &args).map_err(|m| (m, col))?;
                    return Ok(Node::Call(f, args));
                }
                let (root, first) = match n.as_str() {
                    "item" => (Root::Item, None),
                    "entry" => (Root::Entry, None),
                    _ => (Root::Entry, Some(Seg::Key(n))),
                };
                let mut segs: Vec<Seg> = first.into_iter().collect();
                segs.extend(self.segments()?);
                Ok(Node::Path(root, segs))
            }
            Some(t) => Err((format!("unexpected {t:?}"), col)),
            None => Err(("unexpected end of expression".into(), col)),
        }
    }

    /// Resolve a function name, check its arity and pre-compile literal arguments.
    fn func(&self, name: &str, args: &[Node]) -> Result<Func, String> {
        let lit_str = |i: usize| -> Result<String, String> {
            match args.get(i) {
                Some(Node::Lit(Value::String(s))) => Ok(s.clone()),
                _ => Err(format!(
                    "argument {} of {name}() must be a string literal",
                    i + 1
                )),
            }
        };
        let arity = |min: usize, max: usize| -> Result<(), String> {
            if args.len() < min || args.len() > max {
                Err(if min == max {
                    format!("{name}() takes {min} argument(s), got {}", args.len())
                } else {
                    format!(
                        "{name}() takes {min} to {max} arguments, got {}",
                        args.len()
                    )
                })
            } else {
                Ok(())
            }
        };
        let f = match name {
            "coalesce" => {
                arity(1, 64)?;
                Func::Coalesce
            }
            "concat" => {
                arity(1, 64)?;
                Func::Concat
            }
            "union" => {
                arity(1, 64)?;
                Func::Union
            }
            "if" => {
                arity(3, 3)?;
                Func::If
            }
            "exists" | "len" | "size" | "text" | "all_text" | "sha256" | "lower" | "upper"
            | "trim" | "basename" | "dirname" | "extension" | "first_word" | "json" | "int"
            | "float" | "str" | "bool" | "context_window" | "iso_time" => {
                arity(1, 1)?;
                match name {
                    "exists" => Func::Exists,
                    "len" => Func::Len,
                    "size" => Func::Size,
                    "text" => Func::Text,
                    "all_text" => Func::AllText,
                    "sha256" => Func::Sha256,
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    "trim" => Func::Trim,
                    "basename" => Func::Basename,
                    "dirname" => Func::Dirname,
                    "extension" => Func::Extension,
                    "first_word" => Func::FirstWord,
                    "json" => Func::Json,
                    "int" => Func::Int,
                    "float" => Func::Float,
                    "str" => Func::Str,
                    "bool" => Func::Bool,
                    "iso_time" => Func::IsoTime,
                    _ => Func::ContextWindow,
                }
            }
            "preview" => {
                arity(2, 2)?;
                Func::Preview
            }
            "round" => {
                arity(2, 2)?;
                Func::Round
            }
            "contains" | "starts_with" | "ends_with" | "count_type" => {
                arity(2, 2)?;
                match name {
                    "contains" => Func::Contains,
                    "starts_with" => Func::StartsWith,
                    "ends_with" => Func::EndsWith,
                    _ => Func::CountType,
                }
            }
            "matches" => {
                arity(2, 2)?;
                let pat = lit_str(1)?;
                Func::Matches(Arc::new(
                    Regex::new(&pat).map_err(|e| format!("bad regex in matches(): {e}"))?,
                ))
            }
            "glob" => {
                arity(2, 2)?;
                let pat = lit_str(1)?;
                Func::Glob(
                    globset::GlobBuilder::new(&pat)
                        .literal_separator(false)
                        .build()
                        .map_err(|e| format!("bad glob in glob(): {e}"))?
                        .compile_matcher(),
                )
            }
            "in_globs" => {
                arity(2, 2)?;
                let list = lit_str(1)?;
                if !self.env.globs.contains_key(&list) {
                    return Err(format!(
                        "in_globs(): no glob list named `{list}` in `globs:`"
                    ));
                }
                Func::InGlobs(list)
            }
            "lookup" => {
                arity(2, 3)?;
                let map = lit_str(0)?;
                if !self.env.maps.contains_key(&map) {
                    return Err(format!("lookup(): no map named `{map}` in `maps:`"));
                }
                Func::Lookup(map)
            }
            "has_label" => {
                arity(1, 1)?;
                Func::HasLabel
            }
            "cost" => {
                arity(5, 6)?;
                Func::Cost
            }
            "priced" => {
                arity(1, 1)?;
                Func::Priced
            }
            _ => return Err(format!("unknown function `{name}`")),
        };
        Ok(f)
    }
}

impl Expr {
    /// Compile `src` against the rule pack's named maps, globs and prices.
    pub fn compile(src: &str, env: &Env) -> Result<Expr, ExprError> {
        let err = |(message, column): (String, usize)| ExprError {
            message,
            column: column + 1,
            source_text: src.to_string(),
        };
        let toks = lex(src).map_err(err)?;
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.len(),
            env,
            depth: 0,
            terms: 0,
        };
        let node = p.or().map_err(err)?;
        if p.pos < p.toks.len() {
            return Err(err(("unexpected trailing input".into(), p.col())));
        }
        Ok(Expr {
            node,
            source: src.to_string(),
        })
    }

    /// A constant expression (e.g. a YAML number or bool in a column map).
    pub fn literal(v: Value) -> Expr {
        Expr {
            source: v.to_string(),
            node: Node::Lit(v),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn eval<'a>(&'a self, ctx: &Ctx<'a>) -> Cow<'a, Value> {
        eval(&self.node, ctx)
    }

    pub fn truthy(&self, ctx: &Ctx<'_>) -> bool {
        truthy(&eval(&self.node, ctx))
    }
}

// ---------------------------------------------------------------- evaluation

static NULL: Value = Value::Null;

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

fn walk<'a>(mut v: &'a Value, segs: &[Seg]) -> &'a Value {
    for s in segs {
        v = match (s, v) {
            (Seg::Key(k), Value::Object(m)) => m.get(k).unwrap_or(&NULL),
            (Seg::Index(i), Value::Array(a)) => a.get(*i).unwrap_or(&NULL),
            _ => &NULL,
        };
    }
    v
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

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

fn as_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Text of a `content` value: a string, or the `text` of text blocks (and the
/// text inside tool_result blocks), joined by newlines.
fn content_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => push_line(out, s),
        Value::Array(items) => {
            for it in items {
                match it.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = it.get("text").and_then(Value::as_str) {
                            push_line(out, t)
                        }
                    }
                    Some("tool_result") => {
                        if let Some(c) = it.get("content") {
                            content_text(c, out)
                        }
                    }
                    None => {
                        if let Value::String(s) = it {
                            push_line(out, s)
                        }
                    }
                    _ => {}
                }
            }
        }
        Value::Object(m) => {
            if let Some(t) = m.get("text").and_then(Value::as_str) {
                push_line(out, t)
            }
        }
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

fn eval<'a>(node: &'a Node, ctx: &Ctx<'a>) -> Cow<'a, Value> {
    match node {
        Node::Lit(v) => Cow::Borrowed(v),
        Node::Path(root, segs) => {
            let base: &'a Value = match root {
                Root::Entry => ctx.entry,
                Root::Item => ctx.item.unwrap_or(&NULL),
                Root::Var(name) if name == "index" && ctx.index.is_some() => {
                    ctx.index.unwrap_or(&NULL)
                }
                Root::Var(name) => ctx.vars.get(name).unwrap_or(&NULL),
            };
            Cow::Borrowed(walk(base, segs))
        }
        Node::List(items) => Cow::Owned(Value::Array(
            items.iter().map(|n| eval(n, ctx).into_owned()).collect(),
        )),
        Node::Not(n) => Cow::Owned(Value::Bool(!truthy(&eval(n, ctx)))),
        Node::Neg(n) => Cow::Owned(num(&eval(n, ctx)).map_or(Value::Null, |f| num_value(-f))),
        Node::Match(n, re) => {
            let v = eval(n, ctx);
            Cow::Owned(Value::Bool(!v.is_null() && re.is_match(&as_text(&v))))
        }
        Node::Any(items) => {
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
        Node::Call(f, args) => call(f, args, ctx),
    }
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Value {
    match op {
        BinOp::Eq => Value::Bool(loose_eq(l, r)),
        BinOp::Ne => Value::Bool(!loose_eq(l, r)),
        BinOp::In => Value::Bool(match r {
            Value::Array(a) => a.iter().any(|x| loose_eq(x, l)),
            Value::String(s) => !l.is_null() && s.contains(as_text(l).as_ref()),
            Value::Object(m) => l.as_str().is_some_and(|k| m.contains_key(k)),
            _ => false,
        }),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (l, r) {
                (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                _ => match (num(l), num(r)) {
                    (Some(a), Some(b)) => a.partial_cmp(&b),
                    _ => None,
                },
            };
            Value::Bool(ord.is_some_and(|o| match op {
                BinOp::Lt => o.is_lt(),
                BinOp::Le => o.is_le(),
                BinOp::Gt => o.is_gt(),
                _ => o.is_ge(),
            }))
        }
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

fn call<'a>(f: &'a Func, args: &'a [Node], ctx: &Ctx<'a>) -> Cow<'a, Value> {
    let arg = |i: usize| -> Cow<'a, Value> {
        match args.get(i) {
            Some(n) => eval(n, ctx),
            None => Cow::Borrowed(&NULL),
        }
    };
    let s = |v: String| Cow::Owned(Value::String(v));
    match f {
        Func::Coalesce => {
            for n in args {
                let v = eval(n, ctx);
                if !v.is_null() {
                    return v;
                }
            }
            Cow::Borrowed(&NULL)
        }
        Func::If => {
            if truthy(&arg(0)) {
                arg(1)
            } else {
                arg(2)
            }
        }
        Func::Exists => Cow::Owned(Value::Bool(!arg(0).is_null())),
        Func::Len => Cow::Owned(Value::from(match arg(0).as_ref() {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            Value::Null => 0,
            other => other.to_string().len(),
        })),
        Func::Size => Cow::Owned(Value::from(match arg(0).as_ref() {
            Value::String(s) => s.len(),
            Value::Null => 0,
            other => other.to_string().len(),
        })),
        Func::Text => {
            let mut out = String::new();
            content_text(&arg(0), &mut out);
            s(out)
        }
        Func::AllText => {
            let mut out = String::new();
            all_strings(&arg(0), &mut out);
            s(out)
        }
        Func::Preview => {
            let n = num(&arg(1)).unwrap_or(0.0).max(0.0) as usize;
            let v = arg(0);
            let t = as_text(&v);
            s(t.chars().take(n).collect())
        }
        Func::Sha256 => {
            let v = arg(0);
            s(hex::encode(Sha256::digest(as_text(&v).as_bytes())))
        }
        Func::Matches(re) => {
            let v = arg(0);
            Cow::Owned(Value::Bool(!v.is_null() && re.is_match(&as_text(&v))))
        }
        Func::Glob(m) => {
            let v = arg(0);
            Cow::Owned(Value::Bool(v.as_str().is_some_and(|p| m.is_match(p))))
        }
        Func::InGlobs(list) => {
            let v = arg(0);
            let hit = match (v.as_str(), ctx.env.globs.get(list)) {
                (Some(p), Some(set)) => set.is_match(p),
                _ => false,
            };
            Cow::Owned(Value::Bool(hit))
        }
        Func::Lookup(map) => {
            let key = arg(1);
            let found = ctx
                .env
                .maps
                .get(map)
                .and_then(|m| m.get(as_text(&key).as_ref()));
            match found {
                Some(v) => Cow::Owned(v.clone()),
                None => arg(2),
            }
        }
        Func::Lower => s(as_text(&arg(0)).to_lowercase()),
        Func::Upper => s(as_text(&arg(0)).to_uppercase()),
        Func::Trim => s(as_text(&arg(0)).trim().to_string()),
        Func::Basename => {
            let v = arg(0);
            let t = as_text(&v);
            s(t.rsplit('/').next().unwrap_or("").to_string())
        }
        Func::Dirname => {
            let v = arg(0);
            let t = as_text(&v);
            s(match t.rfind('/') {
                Some(0) => "/".to_string(),
                Some(i) => t[..i].to_string(),
                None => String::new(),
            })
        }
        Func::Extension => {
            let v = arg(0);
            let t = as_text(&v);
            let base = t.rsplit('/').next().unwrap_or("");
            s(match base.rfind('.') {
                Some(i) if i > 0 && i + 1 < base.len() => base[i + 1..].to_lowercase(),
                _ => String::new(),
            })
        }
        Func::FirstWord => {
            let v = arg(0);
            let t = as_text(&v);
            // Skip leading `VAR=value` assignments and `sudo`, so `FOO=1 sudo rm -rf` → `rm`.
            let word = t
                .split_whitespace()
                .find(|w| (w.starts_with('-') || !w.contains('=')) && *w != "sudo")
                .unwrap_or("");
            s(word.rsplit('/').next().unwrap_or("").to_string())
        }
        Func::Json => {
            let v = arg(0);
            s(if v.is_null() {
                String::new()
            } else {
                v.to_string()
            })
        }
        Func::Int => Cow::Owned(match num(&arg(0)) {
            Some(f) if f >= 0.0 => Value::from(f as u64),
            Some(f) => Value::from(f as i64),
            None => Value::from(0),
        }),
        Func::Float => Cow::Owned(num_value_f(num(&arg(0)).unwrap_or(0.0))),
        Func::Str => {
            let v = arg(0);
            s(as_text(&v).into_owned())
        }
        Func::Bool => Cow::Owned(Value::Bool(truthy(&arg(0)))),
        Func::CountType => {
            let want = arg(1);
            let n = match arg(0).as_ref() {
                Value::Array(a) => a
                    .iter()
                    .filter(|it| it.get("type").is_some_and(|t| loose_eq(t, &want)))
                    .count(),
                _ => 0,
            };
            Cow::Owned(Value::from(n))
        }
        Func::Cost => {
            let model = arg(0);
            let Some(p) = model.as_str().and_then(|m| ctx.env.pricing.get(m)) else {
                return Cow::Borrowed(&NULL);
            };
            let t = |i: usize| num(&arg(i)).unwrap_or(0.0);
            let usage = Usage {
                input: t(1),
                output: t(2),
                cache_write: t(3),
                cache_read: t(4),
                cache_write_1h: t(5),
            };
            Cow::Owned(p.cost(usage).map_or(Value::Null, num_value_f))
        }
        Func::Priced => {
            let model = arg(0);
            let known = model.as_str().and_then(|m| ctx.env.pricing.get(m));
            Cow::Owned(Value::Bool(known.is_some()))
        }
        Func::ContextWindow => {
            let model = arg(0);
            let w = model
                .as_str()
                .and_then(|m| ctx.env.pricing.get(m))
                .and_then(|p| p.context_window);
            Cow::Owned(w.map_or(Value::Null, Value::from))
        }
        Func::Contains => {
            let hay = arg(0);
            let needle = arg(1);
            Cow::Owned(Value::Bool(match hay.as_ref() {
                Value::String(h) => h.contains(as_text(&needle).as_ref()),
                Value::Array(a) => a.iter().any(|x| loose_eq(x, &needle)),
                _ => false,
            }))
        }
        Func::StartsWith => {
            let (a, b) = (arg(0), arg(1));
            Cow::Owned(Value::Bool(
                a.as_str()
                    .is_some_and(|x| x.starts_with(as_text(&b).as_ref())),
            ))
        }
        Func::EndsWith => {
            let (a, b) = (arg(0), arg(1));
            Cow::Owned(Value::Bool(
                a.as_str()
                    .is_some_and(|x| x.ends_with(as_text(&b).as_ref())),
            ))
        }
        Func::HasLabel => {
            let v = arg(0);
            let l = as_text(&v);
            Cow::Owned(Value::Bool(ctx.labels.iter().any(|x| *x == l)))
        }
        Func::Concat => {
            let mut out = String::new();
            for n in args {
                out.push_str(&as_text(&eval(n, ctx)));
            }
            s(out)
        }
        Func::Union => {
            // Arrays merged in order without duplicates; scalars count as one element.
            let mut out: Vec<Value> = Vec::new();
            for n in args {
                match eval(n, ctx).into_owned() {
                    Value::Array(a) => {
                        for v in a {
                            if !out.contains(&v) {
                                out.push(v);
                            }
                        }
                    }
                    Value::Null => {}
                    v => {
                        if !out.contains(&v) {
                            out.push(v);
                        }
                    }
                }
            }
            Cow::Owned(Value::Array(out))
        }
        Func::Round => {
            let x = num(&arg(0)).unwrap_or(0.0);
            let d = num(&arg(1)).unwrap_or(0.0).clamp(0.0, 12.0) as i32;
            let m = 10f64.powi(d);
            Cow::Owned(num_value_f((x * m).round() / m))
        }
        Func::IsoTime => {
            // Normalise a timestamp (RFC 3339 string or epoch milliseconds) to
            // RFC 3339 UTC with milliseconds; anything else becomes null.
            let v = arg(0);
            let parsed = match v.as_ref() {
                Value::String(t) => chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|d| d.with_timezone(&chrono::Utc)),
                Value::Number(n) => n
                    .as_i64()
                    .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis),
                _ => None,
            };
            match parsed {
                Some(d) => s(d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
                None => Cow::Borrowed(&NULL),
            }
        }
    }
}

/// Floats stay floats (a cost of 0 is `0.0`, not an integer).
fn num_value_f(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::super::pricing::{Price, Rates};
    use super::*;
    use serde_json::json;

    fn env() -> Env {
        let mut env = Env::default();
        let mut m = Map::new();
        m.insert("Read".into(), json!("read"));
        env.maps.insert("access".into(), m);
        let mut gs = globset::GlobSetBuilder::new();
        gs.add(globset::Glob::new("**/.env").unwrap());
        env.globs.insert("sensitive".into(), gs.build().unwrap());
        let rates = |input: f64, output: f64| Rates {
            input,
            output,
            cache_write: Some(input * 1.25),
            cache_write_1h: Some(input * 2.0),
            cache_read: Some(input / 10.0),
        };
        let sonnet = Price {
            base: rates(3.0, 15.0),
            long_context: Some((200_000, rates(6.0, 22.5))),
            context_window: Some(200_000),
        };
        env.pricing.insert("claude-sonnet-4-5", sonnet).unwrap();
        env
    }

    fn ev(src: &str, doc: &Value) -> Value {
        let env = env();
        let e = Expr::compile(src, &env).unwrap_or_else(|e| panic!("{e}"));
        let vars = Map::from_iter([("x".to_string(), json!({"y": 7}))]);
        let labels = vec!["secret".to_string()];
        let ctx = Ctx {
            entry: doc,
            item: doc.get("it"),
            index: None,
            vars: &vars,
            labels: &labels,
            env: &env,
        };
        e.eval(&ctx).into_owned()
    }

    #[test]
    fn paths_operators_and_functions() {
        let d = json!({"type": "assistant", "n": 3, "message": {"model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "name": "Read"}, {"type": "text", "text": "b"}],
            "usage": {"input_tokens": 1000000, "output_tokens": 0}},
            "it": {"input": {"file_path": "/p/x/.env", "command": "FOO=1 sudo /bin/rm -rf /"}},
            "weird-key": 1});
        assert_eq!(ev("type == 'assistant' && n >= 3", &d), json!(true));
        assert_eq!(ev("type in ['user', 'assistant']", &d), json!(true));
        assert_eq!(ev("!exists(missing.deep) || false", &d), json!(true));
        assert_eq!(ev("text(message.content)", &d), json!("a\nb"));
        assert_eq!(ev("count_type(message.content, 'tool_use')", &d), json!(1));
        assert_eq!(ev("message.content[1].name", &d), json!("Read"));
        assert_eq!(ev("message.content.1.name", &d), json!("Read"));
        assert_eq!(ev("entry['weird-key'] + 1", &d), json!(2));
        assert_eq!(
            ev(
                "lookup('access', item.name, 'other')",
                &json!({"it": {"name": "Zap"}})
            ),
            json!("other")
        );
        assert_eq!(ev("lookup('access', 'Read')", &d), json!("read"));
        assert_eq!(
            ev("in_globs(item.input.file_path, 'sensitive')", &d),
            json!(true)
        );
        assert_eq!(ev("first_word(item.input.command)", &d), json!("rm"));
        assert_eq!(ev("extension('/a/b.Tar.GZ')", &d), json!("gz"));
        assert_eq!(ev("dirname('/a/b.c')", &d), json!("/a"));
        // A 1M-token prompt is over the 200k long-context threshold: $6/M.
        assert_eq!(
            ev(
                "cost(message.model, message.usage.input_tokens, 0, 0, 0)",
                &d
            ),
            json!(6.0)
        );
        assert_eq!(
            ev("cost(message.model, 1000, 0, 2000, 0, 1000)", &d),
            json!(0.01275)
        );
        assert_eq!(ev("priced(message.model)", &d), json!(true));
        assert_eq!(ev("cost('unknown', 5, 5, 5, 5)", &d), Value::Null);
        assert_eq!(ev("context_window(message.model)", &d), json!(200000));
        assert_eq!(ev("preview('héllo', 2)", &d), json!("hé"));
        assert_eq!(
            ev("sha256('abc')", &d),
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(ev("$x.y * 2", &d), json!(14));
        assert_eq!(
            ev("has_label('secret') && !has_label('x')", &d),
            json!(true)
        );
        assert_eq!(ev("text(message.content) =~ '^a\\nb$'", &d), json!(true));
        assert_eq!(ev(r#"matches('x123', '\d+')"#, &d), json!(true));
        assert_eq!(ev("coalesce(nope, null, 'z')", &d), json!("z"));
        assert_eq!(ev("if(n > 5, 'big', 'small')", &d), json!("small"));
        assert_eq!(
            ev("iso_time('2026-01-02T03:04:05+01:00')", &d),
            json!("2026-01-02T02:04:05.000Z")
        );
        assert_eq!(ev("1 / 0", &d), Value::Null);
        assert_eq!(ev("round(2 / 3, 2)", &d), json!(0.67));
        assert_eq!(
            ev("union(['a', 'b'], if(true, ['b', 'c'], []), null, 'd')", &d),
            json!(["a", "b", "c", "d"])
        );
    }

    #[test]
    fn compile_errors_point_at_the_problem() {
        let env = env();
        let e = Expr::compile("type == ", &env).unwrap_err();
        assert!(e.message.contains("end of expression"), "{e}");
        let e = Expr::compile("nosuch(1)", &env).unwrap_err();
        assert_eq!(e.message, "unknown function `nosuch`");
        assert_eq!(e.column, 1);
        let e = Expr::compile("a =~ '('", &env).unwrap_err();
        assert!(e.message.contains("bad regex"), "{e}");
        let e = Expr::compile("lookup('nomap', a)", &env).unwrap_err();
        assert!(e.message.contains("nomap"), "{e}");
        let e = Expr::compile("preview(a)", &env).unwrap_err();
        assert!(e.message.contains("takes 2"), "{e}");
        let e = Expr::compile("a b", &env).unwrap_err();
        assert!(e.message.contains("trailing"), "{e}");
        assert_eq!(e.column, 3);
    }

    proptest::proptest! {
        #[test]
        fn compiler_never_panics(src in "[a-z$.\\[\\]()'\"=!<>&|+*/0-9 ,~-]{0,40}") {
            let env = env();
            if let Ok(e) = Expr::compile(&src, &env) {
                let d = json!({"a": [1, {"b": "c"}]});
                let vars = Map::new();
                let ctx = Ctx { entry: &d, item: None, index: None, vars: &vars, labels: &[], env: &env };
                let _ = e.eval(&ctx);
            }
        }
    }
}
