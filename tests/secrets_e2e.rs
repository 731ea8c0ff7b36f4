//! The secrets corpus (tests/fixtures/secrets, written by its generate.py)
//! through the whole pipeline into the real ClickHouse: no secret of any kind
//! may be stored in any column of any table of the database, dead letters
//! included, while ordinary code and prose next to them is stored unchanged.
//!
//! `redaction_report` (ignored: a measurement, not a check) prints every hit of
//! the rule pack on real logs and the corpus recall; see docs/REDACTION.md.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::rules::redact::Redactor;
use claude_ingest::rules::RuleSet;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpus() -> Value {
    let path = repo().join("tests/fixtures/secrets/SECRETS.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("SECRETS.json is JSON")
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("SECRETS.json: {key}"))
        .iter()
        .map(|s| {
            s.as_str()
                .map_or_else(|| s["secret"].to_string(), str::to_string)
        })
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

/// Every column of every table of the test database, each as one text blob
/// (`toString` of each value, unescaped), keyed by `table.column`.
async fn all_columns(ch: &claude_ingest::sink::clickhouse::ChClient) -> BTreeMap<String, String> {
    let cols = ch
        .query_json(
            "SELECT c.table AS t, c.name AS c FROM system.columns AS c
             INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
             WHERE c.database = currentDatabase() AND t.engine != 'MaterializedView'",
            &[],
        )
        .await
        .expect("system.columns");
    assert!(cols.len() > 20, "columns found: {}", cols.len());
    let mut out = BTreeMap::new();
    for row in cols {
        let (t, c) = (row["t"].as_str().unwrap(), row["c"].as_str().unwrap());
        let sql = format!("SELECT toString(`{c}`) FROM `{t}`");
        let bytes = ch
            .query_bytes(&sql, &[], "TabSeparatedRaw")
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
        out.insert(
            format!("{t}.{c}"),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_the_corpus_is_stored_anywhere() {
    let exp = corpus();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config(
        "secrets",
        &repo().join("tests/fixtures/secrets/projects"),
        state.path(),
    );
    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    assert_eq!(summary.lines, exp["lines"].as_u64().unwrap(), "{summary}");
    assert_eq!(
        summary.dead_letters,
        exp["malformed_lines"].as_u64().unwrap()
    );
    let kinds = exp["secrets"].as_array().unwrap().len() as u64;
    assert!(summary.redactions >= kinds, "{summary}");

    let columns = all_columns(&ch).await;
    let mut leaks = Vec::new();
    for s in strings(&exp, "secrets") {
        // JSON-escaped too: a column may hold JSON text (tool inputs, raw lines)
        let escaped = serde_json::to_string(&s).unwrap();
        for (col, text) in &columns {
            if text.contains(&s) || text.contains(escaped.trim_matches('"')) {
                leaks.push(format!("{s} in {col}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets stored:\n{}", leaks.join("\n"));

    // the dead letters are there, redacted rather than dropped
    let dead = &columns["claude_dead_letters.raw_line"];
    assert_eq!(
        dead.matches("[REDACTED:").count() as u64,
        exp["malformed_lines"].as_u64().unwrap(),
        "{dead}"
    );
    assert!(dead.contains("[REDACTED:email_mask]"), "{dead}");
    // structured tool inputs: redacted by key name, label per pattern
    let labels = &columns["claude_messages.labels"];
    for l in [
        "secret:secret_field",
        "secret:private_key",
        "secret:email_mask",
        "secret:curl_user",
    ] {
        assert!(labels.contains(l), "label {l} missing");
    }
    // ordinary code and prose next to the secrets: stored byte for byte
    // (Write inputs are stored as JSON text in claude_tool_usage.parameters)
    let params = &columns["claude_tool_usage.parameters"];
    for text in strings(&exp, "untouched") {
        let json = serde_json::to_string(&text).unwrap();
        assert!(
            params.contains(json.trim_matches('"')),
            "ordinary text changed or lost: {text}"
        );
    }
    ch.drop_database().await.unwrap();
}

// ------------------------------------------------------------------ report

/// Every `*.jsonl` under `dir`.
fn jsonl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            jsonl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "jsonl") {
            out.push(p);
        }
    }
}

/// Walk a parsed entry: every string value (and key/value pair) is scanned.
fn scan_value(
    r: &Redactor,
    v: &Value,
    key: Option<&str>,
    out: &mut Vec<(String, String)>,
) -> usize {
    match v {
        Value::String(s) => {
            if let Some(name) = key.and_then(|k| r.explain_key(k, s)) {
                out.push((name, format!("{}: {s}", key.unwrap_or_default())));
                return 1;
            }
            out.extend(r.explain(s));
            1
        }
        Value::Array(a) => a.iter().map(|x| scan_value(r, x, None, out)).sum(),
        Value::Object(m) => m.iter().map(|(k, x)| scan_value(r, x, Some(k), out)).sum(),
        _ => 0,
    }
}

/// What the rule pack would replace on real logs, hit by hit, for a human to
/// judge; then the recall on the secrets corpus. Directories from
/// REDACTION_REPORT_DIRS (`:`-separated), default ../shared/real-logs and the
/// example corpus; rules from REDACTION_RULES (default rules/).
#[test]
#[ignore = "a measurement: cargo test --test secrets_e2e redaction_report -- --ignored --nocapture"]
fn redaction_report() {
    let rules =
        std::env::var("REDACTION_RULES").map_or_else(|_| repo().join("rules"), PathBuf::from);
    let rs = RuleSet::load_dir(&rules).unwrap_or_else(|e| panic!("{e}"));
    let r = rs.redactor();
    let dirs = std::env::var("REDACTION_REPORT_DIRS").unwrap_or_else(|_| {
        format!(
            "/work/shared/real-logs/projects:{}",
            repo().join("examples/claude-projects").display()
        )
    });
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let mut files = Vec::new();
        jsonl_files(Path::new(dir), &mut files);
        let (mut lines, mut strings, mut per) = (0usize, 0usize, BTreeMap::<String, usize>::new());
        println!("## {dir}: {} files", files.len());
        for f in &files {
            let text = std::fs::read(f).unwrap_or_default();
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                lines += 1;
                let mut hits = Vec::new();
                match serde_json::from_slice::<Value>(line) {
                    Ok(v) => strings += scan_value(r, &v, None, &mut hits),
                    Err(_) => {
                        strings += 1;
                        hits.extend(r.explain(&String::from_utf8_lossy(line)));
                    }
                }
                for (name, m) in hits {
                    *per.entry(name.clone()).or_default() += 1;
                    let short: String = m.chars().take(100).collect();
                    println!("HIT\t{name}\t{}:{}\t{short:?}", f.display(), i + 1);
                }
            }
        }
        println!(
            "TOTAL\t{dir}\tlines={lines}\tstrings={strings}\thits={}\t{per:?}",
            per.values().sum::<usize>()
        );
    }
    // ordinary source files (third-party code: what Read results and Write
    // inputs carry), each whole file one string, as in a tool result
    let code = std::env::var("REDACTION_REPORT_CODE").unwrap_or_default();
    for dir in code.split(':').filter(|d| !d.is_empty()) {
        report_code(r, Path::new(dir));
    }
    // recall on the secrets corpus, through the same path as the pipeline:
    // parsed lines redacted as documents, malformed lines as raw text
    let exp = corpus();
    let path = repo().join("tests/fixtures/secrets/projects");
    let mut files = Vec::new();
    jsonl_files(&path, &mut files);
    let mut stored = String::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(mut v) => {
                    r.redact_value(&mut v, &mut Vec::new());
                    stored.push_str(&serde_json::to_string(&v).unwrap_or_default());
                }
                Err(_) => stored.push_str(&rs.redact_text(line).0),
            }
            stored.push('\n');
        }
    }
    let mut caught = 0;
    let all = exp["secrets"].as_array().unwrap();
    for s in all {
        let secret = s["secret"].as_str().unwrap();
        let esc = serde_json::to_string(secret).unwrap();
        let ok = !stored.contains(secret) && !stored.contains(esc.trim_matches('"'));
        caught += usize::from(ok);
        println!(
            "KIND\t{}\t{}\t{}",
            s["kind"].as_str().unwrap(),
            s["place"].as_str().unwrap(),
            if ok { "caught" } else { "MISSED" }
        );
    }
    println!("RECALL\t{caught}/{}", all.len());
}

/// Source files under `dir` (by extension, up to 512 KiB each).
fn code_files(dir: &Path, out: &mut Vec<PathBuf>) {
    const EXT: &[&str] = &[
        "rs", "py", "md", "toml", "yaml", "yml", "js", "ts", "sh", "ex", "exs", "go", "rb", "json",
    ];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && !p.is_symlink() {
            code_files(&p, out);
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| EXT.contains(&x))
            && p.metadata().is_ok_and(|m| m.len() <= 512 * 1024)
        {
            out.push(p);
        }
    }
}

fn report_code(r: &Redactor, dir: &Path) {
    let mut files = Vec::new();
    code_files(dir, &mut files);
    let (mut lines, mut per) = (0usize, BTreeMap::<String, usize>::new());
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        lines += text.lines().count();
        for (name, m) in r.explain(&text) {
            *per.entry(name.clone()).or_default() += 1;
            let short: String = m.chars().take(100).collect();
            println!("CODEHIT\t{name}\t{}\t{short:?}", f.display());
        }
    }
    println!(
        "CODETOTAL\t{}\tfiles={}\tlines={lines}\thits={}\t{per:?}",
        dir.display(),
        files.len(),
        per.values().sum::<usize>()
    );
}
