//! `claude-ingest setup`: what an installed binary needs besides itself, made
//! idempotently and reported line by line:
//! 1. the embedded engine: a virtualenv with PyPI `chdb-core` pinned
//!    (`scripts/run.sh` and `scripts/test.sh` run this too);
//! 2. the example plugins carried in the binary, written to the installed
//!    plugins dir (the default plugins dir outside a checkout);
//! 3. a check that the engine starts and answers, on a scratch data dir (the
//!    HTTP front it runs is compiled into the binary and written out per start).

use crate::builtin;
use crate::config::Config;
use crate::sink::clickhouse::ChClient;
use crate::sink::embedded::{default_python, EmbeddedClickHouse, Role};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The engine version the tests and the README's figures were made with.
pub const CHDB_CORE_VERSION: &str = "26.9.0";

pub async fn run(cfg: &Config) -> Result<()> {
    let python = cfg.clickhouse.python.clone().unwrap_or_else(default_python);
    let version = std::env::var("CHDB_CORE_VERSION").unwrap_or_else(|_| CHDB_CORE_VERSION.into());
    let python = tokio::task::spawn_blocking(move || install_engine(&python, &version))
        .await
        .context("engine set-up panicked")??;
    let plugins = builtin::installed_plugins_dir();
    let written = install_plugins(&plugins)?;
    println!(
        "plugins: {} example file(s) in {} ({} updated)",
        builtin::plugins().len(),
        plugins.display(),
        written
    );
    check_engine(&python).await?;
    println!(
        "rules: the built-in pack; add or override files in {} (see `claude-ingest check-rules`)",
        builtin::user_rules_dir().display()
    );
    println!(
        "next: `claude-ingest ingest`, or `claude-ingest service install` to run it as a service"
    );
    Ok(())
}

/// Make sure `python` is a venv interpreter with chdb-core `version`; returns it.
fn install_engine(python: &Path, version: &str) -> Result<PathBuf> {
    if installed_version(python).as_deref() == Some(version) {
        println!(
            "engine: chdb-core {version} already installed ({})",
            python.display()
        );
        return Ok(python.to_path_buf());
    }
    // bin/python -> the venv is two levels up.
    let venv = python
        .parent()
        .and_then(Path::parent)
        .context("the engine's interpreter path has no venv directory")?;
    if !python.exists() {
        if let Some(parent) = venv.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        make_venv(venv)?;
    }
    println!(
        "engine: installing chdb-core {version} into {} (a download of about 150 MB)",
        venv.display()
    );
    step(
        Command::new(python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            format!("chdb-core=={version}").as_str(),
        ]),
        "pip install chdb-core",
    )?;
    match installed_version(python) {
        Some(v) if v == version => {
            println!("engine: chdb-core {v} installed");
            Ok(python.to_path_buf())
        }
        other => bail!("after pip install, chdb-core reports {other:?}, not {version}"),
    }
}

/// `python3 -m venv`; on Debian/Ubuntu as root, installs the missing
/// `python3-venv` package first if that is what failed (a fresh CI machine).
fn make_venv(venv: &Path) -> Result<()> {
    let what = "python3 -m venv (needs python3 with the venv module: apt-get install python3-venv)";
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(venv);
    if step(&mut cmd, what).is_ok() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || Command::new("apt-get").arg("--version").output().is_err() {
        bail!("{what} failed");
    }
    println!("engine: python3 -m venv failed; installing python3-venv with apt-get");
    step(
        Command::new("sh").args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv",
        ]),
        "apt-get install python3-venv",
    )?;
    step(&mut cmd, what)
}

/// chdb's version as the interpreter sees it; None when absent or broken.
fn installed_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import chdb; print(chdb.__version__)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn step(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Write the embedded example plugins into `dir` (only files whose content
/// differs, each through a rename, so a running engine's watcher never sees
/// half a module); returns how many were written. Other files are left alone.
pub fn install_plugins(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    for (name, bytes) in builtin::plugins() {
        let target = dir.join(name);
        if std::fs::read(&target).is_ok_and(|old| old == *bytes) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        written += 1;
    }
    Ok(written)
}

/// Start the engine on a scratch data dir and ask it its version: proves the
/// venv, the front and the loopback port work before a service relies on them.
async fn check_engine(python: &Path) -> Result<()> {
    let scratch = builtin::data_home().join("setup-check");
    let _ = std::fs::remove_dir_all(&scratch);
    let (py, dir) = (python.to_path_buf(), scratch.clone());
    let engine = tokio::task::spawn_blocking(move || EmbeddedClickHouse::start(Some(&py), &dir))
        .await
        .context("engine start panicked")??;
    let client = ChClient::new(engine.settings(Role::Reader, "system"))?;
    client.wait_ready(Duration::from_secs(60)).await?;
    let rows = client.query_json("SELECT version() AS v", &[]).await?;
    let version = rows
        .first()
        .and_then(|r| r.get("v"))
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    // Stopping joins the supervisor thread: not on the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(engine)).await;
    let _ = std::fs::remove_dir_all(&scratch);
    println!("engine: ClickHouse {version} starts and answers (checked on a scratch data dir)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plugins_are_written_once_and_refreshed_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let n = super::install_plugins(dir.path()).unwrap();
        assert_eq!(n, crate::builtin::plugins().len());
        assert_eq!(super::install_plugins(dir.path()).unwrap(), 0);
        std::fs::write(dir.path().join("email_mask.wat"), "changed").unwrap();
        std::fs::write(dir.path().join("mine.wat"), "(module)").unwrap();
        assert_eq!(super::install_plugins(dir.path()).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mine.wat")).unwrap(),
            "(module)"
        );
    }
}
