//! `claude-ingest try FILE[:LINE[-LINE]]`: run entries through the rule pack
//! and plugins in effect (the same resolution as `ingest`) and show what
//! would be stored, without storing anything: derived values, labels,
//! redactions (where and by which rule, never the secret), plugin calls with
//! their time and fuel, and the rows per table. The way to see a rule edit's
//! effect on a real line before it reaches ClickHouse.

use crate::config::Config;
use crate::parse::parse_line;
use crate::pipeline::{plugin_limits, FallbackClock};
use crate::plugins::api::{CallCost, PluginCaller, PluginError, PluginOutput};
use crate::plugins::PluginsHandle;
use crate::row::Columns;
use crate::rules::trace::Masked;
use crate::rules::{EntryInput, RuleSet};
use anyhow::{anyhow, bail, Context, Result};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Longest value the readable output shows before cutting it (JSON has all).
const MAX_SHOWN: usize = 100;

#[derive(clap::Args, Debug)]
pub struct TryArgs {
    /// FILE (every line), FILE:LINE or FILE:FIRST-LAST (lines count from 1).
    #[arg(required = true, value_name = "FILE[:LINE[-LINE]]")]
    pub targets: Vec<String>,
    /// One JSON document (an array with an object per entry) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A file and the lines of it to try (1-based, inclusive; `None` = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub file: PathBuf,
    pub lines: Option<(usize, usize)>,
}

impl Target {
    /// `FILE`, `FILE:N` or `FILE:N-M`; a suffix that is not a line range is
    /// part of the file name.
    pub fn parse(arg: &str) -> Result<Target> {
        let whole = || Target {
            file: PathBuf::from(arg),
            lines: None,
        };
        let Some((file, range)) = arg.rsplit_once(':') else {
            return Ok(whole());
        };
        let num = |s: &str| s.parse::<usize>().ok();
        let lines = match range.split_once('-') {
            Some((a, b)) => num(a).zip(num(b)),
            None => num(range).map(|n| (n, n)),
        };
        match lines {
            None => Ok(whole()),
            Some((a, b)) if a == 0 || b < a => {
                bail!("{arg}: lines count from 1 and a range is FIRST-LAST with FIRST <= LAST")
            }
            Some(range) => Ok(Target {
                file: PathBuf::from(file),
                lines: Some(range),
            }),
        }
    }
}

/// One plugin call as `try` shows it.
#[derive(Debug, Serialize)]
pub struct PluginCall {
    pub plugin: String,
    pub input_bytes: usize,
    /// Wall time of the call, in microseconds.
    pub micros: u64,
    #[serde(flatten)]
    pub cost: Option<CallCost>,
    /// What the plugin returned (redacted strings only counted), or its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CallOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CallOutput {
    pub labels: Vec<String>,
    pub set: Vec<String>,
    pub redact: usize,
    pub rows: usize,
    pub drop: bool,
}

impl From<&PluginOutput> for CallOutput {
    fn from(o: &PluginOutput) -> Self {
        CallOutput {
            labels: o.labels.clone(),
            set: o.set.keys().cloned().collect(),
            redact: o.redact.len(),
            rows: o.rows.len(),
            drop: o.drop,
        }
    }
}

/// Records every call it passes on, with its time and cost.
struct Recorder<'a> {
    inner: &'a dyn PluginCaller,
    calls: Mutex<Vec<PluginCall>>,
}

impl PluginCaller for Recorder<'_> {
    fn call(&self, name: &str, input: &[u8]) -> Result<PluginOutput, PluginError> {
        let t0 = Instant::now();
        let (result, cost) = self.inner.call_measured(name, input);
        let call = PluginCall {
            plugin: name.to_string(),
            input_bytes: input.len(),
            micros: u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
            cost,
            output: result.as_ref().ok().map(CallOutput::from),
            error: result.as_ref().err().map(ToString::to_string),
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
        result
    }

    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
}

/// What happened to one line (also the `--json` shape).
#[derive(Debug, Serialize)]
pub struct EntryReport {
    pub file: String,
    pub line: usize,
    pub offset: u64,
    pub project: String,
    #[serde(rename = "type")]
    pub entry_type: Option<String>,
    /// `routed`, `dropped` or `dead_letter`.
    pub outcome: &'static str,
    /// Why the line would be a dead letter (stage: parse or rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub redactions: Vec<Masked>,
    pub labels: Vec<String>,
    /// In the rules' slot order (what `try` is read for: the order written).
    pub derived: IndexMap<String, Value>,
    pub plugins: Vec<PluginCall>,
    /// Table → its rows, tables in the order their first row came, columns
    /// in the order the rule wrote them.
    pub rows: IndexMap<String, Vec<Columns>>,
}

/// The rule pack and plugins in effect, loaded once for every target.
pub struct Trial {
    rules: RuleSet,
    plugins: PluginsHandle,
    root: PathBuf,
}

impl Trial {
    pub fn load(cfg: &Config) -> Result<Trial> {
        let source = cfg.rule_source();
        let rules = source
            .load()
            .map_err(|e| anyhow!("{e}\nrules in {} do not load", source.describe()))?;
        let (plugins, rejected) = PluginsHandle::load(&cfg.plugins_dir, plugin_limits(cfg))?;
        for r in &rejected {
            eprintln!("warning: plugin {r}");
        }
        Ok(Trial {
            rules,
            plugins,
            root: cfg.root.clone(),
        })
    }

    /// Every selected line of `target`, tried in file order.
    pub fn run(&self, target: &Target) -> Result<Vec<EntryReport>> {
        let bytes = std::fs::read(&target.file)
            .with_context(|| format!("cannot read {}", target.file.display()))?;
        let path = std::path::absolute(&target.file).unwrap_or_else(|_| target.file.clone());
        let lines = split_lines(&bytes);
        let (first, last) = target.lines.unwrap_or((1, lines.len()));
        if last > lines.len() {
            bail!(
                "{} has {} lines; asked for line {last}",
                target.file.display(),
                lines.len()
            );
        }
        let project = self.project_of(&path);
        // Lines before the range feed the clock, as when the engine reads the file.
        let mut clock = FallbackClock::default();
        let mut out = Vec::new();
        for (i, &(offset, line)) in lines.iter().enumerate().take(last) {
            let number = i + 1;
            let blank = line.iter().all(u8::is_ascii_whitespace);
            if number < first || blank {
                if let Ok(e) = parse_line(line) {
                    clock.time_for(&path, &e.raw);
                }
                continue;
            }
            out.push(self.one(&path, &project, number, offset, line, &mut clock));
        }
        Ok(out)
    }

    fn one(
        &self,
        path: &Path,
        project: &str,
        number: usize,
        offset: u64,
        line: &[u8],
        clock: &mut FallbackClock,
    ) -> EntryReport {
        let source_file = path.to_string_lossy();
        let mut report = EntryReport {
            file: source_file.to_string(),
            line: number,
            offset,
            project: project.to_string(),
            entry_type: None,
            outcome: "dead_letter",
            error: None,
            redactions: Vec::new(),
            labels: Vec::new(),
            derived: IndexMap::new(),
            plugins: Vec::new(),
            rows: IndexMap::new(),
        };
        let entry = match parse_line(line) {
            Ok(e) => e,
            Err(e) => {
                report.error = Some(format!("parse: {e}"));
                return report;
            }
        };
        report.entry_type = entry
            .raw
            .get("type")
            .and_then(Value::as_str)
            .map(String::from);
        let recorder = Recorder {
            inner: &self.plugins,
            calls: Mutex::new(Vec::new()),
        };
        let input = EntryInput {
            fallback_time: clock.time_for(path, &entry.raw),
            doc: entry.raw,
            project,
            source_file: &source_file,
            offset,
        };
        let trace = self.rules.trace(input, &recorder);
        report.plugins = recorder
            .calls
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        report.redactions = trace.masked;
        report.derived = trace.derived.into_iter().collect();
        match trace.routed {
            Ok(routed) => {
                report.outcome = if routed.dropped { "dropped" } else { "routed" };
                report.labels = routed.labels;
                for row in routed.rows {
                    report
                        .rows
                        .entry(row.table.to_string())
                        .or_default()
                        .push(row.columns);
                }
            }
            Err(e) => report.error = Some(format!("rules: {e}")),
        }
        report
    }

    /// The project as the engine names it: the first directory under the
    /// projects root, else (a file elsewhere) the file's directory name.
    fn project_of(&self, path: &Path) -> String {
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let under_root = path
            .strip_prefix(&root)
            .ok()
            .and_then(|r| r.components().next())
            .filter(|_| path.parent() != Some(root.as_path()));
        under_root
            .map(|c| c.as_os_str())
            .or_else(|| path.parent().and_then(Path::file_name))
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Lines of a file with their byte offsets (a last line without `\n` counts).
fn split_lines(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        out.push((start as u64, &bytes[start..i]));
        start = i + 1;
    }
    if start < bytes.len() {
        out.push((start as u64, &bytes[start..]));
    }
    out
}

/// `try`: prints every report; false when a line would be dead-lettered.
pub fn run(cfg: &Config, args: &TryArgs) -> Result<bool> {
    let targets: Vec<Target> = args
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<_>>()?;
    let trial = Trial::load(cfg)?;
    let mut reports = Vec::new();
    for t in &targets {
        reports.extend(trial.run(t)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print!("{}", render(r));
        }
    }
    Ok(reports.iter().all(|r| r.error.is_none()))
}

/// The readable form of one report.
pub fn render(r: &EntryReport) -> String {
    let mut s = String::new();
    let kind = r.entry_type.as_deref().unwrap_or("?");
    let _ = writeln!(
        s,
        "== {}:{} (offset {}, project {}, type {kind}): {}",
        r.file, r.line, r.offset, r.project, r.outcome
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "error: {e}");
    }
    let _ = writeln!(
        s,
        "redactions:{}",
        if r.redactions.is_empty() { " none" } else { "" }
    );
    for m in &r.redactions {
        let by: Vec<String> = m.by.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let _ = writeln!(s, "  {}: {}", m.path, by.join(", "));
    }
    let _ = writeln!(s, "labels: {}", list_or_none(&r.labels));
    let _ = writeln!(
        s,
        "derived:{}",
        if r.derived.is_empty() { " none" } else { "" }
    );
    for (k, v) in &r.derived {
        let _ = writeln!(s, "  ${k} = {}", short(v));
    }
    let _ = writeln!(
        s,
        "plugins:{}",
        if r.plugins.is_empty() {
            " none called"
        } else {
            ""
        }
    );
    for c in &r.plugins {
        let _ = writeln!(s, "  {}", render_call(c));
    }
    let n: usize = r.rows.values().map(Vec::len).sum();
    let _ = writeln!(s, "rows: {n}");
    for (table, rows) in &r.rows {
        for row in rows {
            let _ = writeln!(s, "  {table}");
            for (k, v) in row.iter() {
                let _ = writeln!(s, "    {k} = {}", short(v));
            }
        }
    }
    s
}

fn render_call(c: &PluginCall) -> String {
    let mut s = format!(
        "{} ({} B in): {:.3} ms",
        c.plugin,
        c.input_bytes,
        c.micros as f64 / 1000.0
    );
    if let Some(cost) = &c.cost {
        let _ = write!(
            s,
            ", fuel {}, memory {} KiB",
            cost.fuel,
            cost.memory_peak.div_ceil(1024)
        );
        if cost.attempts > 1 {
            let _ = write!(s, ", retried");
        }
    }
    if let Some(o) = &c.output {
        let _ = write!(
            s,
            " -> labels {}, set {}, redact {}, rows {}{}",
            list_or_none(&o.labels),
            list_or_none(&o.set),
            o.redact,
            o.rows,
            if o.drop { ", drop" } else { "" }
        );
    }
    if let Some(e) = &c.error {
        let _ = write!(s, " -> error: {e}");
    }
    s
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// A value as compact JSON, cut to [`MAX_SHOWN`] characters.
fn short(v: &Value) -> String {
    let text = v.to_string();
    let chars = text.chars().count();
    if chars <= MAX_SHOWN {
        return text;
    }
    let cut: String = text.chars().take(MAX_SHOWN).collect();
    format!("{cut}… ({chars} chars)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_lines_and_ranges() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(t("a.jsonl").lines, None);
        assert_eq!(t("a.jsonl:3").lines, Some((3, 3)));
        assert_eq!(
            t("a.jsonl:3-7"),
            Target {
                file: "a.jsonl".into(),
                lines: Some((3, 7))
            }
        );
        assert_eq!(t("dir:x/a.jsonl").file, PathBuf::from("dir:x/a.jsonl"));
        assert!(Target::parse("a.jsonl:0").is_err());
        assert!(Target::parse("a.jsonl:5-2").is_err());
    }

    #[test]
    fn lines_keep_their_offsets_and_a_last_line_without_newline() {
        let lines = split_lines(b"ab\n\ncd");
        assert_eq!(lines, vec![(0, &b"ab"[..]), (3, &b""[..]), (4, &b"cd"[..])]);
    }

    #[test]
    fn long_values_are_cut_for_reading() {
        let v = Value::from("x".repeat(300));
        let s = short(&v);
        assert!(s.ends_with("… (302 chars)"), "{s}");
    }
}
