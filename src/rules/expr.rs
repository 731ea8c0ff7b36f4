//! The small expression language of rule files.
//!
//! Expressions are compiled once when a rule file loads: regexes, globs and
//! function names are checked, `$variables` become slots of the per-entry
//! variable vector ([`Slots`]), paths into the entry get an id per distinct
//! path (resolved once per entry, [`Slots::resolve_paths`]) and `lookup` /
//! `in_globs` hold the map or glob list itself, so evaluating an entry
//! neither hashes a name nor copies the JSON document. Grammar, loosest binding first:
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
//!
//! Submodules: `lex` (tokens), `parse` (tokens → [`Node`] tree, function
//! resolution), `eval` (operators and paths), `call` (the functions).

mod call;
mod eval;
mod lex;
mod parse;

use super::pricing::PriceTable;
use regex::Regex;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

pub use eval::truthy;

/// A `maps:` entry: key → value, looked up by `lookup()`.
pub type LookupMap = FxHashMap<String, Value>;

/// Named things expressions can refer to, defined by the rule pack. Compiled
/// expressions hold their map / glob list (an `Arc`), not its name.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub pricing: PriceTable,
    pub maps: FxHashMap<String, Arc<LookupMap>>,
    pub globs: FxHashMap<String, Arc<globset::GlobSet>>,
}

/// The variables of one entry, by slot: builtins first (see [`slot`]), then
/// every other `$name` the rules mention or derive, in order of appearance.
#[derive(Debug, Clone)]
pub struct Slots {
    names: Vec<String>,
    index: FxHashMap<String, usize>,
    /// Every distinct path into the entry the rules mention, prefixes
    /// included (`message.usage.input_tokens` is `message`, then `.usage`,
    /// then `.input_tokens`): its parent's id and its last step.
    paths: Vec<(Option<u32>, Seg)>,
    path_index: FxHashMap<(Option<u32>, Seg), u32>,
}

/// Slots of the variables the rule engine sets itself.
pub mod slot {
    pub const PROJECT: usize = 0;
    pub const SOURCE_FILE: usize = 1;
    pub const OFFSET: usize = 2;
    pub const SESSION_FILE: usize = 3;
    pub const ENTRY_ID: usize = 4;
    pub const FALLBACK_TIME: usize = 5;
    pub const REDACTIONS: usize = 6;
    pub const LABELS: usize = 7;
    /// Names of the slots above, in slot order.
    pub const BUILTINS: [&str; 8] = [
        "project",
        "source_file",
        "offset",
        "session_file",
        "entry_id",
        "fallback_time",
        "redactions",
        "labels",
    ];
}

impl Default for Slots {
    fn default() -> Self {
        let mut s = Slots {
            names: Vec::new(),
            index: FxHashMap::default(),
            paths: Vec::new(),
            path_index: FxHashMap::default(),
        };
        for name in slot::BUILTINS {
            s.slot(name);
        }
        s
    }
}

impl Slots {
    /// The slot of `$name`, made on first mention (a variable nothing sets
    /// is null, as an unset variable always was).
    pub fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }

    /// The slot of `$name` if any rule mentions it (plugin `set` names).
    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The variable name of slot `i`.
    pub fn name(&self, i: usize) -> Option<&str> {
        self.names.get(i).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many distinct entry paths the rules mention.
    pub fn paths_len(&self) -> usize {
        self.paths.len()
    }

    /// The id of the entry path `segs` (non-empty), its prefixes interned too.
    fn entry_path(&mut self, segs: &[Seg]) -> u32 {
        let mut parent = None;
        for seg in segs {
            let key = (parent, seg.clone());
            let next = self.paths.len() as u32;
            let id = *self.path_index.entry(key).or_insert(next);
            if id == next {
                self.paths.push((parent, seg.clone()));
            }
            parent = Some(id);
        }
        parent.unwrap_or_default()
    }

    /// Every entry path the rules mention, resolved in `entry` (by id; a
    /// parent always comes before its children). Done once per entry, when
    /// the document no longer changes: the rules look up the same few paths
    /// (`type`, `message.content`, `message.usage.*`) dozens of times.
    pub fn resolve_paths<'a>(&self, entry: &'a Value, out: &mut Vec<&'a Value>) {
        out.clear();
        for (parent, seg) in &self.paths {
            let base = parent.map_or(entry, |p| out[p as usize]);
            out.push(eval::step(base, seg));
        }
    }
}

/// Evaluation context for one entry (and one `for_each` item).
pub struct Ctx<'a> {
    pub entry: &'a Value,
    pub item: Option<&'a Value>,
    /// `$index`: the position of `item` in its `for_each` array. Kept out of
    /// `vars` so a row per element does not copy the entry's variables.
    pub index: Option<&'a Value>,
    /// The entry's variables, indexed by [`Slots`].
    pub vars: &'a [Value],
    /// The entry's paths by id ([`Slots::resolve_paths`]); empty while the
    /// document may still change (plugin steps): paths are then walked.
    pub paths: &'a [&'a Value],
    pub labels: &'a [String],
    pub env: &'a Env,
}

#[derive(Debug, Clone)]
enum Root {
    Entry,
    Item,
    Var(usize),
    /// `$index`: the for_each position, else the variable of that name.
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// A path into the entry: its id in [`Slots`], and its steps (walked when
    /// the context has no resolved paths).
    EntryPath(u32, Vec<Seg>),
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
    InGlobs(Arc<globset::GlobSet>),
    Lookup(Arc<LookupMap>),
    AnyField(Arc<FieldTest>),
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

/// `any_field(x, keys, 'regex')`: the keys to look for at any depth of `x`
/// and the regex their scalar values are matched against (both literals,
/// compiled at load).
#[derive(Debug)]
struct FieldTest {
    keys: Vec<String>,
    re: Regex,
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

impl Expr {
    /// Compile `src` against the rule pack's named maps, globs and prices;
    /// every `$name` gets its slot in `slots`.
    pub fn compile(src: &str, env: &Env, slots: &mut Slots) -> Result<Expr, ExprError> {
        let err = |(message, column): (String, usize)| ExprError {
            message,
            column: column + 1,
            source_text: src.to_string(),
        };
        let toks = lex::lex(src).map_err(err)?;
        let node = parse::Parser::new(toks, src.len(), env, slots)
            .expression()
            .map_err(err)?;
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
        eval::eval(&self.node, ctx)
    }

    pub fn truthy(&self, ctx: &Ctx<'_>) -> bool {
        truthy(&eval::eval(&self.node, ctx))
    }
}

#[cfg(test)]
mod tests;
