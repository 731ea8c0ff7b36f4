//! Rule files → a [`RuleSet`]: everything is checked here, once, so applying
//! the rules to an entry cannot meet an unknown name. Pass 1 collects the
//! named things expressions refer to (prices, maps, glob lists, redaction
//! patterns) from all files; pass 2 compiles every step against them.

use super::expr::{Env, Expr, LookupMap};
use super::redact::{Pattern, Redactor};
use super::spec::{PluginSpec, RuleFile, TableSpec};
use super::{
    ClassifyStep, DeriveStep, LabelSource, PluginStep, Program, RuleError, RuleErrors, RuleSet,
    TableStep,
};
use crate::row::Name;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One parsed file: its name, its text (to find error lines) and its content.
type Parsed<'a> = (PathBuf, &'a str, RuleFile);

pub(super) fn compile(sources: &[(PathBuf, String)]) -> Result<RuleSet, RuleErrors> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (file, text) in sources {
        match serde_yaml::from_str::<Option<RuleFile>>(text) {
            Ok(rf) => parsed.push((file.clone(), text.as_str(), rf.unwrap_or_default())),
            Err(e) => errors.push(RuleError {
                file: file.clone(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
            }),
        }
    }
    let mut env = Env::default();
    let mut patterns = Vec::new();
    let mut pattern_names = HashSet::new();
    for p in &parsed {
        let mut at = At::new(p, &mut errors);
        named(&mut at, &p.2, &mut env, &mut patterns, &mut pattern_names);
    }
    let mut program = Program::default();
    for (origin, p) in parsed.iter().enumerate() {
        let mut c = FileCompiler {
            at: At::new(p, &mut errors),
            origin,
            env: &env,
            program: &mut program,
        };
        c.file(&p.2);
    }
    let files: Vec<PathBuf> = parsed.into_iter().map(|(f, _, _)| f).collect();
    let redactor = Redactor::new(patterns).unwrap_or_else(|e| {
        errors.push(RuleError {
            file: files.first().cloned().unwrap_or_default(),
            line: None,
            message: format!("redact patterns: {e}"),
        });
        Redactor::default()
    });
    if !errors.is_empty() {
        return Err(RuleErrors(errors));
    }
    Ok(RuleSet {
        env,
        redactor,
        program,
        files,
    })
}

/// Where errors of one file go, with the line of the text they are about.
struct At<'a> {
    file: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<RuleError>,
}

impl<'a> At<'a> {
    fn new(p: &'a Parsed<'_>, errors: &'a mut Vec<RuleError>) -> Self {
        At {
            file: &p.0,
            text: p.1,
            errors,
        }
    }

    /// An error on the first line containing `needle` (if any).
    fn error(&mut self, needle: Option<&str>, message: String) {
        self.errors.push(RuleError {
            file: self.file.to_path_buf(),
            line: needle.and_then(|n| locate(self.text, n)),
            message,
        });
    }
}

/// First line (1-based) of `text` containing `needle` (or its first line).
fn locate(text: &str, needle: &str) -> Option<usize> {
    let first = needle.lines().find(|l| !l.trim().is_empty())?.trim();
    text.lines().position(|l| l.contains(first)).map(|i| i + 1)
}

// ---------------------------------------------------------------- pass 1

fn named(
    at: &mut At<'_>,
    rf: &RuleFile,
    env: &mut Env,
    patterns: &mut Vec<Pattern>,
    pattern_names: &mut HashSet<String>,
) {
    for p in &rf.pricing {
        if let Err(m) = env.pricing.insert(&p.model, p.price()) {
            at.error(Some(&p.model), m);
        }
    }
    for (name, m) in &rf.maps {
        let map: LookupMap = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if env.maps.insert(name.clone(), Arc::new(map)).is_some() {
            at.error(Some(name), format!("map `{name}` is defined twice"));
        }
    }
    for (name, list) in &rf.globs {
        if let Some(set) = glob_list(at, name, list) {
            if env.globs.insert(name.clone(), Arc::new(set)).is_some() {
                at.error(Some(name), format!("glob list `{name}` is defined twice"));
            }
        }
    }
    for r in &rf.redact {
        if !pattern_names.insert(r.name.clone()) {
            let message = format!("redact pattern `{}` is defined twice", r.name);
            at.error(Some(&r.name), message);
            continue;
        }
        match Pattern::compile(r) {
            Ok(p) => patterns.push(p),
            Err(e) => at.error(Some(&r.pattern), e),
        }
    }
}

fn glob_list(at: &mut At<'_>, name: &str, list: &[String]) -> Option<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for g in list {
        match globset::GlobBuilder::new(g)
            .literal_separator(false)
            .build()
        {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => at.error(Some(g), format!("bad glob `{g}` in `{name}`: {e}")),
        }
    }
    match b.build() {
        Ok(set) => Some(set),
        Err(e) => {
            at.error(Some(name), format!("glob list `{name}`: {e}"));
            None
        }
    }
}

// ---------------------------------------------------------------- pass 2

/// Compiles the steps of one file into the program.
struct FileCompiler<'a> {
    at: At<'a>,
    origin: usize,
    env: &'a Env,
    program: &'a mut Program,
}

/// `Err(())`: the problem is already recorded.
type Step<T> = Result<T, ()>;

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl FileCompiler<'_> {
    fn file(&mut self, rf: &RuleFile) {
        rf.plugins.iter().for_each(|p| self.plugin(p));
        for d in &rf.derive {
            let value = self.value(&d.value, &format!("derive `{}`", d.name));
            let when = self.opt(&d.when, &format!("derive `{}` when", d.name));
            if let (Ok(value), Ok(when)) = (value, when) {
                let slot = self.program.slots.slot(&d.name);
                self.program.derive.push(DeriveStep { slot, value, when });
            }
        }
        for c in &rf.classify {
            let labels = match (&c.label, &c.labels) {
                (Some(l), None) => Ok(LabelSource::Fixed(l.clone())),
                (None, Some(e)) => self.expr(e, "classify labels").map(LabelSource::Dynamic),
                _ => {
                    let message = "classify rule needs exactly one of `label` or `labels`";
                    self.at.error(c.when.as_deref(), message.into());
                    Err(())
                }
            };
            let when = self.opt(&c.when, "classify when");
            if let (Ok(labels), Ok(when)) = (labels, when) {
                self.program.classify.push(ClassifyStep { labels, when });
            }
        }
        for d in &rf.drop {
            if let Ok(e) = self.expr(&d.when, "drop when") {
                self.program.drop.push(e);
            }
        }
        for t in &rf.tables {
            if let Ok(step) = self.table(t) {
                self.program.tables.push(step);
            }
        }
    }

    fn expr(&mut self, src: &str, what: &str) -> Step<Expr> {
        Expr::compile(src, self.env, &mut self.program.slots)
            .map_err(|e| self.at.error(Some(src), format!("{what}: {e}")))
    }

    fn opt(&mut self, src: &Option<String>, what: &str) -> Step<Option<Expr>> {
        src.as_deref().map(|s| self.expr(s, what)).transpose()
    }

    /// A YAML string is an expression; any other YAML value a constant.
    fn value(&mut self, v: &Value, what: &str) -> Step<Expr> {
        match v {
            Value::String(s) => self.expr(s, what),
            other => Ok(Expr::literal(other.clone())),
        }
    }

    fn plugin(&mut self, p: &PluginSpec) {
        if let Ok(when) = self.opt(&p.when, &format!("plugin `{}` when", p.plugin)) {
            self.program.plugins.push(PluginStep {
                plugin: p.plugin.clone(),
                when,
                config: p.config.clone(),
                optional: p.optional,
                origin: self.origin,
            });
        }
    }

    fn table(&mut self, t: &TableSpec) -> Step<TableStep> {
        let name = t.name.clone().unwrap_or_else(|| t.table.clone());
        if !valid_ident(&t.table) {
            let message = format!("table name `{}` must match [A-Za-z_][A-Za-z0-9_]*", t.table);
            self.at.error(Some(&t.table), message);
            return Err(());
        }
        if t.where_.is_some() && t.for_each.is_none() {
            let message = format!("table rule `{name}`: `where` needs `for_each`");
            self.at.error(t.where_.as_deref(), message);
            return Err(());
        }
        let when = self.opt(&t.when, &format!("table rule `{name}` when"));
        let for_each = self.opt(&t.for_each, &format!("table rule `{name}` for_each"));
        let where_ = self.opt(&t.where_, &format!("table rule `{name}` where"));
        let columns = self.columns(&name, t);
        Ok(TableStep {
            when: when?,
            for_each: for_each?,
            where_: where_?,
            columns: columns?,
            name,
            table: Name::interned(&t.table),
        })
    }

    /// Every column is checked (all problems reported) before giving up.
    fn columns(&mut self, name: &str, t: &TableSpec) -> Step<Vec<(Name, Expr)>> {
        let mut columns = Vec::new();
        let mut ok = true;
        for (col, v) in &t.columns {
            if !valid_ident(col) {
                let message = format!("column name `{col}` must match [A-Za-z_][A-Za-z0-9_]*");
                self.at.error(Some(col), message);
                ok = false;
                continue;
            }
            match self.value(v, &format!("table rule `{name}` column `{col}`")) {
                Ok(e) => columns.push((Name::interned(col), e)),
                Err(()) => ok = false,
            }
        }
        if ok {
            Ok(columns)
        } else {
            Err(())
        }
    }
}
