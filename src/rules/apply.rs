//! Running the compiled program on one entry: redact, plugins, derive,
//! classify, drop, rows (docs/RULES.md, "Per entry, in this order").
//!
//! The entry's variables live in one vector indexed by the slots fixed at
//! load time, so no step hashes a name or copies the document; values are
//! cloned only into the rows that keep them.

use super::expr::{slot, Ctx, Env, Expr};
use super::redact;
use super::trace::Seen;
use super::{ApplyError, EntryInput, LabelSource, PluginStep, Routed, RuleSet, TableStep};
use crate::plugins::api::{PluginCaller, PluginError, PluginOutput};
use crate::row::{Columns, Row};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// One entry on its way through the rules.
struct State {
    doc: Value,
    vars: Vec<Value>,
    labels: Vec<String>,
    redactions: usize,
}

impl State {
    /// The context of the plugin steps: the document may still change, so
    /// its paths are walked, not resolved once.
    fn ctx<'a>(&'a self, env: &'a Env) -> Ctx<'a> {
        Ctx {
            entry: &self.doc,
            item: None,
            index: None,
            vars: &self.vars,
            labels: &self.labels,
            env,
            paths: &[],
        }
    }

    fn holds(&self, when: &Option<Expr>, env: &Env) -> bool {
        when.as_ref().is_none_or(|w| w.truthy(&self.ctx(env)))
    }

    fn add_label(&mut self, l: String) {
        add_label(&mut self.labels, l);
    }

    fn finish(self, rows: Vec<Row>, dropped: bool, seen: Option<&mut Seen>) -> Routed {
        if let Some(seen) = seen {
            seen.doc = self.doc;
            seen.vars = self.vars;
        }
        Routed {
            rows,
            labels: self.labels,
            redactions: self.redactions as u32,
            dropped,
        }
    }
}

/// The final document of an entry with its paths resolved once.
struct Resolved<'a> {
    doc: &'a Value,
    paths: &'a [&'a Value],
    env: &'a Env,
}

impl<'a> Resolved<'a> {
    fn ctx<'b>(&'b self, vars: &'b [Value], labels: &'b [String]) -> Ctx<'b> {
        Ctx {
            entry: self.doc,
            item: None,
            index: None,
            vars,
            labels,
            env: self.env,
            paths: self.paths,
        }
    }
}

/// What a plugin step gets (serialised straight from the entry, no copy).
#[derive(Serialize)]
struct Payload<'a> {
    entry: &'a Value,
    project: &'a str,
    labels: &'a [String],
    config: &'a Value,
}

impl RuleSet {
    /// Run the rule pack on one entry.
    pub fn apply(
        &self,
        input: EntryInput<'_>,
        plugins: &dyn PluginCaller,
    ) -> Result<Routed, ApplyError> {
        self.apply_observed(input, plugins, None)
    }

    /// [`RuleSet::apply`], leaving the entry's final document and variables in
    /// `seen` (for `try`; the router passes `None`, which costs nothing).
    pub(super) fn apply_observed(
        &self,
        input: EntryInput<'_>,
        plugins: &dyn PluginCaller,
        seen: Option<&mut Seen>,
    ) -> Result<Routed, ApplyError> {
        let project = input.project;
        let mut st = self.start(input);
        let mut plugin_rows = Vec::new();
        if self.run_plugins(&mut st, project, plugins, &mut plugin_rows)? {
            return Ok(st.finish(Vec::new(), true, seen));
        }
        st.vars[slot::REDACTIONS] = Value::from(st.redactions);
        let (mut rows, dropped) = self.entry_rows(&st.doc, &mut st.vars, &mut st.labels);
        if !dropped {
            rows.extend(plugin_rows);
        }
        Ok(st.finish(rows, dropped, seen))
    }

    /// Derive, classify, drop and the table rules on the final document; true
    /// when a drop rule drops the entry.
    fn entry_rows(
        &self,
        doc: &Value,
        vars: &mut [Value],
        labels: &mut Vec<String>,
    ) -> (Vec<Row>, bool) {
        let mut paths = Vec::with_capacity(self.program.slots.paths_len());
        self.program.slots.resolve_paths(doc, &mut paths);
        let entry = Resolved {
            doc,
            paths: &paths,
            env: &self.env,
        };
        for d in &self.program.derive {
            let ctx = entry.ctx(vars, labels);
            if d.when.as_ref().is_none_or(|w| w.truthy(&ctx)) {
                let v = d.value.eval(&ctx).into_owned();
                vars[d.slot] = v;
            }
        }
        for c in &self.program.classify {
            let ctx = entry.ctx(vars, labels);
            if c.when.as_ref().is_none_or(|w| w.truthy(&ctx)) {
                let new = c.labels.of(&ctx);
                new.into_iter().for_each(|l| add_label(labels, l));
            }
        }
        vars[slot::LABELS] = Value::Array(labels.iter().cloned().map(Value::from).collect());
        let ctx = entry.ctx(vars, labels);
        if self.program.drop.iter().any(|d| d.truthy(&ctx)) {
            return (Vec::new(), true);
        }
        let mut rows = Vec::new();
        for t in &self.program.tables {
            t.rows(&ctx, &mut rows);
        }
        (rows, false)
    }

    /// Redaction (first: nothing below sees a secret) and the builtin variables.
    fn start(&self, input: EntryInput<'_>) -> State {
        let mut doc = input.doc;
        let mut hits = Vec::new();
        self.redactor.redact_value(&mut doc, &mut hits);
        let mut st = State {
            doc,
            vars: vec![Value::Null; self.program.slots.len()],
            labels: Vec::new(),
            redactions: hits.len(),
        };
        for h in hits {
            st.add_label(format!("secret:{h}"));
        }
        let stem = Path::new(input.source_file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let vars = &mut st.vars;
        vars[slot::PROJECT] = Value::from(input.project);
        vars[slot::SOURCE_FILE] = Value::from(input.source_file);
        vars[slot::OFFSET] = Value::from(input.offset);
        vars[slot::SESSION_FILE] = Value::from(stem);
        vars[slot::ENTRY_ID] = Value::from(format!("{}:{}", input.source_file, input.offset));
        vars[slot::FALLBACK_TIME] = input.fallback_time.map_or(Value::Null, Value::from);
        st
    }

    /// The plugin steps in rule order; true when one dropped the entry.
    fn run_plugins(
        &self,
        st: &mut State,
        project: &str,
        plugins: &dyn PluginCaller,
        rows: &mut Vec<Row>,
    ) -> Result<bool, ApplyError> {
        for step in &self.program.plugins {
            // An optional step whose plugin is not loaded is skipped before its
            // `when` runs: the outcome is the same, without the work.
            if (step.optional && !plugins.has(&step.plugin)) || !st.holds(&step.when, &self.env) {
                continue;
            }
            let Some(out) = self.call_plugin(step, st, project, plugins)? else {
                continue;
            };
            if self.absorb(step, st, out, rows) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Call one plugin; `None` when it is optional and not loaded.
    fn call_plugin(
        &self,
        step: &PluginStep,
        st: &State,
        project: &str,
        plugins: &dyn PluginCaller,
    ) -> Result<Option<PluginOutput>, ApplyError> {
        let payload = Payload {
            entry: &st.doc,
            project,
            labels: &st.labels,
            config: &step.config,
        };
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        match plugins.call(&step.plugin, &bytes) {
            Ok(o) => Ok(Some(o)),
            Err(PluginError::NotFound(_)) if step.optional => {
                tracing::debug!(plugin = %step.plugin, "optional plugin not loaded; step skipped");
                Ok(None)
            }
            Err(error) => Err(ApplyError::Plugin {
                plugin: step.plugin.clone(),
                file: self.files[step.origin].display().to_string(),
                error,
            }),
        }
    }

    /// Take a plugin's output into the entry; true when it drops the entry.
    fn absorb(
        &self,
        step: &PluginStep,
        st: &mut State,
        out: PluginOutput,
        rows: &mut Vec<Row>,
    ) -> bool {
        if !out.redact.is_empty() {
            let marker = format!("[REDACTED:{}]", step.plugin);
            let n = redact::mask_literals(&mut st.doc, &out.redact, &marker);
            st.redactions += n;
            if n > 0 {
                st.add_label(format!("secret:{}", step.plugin));
            }
        }
        for l in out.labels {
            st.add_label(l);
        }
        // A name no rule mentions has no slot: nothing could read it.
        for (k, v) in out.set {
            if let Some(i) = self.program.slots.get(&k) {
                st.vars[i] = v;
            }
        }
        rows.extend(out.rows);
        out.drop
    }
}

/// Add `l` unless the entry has it already.
fn add_label(labels: &mut Vec<String>, l: String) {
    if !labels.contains(&l) {
        labels.push(l);
    }
}

impl LabelSource {
    /// The labels this classify step gives the entry.
    fn of(&self, ctx: &Ctx<'_>) -> Vec<String> {
        match self {
            LabelSource::Fixed(l) => vec![l.clone()],
            LabelSource::Dynamic(e) => dynamic_labels(e, ctx),
        }
    }
}

/// The labels a `labels:` expression gives: a string or an array of strings.
fn dynamic_labels(e: &Expr, ctx: &Ctx<'_>) -> Vec<String> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match e.eval(ctx).as_ref() {
        Value::String(s) => nonempty(s).into_iter().collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().and_then(nonempty))
            .collect(),
        _ => Vec::new(),
    }
}

impl TableStep {
    /// This rule's rows for the entry (none, one, or one per `for_each` item).
    fn rows(&self, ctx: &Ctx<'_>, out: &mut Vec<Row>) {
        if self.when.as_ref().is_some_and(|w| !w.truthy(ctx)) {
            return;
        }
        let Some(fe) = &self.for_each else {
            out.push(self.row(ctx));
            return;
        };
        let items = fe.eval(ctx);
        let Value::Array(list) = items.as_ref() else {
            return;
        };
        for (i, item) in list.iter().enumerate() {
            let index = Value::from(i);
            let ictx = Ctx {
                item: Some(item),
                index: Some(&index),
                ..*ctx
            };
            if self.where_.as_ref().is_none_or(|w| w.truthy(&ictx)) {
                out.push(self.row(&ictx));
            }
        }
    }

    fn row(&self, ctx: &Ctx<'_>) -> Row {
        let mut columns = Columns::with_capacity(self.columns.len());
        for (col, e) in &self.columns {
            let v = e.eval(ctx);
            // Null means "let the column default apply".
            if !v.is_null() {
                columns.push_unique(col.clone(), v.into_owned());
            }
        }
        Row {
            table: self.table.clone(),
            columns,
        }
    }
}
