//! Tokens → expression tree: precedence climbing, nesting and size limits,
//! variable slots and function resolution.

use super::lex::Tok;
use super::{BinOp, Env, FieldTest, Func, Node, Root, Seg, Slots, MAX_DEPTH, MAX_TERMS};
use regex::Regex;
use serde_json::{Number, Value};
use std::sync::Arc;

pub(super) struct Parser<'e> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    env: &'e Env,
    slots: &'e mut Slots,
    /// Current nesting (see MAX_DEPTH) and terms so far (see MAX_TERMS).
    depth: usize,
    terms: usize,
}

type PResult<T> = Result<T, (String, usize)>;

impl<'e> Parser<'e> {
    pub(super) fn new(
        toks: Vec<(Tok, usize)>,
        end: usize,
        env: &'e Env,
        slots: &'e mut Slots,
    ) -> Self {
        Parser {
            toks,
            pos: 0,
            end,
            env,
            slots,
            depth: 0,
            terms: 0,
        }
    }

    /// The whole token list as one expression.
    pub(super) fn expression(mut self) -> PResult<Node> {
        let node = self.or()?;
        if self.pos < self.toks.len() {
            return Err(("unexpected trailing input".into(), self.col()));
        }
        Ok(node)
    }
}

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
            Some(Tok::LBrack) => Ok(list(self.items(&Tok::RBrack, "`,` or `]`")?)),
            Some(Tok::Var(v)) => {
                let slot = self.slots.slot(&v);
                let root = if v == "index" {
                    Root::Index(slot)
                } else {
                    Root::Var(slot)
                };
                Ok(Node::Path(root, self.segments()?))
            }
            Some(Tok::Name(n)) => self.name(n, col),
            Some(t) => Err((format!("unexpected {t:?}"), col)),
            None => Err(("unexpected end of expression".into(), col)),
        }
    }

    /// A bare name: a constant, a function call or a path.
    fn name(&mut self, n: String, col: usize) -> PResult<Node> {
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
        Ok(match root {
            Root::Entry if !segs.is_empty() => Node::EntryPath(self.slots.entry_path(&segs), segs),
            root => Node::Path(root, segs),
        })
    }

    /// Resolve a function name, check its arity and pre-compile literal
    /// arguments (regexes, globs) and named maps / glob lists.
    fn func(&self, name: &str, args: &[Node]) -> Result<Func, String> {
        if let Some((min, max, f)) = plain_func(name) {
            arity(name, args, min, max)?;
            return Ok(f);
        }
        let lit = |i: usize| lit_str(name, args, i);
        match name {
            "matches" => {
                arity(name, args, 2, 2)?;
                let re = Regex::new(lit(1)?).map_err(|e| format!("bad regex in matches(): {e}"))?;
                Ok(Func::Matches(Arc::new(re)))
            }
            "any_field" => {
                arity(name, args, 3, 3)?;
                let re =
                    Regex::new(lit(2)?).map_err(|e| format!("bad regex in any_field(): {e}"))?;
                let keys = lit_keys(name, args)?;
                Ok(Func::AnyField(Arc::new(FieldTest { keys, re })))
            }
            "glob" => {
                arity(name, args, 2, 2)?;
                let g = globset::GlobBuilder::new(lit(1)?)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("bad glob in glob(): {e}"))?;
                Ok(Func::Glob(g.compile_matcher()))
            }
            "in_globs" => {
                arity(name, args, 2, 2)?;
                let list = lit(1)?;
                match self.env.globs.get(list) {
                    Some(set) => Ok(Func::InGlobs(set.clone())),
                    None => Err(format!(
                        "in_globs(): no glob list named `{list}` in `globs:`"
                    )),
                }
            }
            "lookup" => {
                arity(name, args, 2, 3)?;
                let map = lit(0)?;
                match self.env.maps.get(map) {
                    Some(m) => Ok(Func::Lookup(m.clone())),
                    None => Err(format!("lookup(): no map named `{map}` in `maps:`")),
                }
            }
            _ => Err(format!("unknown function `{name}`")),
        }
    }
}

/// Argument `i` of `name()`, which must be a string literal.
fn lit_str<'n>(name: &str, args: &'n [Node], i: usize) -> Result<&'n str, String> {
    match args.get(i) {
        Some(Node::Lit(Value::String(s))) => Ok(s),
        _ => Err(format!(
            "argument {} of {name}() must be a string literal",
            i + 1
        )),
    }
}

/// Argument 2 of `any_field()`: a key, or a list of keys, as literals.
fn lit_keys(name: &str, args: &[Node]) -> Result<Vec<String>, String> {
    let keys: Option<Vec<String>> = match args.get(1) {
        Some(Node::Lit(Value::String(k))) => Some(vec![k.clone()]),
        Some(Node::Lit(Value::Array(ks))) => {
            ks.iter().map(|k| k.as_str().map(String::from)).collect()
        }
        _ => None,
    };
    keys.filter(|k| !k.is_empty()).ok_or_else(|| {
        format!("argument 2 of {name}() must be a key or a list of keys, as string literals")
    })
}

fn arity(name: &str, args: &[Node], min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&args.len()) {
        Ok(())
    } else if min == max {
        Err(format!(
            "{name}() takes {min} argument(s), got {}",
            args.len()
        ))
    } else {
        Err(format!(
            "{name}() takes {min} to {max} arguments, got {}",
            args.len()
        ))
    }
}

/// The functions whose arguments are all plain expressions: (min args, max args, function).
fn plain_func(name: &str) -> Option<(usize, usize, Func)> {
    let one = |f| Some((1, 1, f));
    let two = |f| Some((2, 2, f));
    match name {
        "coalesce" => Some((1, 64, Func::Coalesce)),
        "concat" => Some((1, 64, Func::Concat)),
        "union" => Some((1, 64, Func::Union)),
        "if" => Some((3, 3, Func::If)),
        "cost" => Some((5, 6, Func::Cost)),
        "exists" => one(Func::Exists),
        "len" => one(Func::Len),
        "size" => one(Func::Size),
        "text" => one(Func::Text),
        "all_text" => one(Func::AllText),
        "sha256" => one(Func::Sha256),
        "lower" => one(Func::Lower),
        "upper" => one(Func::Upper),
        "trim" => one(Func::Trim),
        "basename" => one(Func::Basename),
        "dirname" => one(Func::Dirname),
        "extension" => one(Func::Extension),
        "first_word" => one(Func::FirstWord),
        "json" => one(Func::Json),
        "int" => one(Func::Int),
        "float" => one(Func::Float),
        "str" => one(Func::Str),
        "bool" => one(Func::Bool),
        "iso_time" => one(Func::IsoTime),
        "context_window" => one(Func::ContextWindow),
        "has_label" => one(Func::HasLabel),
        "priced" => one(Func::Priced),
        "preview" => two(Func::Preview),
        "round" => two(Func::Round),
        "contains" => two(Func::Contains),
        "starts_with" => two(Func::StartsWith),
        "ends_with" => two(Func::EndsWith),
        "count_type" => two(Func::CountType),
        _ => None,
    }
}

/// A list of literals is itself a literal: folded once here rather than
/// rebuilt (one `Vec` and a copy of each string) every time it is evaluated.
fn list(items: Vec<Node>) -> Node {
    if !items.iter().all(|n| matches!(n, Node::Lit(_))) {
        return Node::List(items);
    }
    let values = items
        .into_iter()
        .filter_map(|n| match n {
            Node::Lit(v) => Some(v),
            _ => None,
        })
        .collect();
    Node::Lit(Value::Array(values))
}
