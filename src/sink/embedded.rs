//! The embedded default: a current ClickHouse engine (PyPI `chdb-core`) run
//! in a child process behind a loopback HTTP front (`scripts/chdb_http.py`),
//! so the engine talks to it exactly as to a real server.
//!
//! Why a child process: chdb-core's wheel does not export its C API for other
//! callers and has its own network listeners compiled out; Python can load it.
//! The child's stdin is a pipe we hold: when we die (even `kill -9`) it sees EOF
//! and exits, so no orphan keeps the data directory locked.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The HTTP front, compiled in so the binary works from any directory.
const FRONT_SCRIPT: &str = include_str!("../../scripts/chdb_http.py");

pub struct EmbeddedClickHouse {
    child: Child,
    _stdin: ChildStdin,
    _lock: File,
    url: String,
    data_dir: PathBuf,
}

/// The interpreter of the venv made by `scripts/setup-clickhouse.sh`.
pub fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("CLAUDE_INGEST_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("CLAUDE_INGEST_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dirs::home_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".local/share/claude-ingest")
        });
    home.join("chdb-venv/bin/python")
}

impl EmbeddedClickHouse {
    /// Start the engine on `data_dir` (created if needed) on a free loopback
    /// port and wait until it serves.
    pub fn start(python: Option<&Path>, data_dir: &Path) -> Result<EmbeddedClickHouse> {
        Self::start_on_port(python, data_dir, 0)
    }

    /// Same, on a given port (0 = any free one).
    pub fn start_on_port(
        python: Option<&Path>,
        data_dir: &Path,
        port: u16,
    ) -> Result<EmbeddedClickHouse> {
        let python = python.map(Path::to_path_buf).unwrap_or_else(default_python);
        if !python.exists() {
            bail!(
                "the embedded ClickHouse engine is not installed ({} is missing): run \
                 `scripts/setup-clickhouse.sh`, or point --clickhouse-url at a ClickHouse server",
                python.display()
            );
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let lock = lock_data_dir(data_dir)?;
        let script = data_dir.join(".chdb_http.py");
        std::fs::write(&script, FRONT_SCRIPT)
            .with_context(|| format!("cannot write {}", script.display()))?;
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--path")
            .arg(data_dir.join("data"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--exit-on-stdin-eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", python.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;

        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("chdb-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            })?;
        let (etx, erx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("chdb-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    tracing::debug!(target: "chdb", "{line}");
                    let _ = etx.send(line);
                }
            })?;

        let port = loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("READY ") {
                        break p.trim().parse::<u16>().context("bad READY line")?;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let tail: Vec<String> = erx.try_iter().collect();
                    let tail = tail[tail.len().saturating_sub(15)..].join("\n");
                    bail!(
                        "the embedded ClickHouse engine did not start (data dir {}):\n{}",
                        data_dir.display(),
                        tail
                    );
                }
            }
        };
        let url = format!("http://127.0.0.1:{port}");
        tracing::info!(%url, data_dir = %data_dir.display(), "embedded ClickHouse (chDB) started");
        Ok(EmbeddedClickHouse {
            child,
            _stdin: stdin,
            _lock: lock,
            url,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for EmbeddedClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One engine per data directory: chDB must not open the same files twice.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let mut f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another claude-ingest process is using the embedded ClickHouse data in {} \
             (stop it, or use its dashboard: `ingest` serves the API too)",
            dir.display()
        );
    }
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}
