//! `claude-ingest plugin new NAME --lang python|js|rust|c` scaffolds a
//! plugin: a component of the WIT interface (Python, JavaScript, Rust) or a
//! core module of the JSON ABI (C), with a build script, sample entries and
//! their expected output; `claude-ingest plugin test DIR` runs the built plugin on
//! the samples, through the same host and limits as the engine, and checks
//! the output. Templates live in `plugins/sdk/` and are compiled in.

use crate::config::Config;
use crate::pipeline::plugin_limits;
use crate::plugins::api::{PluginCaller, PluginOutput};
use crate::plugins::host::plugin_name;
use crate::plugins::PluginHost;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum PluginCmd {
    /// Scaffold a classifier plugin in ./NAME (or --dir): WIT, build script, samples, expected output.
    New {
        /// Plugin name: letters, digits, `_` and `-` (rules call it by this name).
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create it (default ./NAME); must not exist yet.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run DIR/dist/<name>.wasm on DIR/samples.jsonl and compare with DIR/expected.json.
    Test {
        /// The plugin's directory (made by `plugin new`).
        dir: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Python,
    Js,
    Rust,
    /// The core JSON ABI with plugin.h (no component tooling needed).
    C,
}

const WIT: &str = include_str!("../../plugins/wit/plugin.wit");
const SAMPLES: &str = include_str!("../../plugins/sdk/samples.jsonl");
const EXPECTED: &str = include_str!("../../plugins/sdk/expected.json");

/// (path in the plugin dir, template text, executable) per language.
fn templates(lang: Lang) -> Vec<(&'static str, &'static str, bool)> {
    let mut files = vec![
        ("samples.jsonl", SAMPLES, false),
        ("expected.json", EXPECTED, false),
    ];
    if lang != Lang::C {
        files.push(("wit/plugin.wit", WIT, false));
    }
    files.extend(match lang {
        Lang::Python => vec![
            (
                "app.py",
                include_str!("../../plugins/sdk/python/app.py"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../plugins/sdk/python/build.sh"),
                true,
            ),
        ],
        Lang::Js => vec![
            ("app.js", include_str!("../../plugins/sdk/js/app.js"), false),
            (
                "build.sh",
                include_str!("../../plugins/sdk/js/build.sh"),
                true,
            ),
        ],
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../plugins/sdk/rust/Cargo.toml"),
                false,
            ),
            (
                "src/lib.rs",
                include_str!("../../plugins/sdk/rust/src/lib.rs"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../plugins/sdk/rust/build.sh"),
                true,
            ),
        ],
        Lang::C => vec![
            ("app.c", include_str!("../../plugins/sdk/c/app.c"), false),
            (
                "plugin.h",
                include_str!("../../plugins/examples/common/plugin.h"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../plugins/sdk/c/build.sh"),
                true,
            ),
        ],
    });
    files
}

pub fn run(cfg: &Config, cmd: &PluginCmd) -> Result<bool> {
    match cmd {
        PluginCmd::New { name, lang, dir } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
            scaffold(name, *lang, &dir)?;
            println!(
                "created {dir}: build it with {dir}/build.sh, check it with `claude-ingest plugin test {dir}`,\n\
                 then copy {dir}/dist/{name}.wasm into the plugins dir and call it from a rule (plugins/README.md)",
                dir = dir.display()
            );
            Ok(true)
        }
        PluginCmd::Test { dir } => test(cfg, dir),
    }
}

/// Write the templates for `lang` into `dir` (which must not exist).
pub fn scaffold(name: &str, lang: Lang, dir: &Path) -> Result<()> {
    plugin_name(Path::new(&format!("{name}.wasm")))?;
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    for (path, text, executable) in templates(lang) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, text.replace("{{name}}", name))
            .with_context(|| format!("cannot write {}", target.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", target.display()))?;
        }
    }
    Ok(())
}

/// Run the plugin on every sample; true when every output matches.
pub fn test(cfg: &Config, dir: &Path) -> Result<bool> {
    let dist = dir.join("dist");
    let (host, rejected) = PluginHost::load_dir(&dist, plugin_limits(cfg))?;
    if let Some(r) = rejected.first() {
        bail!("{r}");
    }
    let name = match host.names().as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "no plugin in {}: run {}/build.sh first",
            dist.display(),
            dir.display()
        ),
        many => bail!("several plugins in {}: {many:?}", dist.display()),
    };
    let samples = std::fs::read_to_string(dir.join("samples.jsonl"))
        .with_context(|| format!("cannot read {}/samples.jsonl", dir.display()))?;
    let expected: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json"))
            .with_context(|| format!("cannot read {}/expected.json", dir.display()))?,
    )
    .with_context(|| format!("{}/expected.json is not a JSON array", dir.display()))?;
    let lines: Vec<&str> = samples.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != expected.len() {
        bail!(
            "{} samples but {} expected outputs",
            lines.len(),
            expected.len()
        );
    }
    let mut passed = 0;
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let entry: Value = serde_json::from_str(line)
            .with_context(|| format!("samples.jsonl line {} is not JSON", i + 1))?;
        let input = json!({"entry": entry, "project": "sample", "labels": [], "config": null});
        let got = host.call(&name, input.to_string().as_bytes());
        match check(got.as_ref().map_err(ToString::to_string), want) {
            Ok(()) => {
                passed += 1;
                println!("ok   sample {}", i + 1);
            }
            Err(why) => println!("FAIL sample {}: {why}", i + 1),
        }
    }
    println!("{name}: {passed} of {} samples as expected", lines.len());
    Ok(passed == lines.len())
}

/// Compare the fields `want` names (labels, set, redact, rows, drop, or
/// `error`: a substring of the expected error) with the plugin's output.
fn check(got: Result<&PluginOutput, String>, want: &Value) -> Result<(), String> {
    let got = match (got, want.get("error").and_then(Value::as_str)) {
        (Err(e), Some(w)) if e.contains(w) => return Ok(()),
        (Err(e), _) => return Err(format!("plugin failed: {e}")),
        (Ok(o), Some(w)) => {
            return Err(format!(
                "expected an error containing {w:?}, got {}",
                output_json(o)
            ))
        }
        (Ok(o), None) => output_json(o),
    };
    let Some(fields) = want.as_object() else {
        return Err("an expected output must be a JSON object".into());
    };
    for (field, value) in fields {
        let actual = got.get(field).cloned().unwrap_or(Value::Null);
        if &actual != value {
            return Err(format!("{field}: expected {value}, got {actual}"));
        }
    }
    Ok(())
}

fn output_json(o: &PluginOutput) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_fills_in_the_name_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tagger");
        scaffold("tagger", Lang::Python, &dir).unwrap();
        let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
        assert!(app.contains("\"tagger:\" + entry.kind") && !app.contains("{{name}}"));
        assert!(std::fs::read_to_string(dir.join("expected.json"))
            .unwrap()
            .contains("tagger:prompt"));
        assert!(dir.join("wit/plugin.wit").is_file());
        assert!(scaffold("tagger", Lang::Js, &dir).is_err());
        assert!(scaffold("bad name", Lang::Js, &tmp.path().join("x")).is_err());
    }

    #[test]
    fn check_compares_only_the_fields_named() {
        let out = PluginOutput {
            labels: vec!["a".into()],
            ..PluginOutput::default()
        };
        assert!(check(Ok(&out), &json!({"labels": ["a"]})).is_ok());
        let err = check(Ok(&out), &json!({"labels": ["b"]})).unwrap_err();
        assert!(
            err.contains("labels: expected [\"b\"], got [\"a\"]"),
            "{err}"
        );
        assert!(check(Err("boom here".into()), &json!({"error": "boom"})).is_ok());
        assert!(check(Err("boom".into()), &json!({"labels": []})).is_err());
    }
}
