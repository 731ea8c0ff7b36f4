//! Declarative YAML rules: redact, derive, classify, call plugins and map
//! entries to table rows. A format change is a rules edit, not a recompile.
//! The language is documented in `docs/RULES.md`.

pub mod expr;
pub mod pack;
pub mod pricing;
pub mod redact;
pub mod reload;

use crate::plugins::api::{PluginCaller, PluginError};
use crate::row::Row;
use expr::{Ctx, Env, Expr};
use pricing::{Price, Rates};
use redact::{Pattern, RedactSpec, Redactor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------- file model

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    pricing: Vec<PriceSpec>,
    #[serde(default)]
    maps: BTreeMap<String, Map<String, Value>>,
    #[serde(default)]
    globs: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    redact: Vec<RedactSpec>,
    #[serde(default)]
    plugins: Vec<PluginSpec>,
    #[serde(default)]
    derive: Vec<DeriveSpec>,
    #[serde(default)]
    classify: Vec<ClassifySpec>,
    #[serde(default)]
    drop: Vec<DropSpec>,
    #[serde(default)]
    tables: Vec<TableSpec>,
}

/// One model of `pricing:` (USD per million tokens), as
/// `scripts/refresh-pricing.py` writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceSpec {
    model: String,
    input: f64,
    output: f64,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    cache_write_1h: Option<f64>,
    #[serde(default)]
    cache_read: Option<f64>,
    #[serde(default)]
    context_window: Option<u64>,
    #[serde(default)]
    tier: Option<TierSpec>,
}

/// Long-context rates; a missing rate is the base one (a missing 1-hour
/// cache-write rate: the tier's 5-minute one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSpec {
    above_tokens: u64,
    #[serde(default)]
    input: Option<f64>,
    #[serde(default)]
    output: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    cache_write_1h: Option<f64>,
    #[serde(default)]
    cache_read: Option<f64>,
}

impl PriceSpec {
    fn price(&self) -> Price {
        let base = Rates {
            input: self.input,
            output: self.output,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            cache_read: self.cache_read,
        };
        let long_context = self.tier.as_ref().map(|t| {
            let rates = Rates {
                input: t.input.unwrap_or(base.input),
                output: t.output.unwrap_or(base.output),
                cache_write: t.cache_write.or(base.cache_write),
                cache_write_1h: t.cache_write_1h,
                cache_read: t.cache_read.or(base.cache_read),
            };
            (t.above_tokens, rates)
        });
        Price {
            base,
            long_context,
            context_window: self.context_window,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSpec {
    plugin: String,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    config: Value,
    /// Skip (with a warning) instead of dead-lettering when the plugin is not loaded.
    #[serde(default)]
    optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeriveSpec {
    name: String,
    value: Value,
    #[serde(default)]
    when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifySpec {
    #[serde(default)]
    label: Option<String>,
    /// An expression giving a label (string) or labels (array), for dynamic labels.
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropSpec {
    when: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    #[serde(default)]
    name: Option<String>,
    table: String,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    for_each: Option<String>,
    #[serde(rename = "where", default)]
    where_: Option<String>,
    columns: Map<String, Value>,
}

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

struct Origin {
    file: PathBuf,
}

struct PluginStep {
    plugin: String,
    when: Option<Expr>,
    config: Value,
    optional: bool,
    origin: usize,
}

struct DeriveStep {
    name: String,
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
    table: String,
    when: Option<Expr>,
    for_each: Option<Expr>,
    where_: Option<Expr>,
    columns: Vec<(String, Expr)>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleSet({})", self.summary())
    }
}

/// A loaded, validated rule pack.
pub struct RuleSet {
    env: Env,
    redactor: Redactor,
    plugins: Vec<PluginStep>,
    derive: Vec<DeriveStep>,
    classify: Vec<ClassifyStep>,
    drop: Vec<Expr>,
    tables: Vec<TableStep>,
    origins: Vec<Origin>,
    files: Vec<PathBuf>,
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

fn yaml_error(file: &Path, e: &serde_yaml::Error) -> RuleError {
    RuleError {
        file: file.to_path_buf(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    }
}

/// First line (1-based) of `text` containing `needle` (or its first line).
fn locate(text: &str, needle: &str) -> Option<usize> {
    let first = needle.lines().find(|l| !l.trim().is_empty())?.trim();
    text.lines().position(|l| l.contains(first)).map(|i| i + 1)
}

impl RuleSet {
    /// Load every `*.yaml` / `*.yml` file of `dir` (sorted by name, so `00-` files
    /// come first) into one rule pack; every problem is reported, not just the first.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
        pack::RuleSource::dir_only(dir).load()
    }

    /// Build a rule pack from (file name, YAML text) pairs.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<RuleSet, RuleErrors> {
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for (file, text) in sources {
            match serde_yaml::from_str::<Option<RuleFile>>(text) {
                Ok(rf) => parsed.push((file.clone(), text.as_str(), rf.unwrap_or_default())),
                Err(e) => errors.push(yaml_error(file, &e)),
            }
        }

        // Pass 1: the named things expressions refer to (from all files).
        let mut env = Env::default();
        let mut patterns = Vec::new();
        let mut pattern_names = HashSet::new();
        for (file, text, rf) in &parsed {
            let err = |needle: &str, message: String| RuleError {
                file: file.clone(),
                line: locate(text, needle),
                message,
            };
            for p in &rf.pricing {
                if let Err(m) = env.pricing.insert(&p.model, p.price()) {
                    errors.push(err(&p.model, m));
                }
            }
            for (name, m) in &rf.maps {
                if env.maps.insert(name.clone(), m.clone()).is_some() {
                    errors.push(err(name, format!("map `{name}` is defined twice")));
                }
            }
            for (name, list) in &rf.globs {
                let mut b = globset::GlobSetBuilder::new();
                for g in list {
                    match globset::GlobBuilder::new(g)
                        .literal_separator(false)
                        .build()
                    {
                        Ok(g) => {
                            b.add(g);
                        }
                        Err(e) => errors.push(err(g, format!("bad glob `{g}` in `{name}`: {e}"))),
                    }
                }
                match b.build() {
                    Ok(set) => {
                        if env.globs.insert(name.clone(), set).is_some() {
                            errors.push(err(name, format!("glob list `{name}` is defined twice")));
                        }
                    }
                    Err(e) => errors.push(err(name, format!("glob list `{name}`: {e}"))),
                }
            }
            for r in &rf.redact {
                if !pattern_names.insert(r.name.clone()) {
                    errors.push(err(
                        &r.name,
                        format!("redact pattern `{}` is defined twice", r.name),
                    ));
                    continue;
                }
                match Pattern::compile(r) {
                    Ok(p) => patterns.push(p),
                    Err(e) => errors.push(err(&r.pattern, e)),
                }
            }
        }

        // Pass 2: everything with expressions.
        let errs = std::cell::RefCell::new(Vec::new());
        let mut rs = RuleSet {
            env,
            redactor: Redactor::default(),
            plugins: Vec::new(),
            derive: Vec::new(),
            classify: Vec::new(),
            drop: Vec::new(),
            tables: Vec::new(),
            origins: Vec::new(),
            files: parsed.iter().map(|(f, _, _)| f.clone()).collect(),
        };
        for (file, text, rf) in &parsed {
            let origin = rs.origins.len();
            rs.origins.push(Origin { file: file.clone() });
            let env = &rs.env;
            let compile = |src: &str, what: &str| -> Option<Expr> {
                match Expr::compile(src, env) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        errs.borrow_mut().push(RuleError {
                            file: file.clone(),
                            line: locate(text, src),
                            message: format!("{what}: {e}"),
                        });
                        None
                    }
                }
            };
            let opt = |src: &Option<String>, what: &str| -> Result<Option<Expr>, ()> {
                match src {
                    None => Ok(None),
                    Some(s) => compile(s, what).map(Some).ok_or(()),
                }
            };
            for p in &rf.plugins {
                if let Ok(when) = opt(&p.when, &format!("plugin `{}` when", p.plugin)) {
                    rs.plugins.push(PluginStep {
                        plugin: p.plugin.clone(),
                        when,
                        config: p.config.clone(),
                        optional: p.optional,
                        origin,
                    });
                }
            }
            for d in &rf.derive {
                let value = match &d.value {
                    Value::String(s) => compile(s, &format!("derive `{}`", d.name)),
                    other => Some(Expr::literal(other.clone())),
                };
                let when = opt(&d.when, &format!("derive `{}` when", d.name));
                if let (Some(value), Ok(when)) = (value, when) {
                    rs.derive.push(DeriveStep {
                        name: d.name.clone(),
                        value,
                        when,
                    });
                }
            }
            for c in &rf.classify {
                let labels = match (&c.label, &c.labels) {
                    (Some(l), None) => Some(LabelSource::Fixed(l.clone())),
                    (None, Some(e)) => compile(e, "classify labels").map(LabelSource::Dynamic),
                    _ => {
                        errs.borrow_mut().push(RuleError {
                            file: file.clone(),
                            line: c.when.as_deref().and_then(|w| locate(text, w)),
                            message: "classify rule needs exactly one of `label` or `labels`"
                                .into(),
                        });
                        None
                    }
                };
                let when = opt(&c.when, "classify when");
                if let (Some(labels), Ok(when)) = (labels, when) {
                    rs.classify.push(ClassifyStep { labels, when });
                }
            }
            for d in &rf.drop {
                if let Some(e) = compile(&d.when, "drop when") {
                    rs.drop.push(e);
                }
            }
            for t in &rf.tables {
                let name = t.name.clone().unwrap_or_else(|| t.table.clone());
                let valid_ident = |s: &str| {
                    !s.is_empty()
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !s.starts_with(|c: char| c.is_ascii_digit())
                };
                if !valid_ident(&t.table) {
                    errs.borrow_mut().push(RuleError {
                        file: file.clone(),
                        line: locate(text, &t.table),
                        message: format!(
                            "table name `{}` must match [A-Za-z_][A-Za-z0-9_]*",
                            t.table
                        ),
                    });
                    continue;
                }
                if t.where_.is_some() && t.for_each.is_none() {
                    errs.borrow_mut().push(RuleError {
                        file: file.clone(),
                        line: t.where_.as_deref().and_then(|w| locate(text, w)),
                        message: format!("table rule `{name}`: `where` needs `for_each`"),
                    });
                    continue;
                }
                let when = opt(&t.when, &format!("table rule `{name}` when"));
                let for_each = opt(&t.for_each, &format!("table rule `{name}` for_each"));
                let where_ = opt(&t.where_, &format!("table rule `{name}` where"));
                let mut columns = Vec::new();
                let mut ok = true;
                for (col, v) in &t.columns {
                    if !valid_ident(col) {
                        errs.borrow_mut().push(RuleError {
                            file: file.clone(),
                            line: locate(text, col),
                            message: format!(
                                "column name `{col}` must match [A-Za-z_][A-Za-z0-9_]*"
                            ),
                        });
                        ok = false;
                        continue;
                    }
                    let e = match v {
                        Value::String(s) => {
                            compile(s, &format!("table rule `{name}` column `{col}`"))
                        }
                        other => Some(Expr::literal(other.clone())),
                    };
                    match e {
                        Some(e) => columns.push((col.clone(), e)),
                        None => ok = false,
                    }
                }
                if let (true, Ok(when), Ok(for_each), Ok(where_)) = (ok, when, for_each, where_) {
                    rs.tables.push(TableStep {
                        name,
                        table: t.table.clone(),
                        when,
                        for_each,
                        where_,
                        columns,
                    });
                }
            }
        }
        errors.extend(errs.into_inner());
        match Redactor::new(patterns) {
            Ok(r) => rs.redactor = r,
            Err(e) => errors.push(RuleError {
                file: rs.files.first().cloned().unwrap_or_default(),
                line: None,
                message: format!("redact patterns: {e}"),
            }),
        }
        if errors.is_empty() {
            Ok(rs)
        } else {
            Err(RuleErrors(errors))
        }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Names of plugins the rules call (for check-rules and start-up warnings).
    pub fn plugin_names(&self) -> Vec<(String, bool)> {
        let mut seen = HashSet::new();
        self.plugins
            .iter()
            .filter(|p| seen.insert(p.plugin.clone()))
            .map(|p| (p.plugin.clone(), p.optional))
            .collect()
    }

    /// (rule name, target table) of every table rule, in order.
    pub fn table_rules(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|t| (t.name.clone(), t.table.clone()))
            .collect()
    }

    /// Table → columns the rules write (for schema checks).
    pub fn table_columns(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for t in &self.tables {
            let cols = out.entry(t.table.clone()).or_default();
            for (c, _) in &t.columns {
                if !cols.contains(c) {
                    cols.push(c.clone());
                }
            }
        }
        out
    }

    pub fn summary(&self) -> String {
        format!(
            "{} files: {} redact patterns, {} plugin steps, {} derived fields, {} classifiers, {} table rules",
            self.files.len(),
            self.redactor.len(),
            self.plugins.len(),
            self.derive.len(),
            self.classify.len(),
            self.tables.len()
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

    /// Run the rule pack on one entry.
    pub fn apply(
        &self,
        input: EntryInput<'_>,
        plugins: &dyn PluginCaller,
    ) -> Result<Routed, ApplyError> {
        let mut doc = input.doc;
        let mut hits = Vec::new();
        // 1. Secrets go first: nothing below (plugins, derived values, rows) sees them.
        self.redactor.redact_value(&mut doc, &mut hits);
        let mut redactions = hits.len();
        let mut labels: Vec<String> = Vec::new();
        for h in &hits {
            let l = format!("secret:{h}");
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        let mut vars = Map::new();
        vars.insert("project".into(), Value::from(input.project));
        vars.insert("source_file".into(), Value::from(input.source_file));
        vars.insert("offset".into(), Value::from(input.offset));
        let stem = Path::new(input.source_file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        vars.insert("session_file".into(), Value::from(stem));
        vars.insert(
            "entry_id".into(),
            Value::from(format!("{}:{}", input.source_file, input.offset)),
        );
        vars.insert(
            "fallback_time".into(),
            input.fallback_time.map_or(Value::Null, Value::from),
        );

        // 2. Plugins, in rule order.
        let mut plugin_rows = Vec::new();
        for step in &self.plugins {
            let run = match &step.when {
                None => true,
                Some(w) => w.truthy(&Ctx {
                    entry: &doc,
                    item: None,
                    index: None,
                    vars: &vars,
                    labels: &labels,
                    env: &self.env,
                }),
            };
            if !run {
                continue;
            }
            let payload = serde_json::json!({
                "entry": &doc,
                "project": input.project,
                "labels": &labels,
                "config": &step.config,
            });
            let bytes = serde_json::to_vec(&payload).unwrap_or_default();
            let out = match plugins.call(&step.plugin, &bytes) {
                Ok(o) => o,
                Err(PluginError::NotFound(_)) if step.optional => {
                    tracing::debug!(plugin = %step.plugin, "optional plugin not loaded; step skipped");
                    continue;
                }
                Err(error) => {
                    return Err(ApplyError::Plugin {
                        plugin: step.plugin.clone(),
                        file: self.origins[step.origin].file.display().to_string(),
                        error,
                    })
                }
            };
            if !out.redact.is_empty() {
                let n = redact::mask_literals(
                    &mut doc,
                    &out.redact,
                    &format!("[REDACTED:{}]", step.plugin),
                );
                redactions += n;
                if n > 0 {
                    let l = format!("secret:{}", step.plugin);
                    if !labels.contains(&l) {
                        labels.push(l);
                    }
                }
            }
            for l in out.labels {
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
            for (k, v) in out.set {
                vars.insert(k, v);
            }
            plugin_rows.extend(out.rows);
            if out.drop {
                return Ok(Routed {
                    rows: Vec::new(),
                    labels,
                    redactions: redactions as u32,
                    dropped: true,
                });
            }
        }
        vars.insert("redactions".into(), Value::from(redactions));

        // 3. Derived fields (each may use the ones before it).
        for d in &self.derive {
            let ctx = Ctx {
                entry: &doc,
                item: None,
                index: None,
                vars: &vars,
                labels: &labels,
                env: &self.env,
            };
            if d.when.as_ref().is_some_and(|w| !w.truthy(&ctx)) {
                continue;
            }
            let v = d.value.eval(&ctx).into_owned();
            vars.insert(d.name.clone(), v);
        }

        // 4. Labels.
        for c in &self.classify {
            let ctx = Ctx {
                entry: &doc,
                item: None,
                index: None,
                vars: &vars,
                labels: &labels,
                env: &self.env,
            };
            if c.when.as_ref().is_some_and(|w| !w.truthy(&ctx)) {
                continue;
            }
            let new: Vec<String> = match &c.labels {
                LabelSource::Fixed(l) => vec![l.clone()],
                LabelSource::Dynamic(e) => match e.eval(&ctx).as_ref() {
                    Value::String(s) if !s.is_empty() => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                },
            };
            for l in new {
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
        }
        vars.insert(
            "labels".into(),
            Value::Array(labels.iter().cloned().map(Value::from).collect()),
        );

        // 5. Drop rules.
        let ctx = Ctx {
            entry: &doc,
            item: None,
            index: None,
            vars: &vars,
            labels: &labels,
            env: &self.env,
        };
        if self.drop.iter().any(|d| d.truthy(&ctx)) {
            return Ok(Routed {
                rows: Vec::new(),
                labels,
                redactions: redactions as u32,
                dropped: true,
            });
        }

        // 6. Rows.
        let mut rows = Vec::new();
        for t in &self.tables {
            if t.when.as_ref().is_some_and(|w| !w.truthy(&ctx)) {
                continue;
            }
            match &t.for_each {
                None => rows.push(build_row(t, &ctx)),
                Some(fe) => {
                    let items = fe.eval(&ctx);
                    let list: &[Value] = match items.as_ref() {
                        Value::Array(a) => a,
                        _ => &[],
                    };
                    for (i, item) in list.iter().enumerate() {
                        let index = Value::from(i);
                        let ictx = Ctx {
                            entry: &doc,
                            item: Some(item),
                            index: Some(&index),
                            vars: &vars,
                            labels: &labels,
                            env: &self.env,
                        };
                        if t.where_.as_ref().is_some_and(|w| !w.truthy(&ictx)) {
                            continue;
                        }
                        rows.push(build_row(t, &ictx));
                    }
                }
            }
        }
        rows.extend(plugin_rows);
        Ok(Routed {
            rows,
            labels,
            redactions: redactions as u32,
            dropped: false,
        })
    }
}

fn build_row(t: &TableStep, ctx: &Ctx<'_>) -> Row {
    let mut row = Row::new(t.table.clone());
    for (col, e) in &t.columns {
        let v = e.eval(ctx);
        // Null means "let the column default apply".
        if !v.is_null() {
            row.columns.insert(col.clone(), v.into_owned());
        }
    }
    row
}

/// `check-rules`: load a directory and report. Returns the loaded set.
pub fn check_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
    RuleSet::load_dir(dir)
}

#[cfg(test)]
mod tests;
