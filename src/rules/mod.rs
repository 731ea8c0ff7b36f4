//! Declarative YAML rules: redact, derive, classify, call plugins and map
//! entries to table rows. A format change is a rules edit, not a recompile.
//! The language is documented in `docs/RULES.md`.
//!
//! The rule pack is a small compiler plus an evaluator: `spec` is the YAML
//! file model, `compile` checks it once at load and turns it into a typed
//! [`Program`] (every `$name` a slot of a per-entry vector, maps and glob
//! lists held by the expressions that use them, column names shared), and
//! `apply` runs that program on each entry.

mod apply;
mod compile;
pub mod expr;
pub mod pack;
pub mod pricing;
pub mod redact;
pub mod reload;
mod spec;
pub mod trace;

use crate::plugins::api::PluginError;
use crate::row::{Name, Row};
use expr::{Env, Expr, Slots};
use redact::Redactor;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------- errors

/// A problem in a rule file, with the place to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// All problems found in a rules directory.
#[derive(Debug, Clone)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// Why an entry could not be routed (it goes to the dead-letter table).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("plugin step `{plugin}` ({file}) failed: {error}")]
    Plugin {
        plugin: String,
        file: String,
        #[source]
        error: PluginError,
    },
}

// ---------------------------------------------------------------- compiled form

struct PluginStep {
    plugin: String,
    when: Option<Expr>,
    config: Value,
    optional: bool,
    /// Index into `RuleSet::files`: the file the step comes from.
    origin: usize,
}

struct DeriveStep {
    slot: usize,
    value: Expr,
    when: Option<Expr>,
}

enum LabelSource {
    Fixed(String),
    Dynamic(Expr),
}

struct ClassifyStep {
    labels: LabelSource,
    when: Option<Expr>,
}

struct TableStep {
    name: String,
    table: Name,
    when: Option<Expr>,
    for_each: Option<Expr>,
    where_: Option<Expr>,
    /// Column names are unique per rule and interned: a row copies a pointer.
    columns: Vec<(Name, Expr)>,
}

/// The steps of a rule pack, in the order they run on an entry, with the
/// variable slots their expressions were compiled against.
#[derive(Default)]
struct Program {
    slots: Slots,
    plugins: Vec<PluginStep>,
    derive: Vec<DeriveStep>,
    classify: Vec<ClassifyStep>,
    drop: Vec<Expr>,
    tables: Vec<TableStep>,
}

/// A loaded, validated rule pack.
pub struct RuleSet {
    env: Env,
    redactor: Redactor,
    program: Program,
    files: Vec<PathBuf>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleSet({})", self.summary())
    }
}

/// One entry, as the router hands it over.
#[derive(Default)]
pub struct EntryInput<'a> {
    pub doc: Value,
    pub project: &'a str,
    pub source_file: &'a str,
    pub offset: u64,
    /// RFC 3339 time for a line without a timestamp of its own (`$fallback_time`):
    /// the router gives the file's previous timestamp, or the file's mtime.
    pub fallback_time: Option<String>,
}

/// What the rules made of one entry.
#[derive(Debug, Default, Clone)]
pub struct Routed {
    pub rows: Vec<Row>,
    pub labels: Vec<String>,
    pub redactions: u32,
    pub dropped: bool,
}

impl RuleSet {
    /// Load every `*.yaml` / `*.yml` file of `dir` (sorted by name, so `00-` files
    /// come first) into one rule pack; every problem is reported, not just the first.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
        pack::RuleSource::dir_only(dir).load()
    }

    /// Build a rule pack from (file name, YAML text) pairs.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<RuleSet, RuleErrors> {
        compile::compile(sources)
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Names of plugins the rules call (for check-rules and start-up warnings).
    pub fn plugin_names(&self) -> Vec<(String, bool)> {
        let mut seen = HashSet::new();
        self.program
            .plugins
            .iter()
            .filter(|p| seen.insert(p.plugin.clone()))
            .map(|p| (p.plugin.clone(), p.optional))
            .collect()
    }

    /// (rule name, target table) of every table rule, in order.
    pub fn table_rules(&self) -> Vec<(String, String)> {
        self.program
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.table.to_string()))
            .collect()
    }

    /// Table → columns the rules write (for schema checks).
    pub fn table_columns(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for t in &self.program.tables {
            let cols = out.entry(t.table.to_string()).or_default();
            for (c, _) in &t.columns {
                if !cols.iter().any(|x| **x == **c) {
                    cols.push(c.to_string());
                }
            }
        }
        out
    }

    pub fn summary(&self) -> String {
        let p = &self.program;
        format!(
            "{} files: {} redact patterns, {} plugin steps, {} derived fields, {} classifiers, {} table rules",
            self.files.len(),
            self.redactor.len(),
            p.plugins.len(),
            p.derive.len(),
            p.classify.len(),
            p.tables.len()
        )
    }

    /// The compiled redaction patterns (for the redaction report).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Redact secrets in free text (used for dead-letter raw lines).
    pub fn redact_text(&self, text: &str) -> (String, usize) {
        let mut hits = Vec::new();
        match self.redactor.redact_str(text, &mut hits) {
            Some(t) => (t, hits.len()),
            None => (text.to_string(), 0),
        }
    }
}

/// `check-rules`: load a directory and report. Returns the loaded set.
pub fn check_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
    RuleSet::load_dir(dir)
}

#[cfg(test)]
mod tests;
